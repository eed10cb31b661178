#include "model/unicode.h"

#include <algorithm>

namespace tq::unicode {

namespace {

bool in_ranges(const CodepointRange* r, size_t n, uint32_t cp) {
  // Binary search for the last range starting at or before cp.
  const CodepointRange* end = r + n;
  const CodepointRange* it =
      std::upper_bound(r, end, cp, [](uint32_t v, const CodepointRange& x) { return v < x.first; });
  if (it == r) return false;
  --it;
  return cp <= it->last;
}

}  // namespace

bool is_letter(uint32_t cp) {
  if (cp < 0x80) return (cp | 0x20) >= 'a' && (cp | 0x20) <= 'z';
  return in_ranges(kLetters, kLetters_count, cp);
}

bool is_number(uint32_t cp) {
  if (cp < 0x80) return cp >= '0' && cp <= '9';
  return in_ranges(kNumbers, kNumbers_count, cp);
}

bool is_mark(uint32_t cp) { return cp >= 0x300 && in_ranges(kMarks, kMarks_count, cp); }

bool is_whitespace(uint32_t cp) {
  // The White_Space property (PropList.txt); the same set for every Unicode version since 6.3.
  switch (cp) {
    case 0x09: case 0x0A: case 0x0B: case 0x0C: case 0x0D: case 0x20: case 0x85: case 0xA0:
    case 0x1680: case 0x2028: case 0x2029: case 0x202F: case 0x205F: case 0x3000:
      return true;
    default:
      return cp >= 0x2000 && cp <= 0x200A;
  }
}

size_t utf8_len(unsigned char c) {
  if (c < 0x80) return 1;
  if ((c & 0xE0) == 0xC0) return 2;
  if ((c & 0xF0) == 0xE0) return 3;
  if ((c & 0xF8) == 0xF0) return 4;
  return 1;
}

std::vector<Unit> decode_utf8(std::string_view s) {
  std::vector<Unit> out;
  out.reserve(s.size());
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = p[i];
    uint32_t cp = 0xFFFD;
    size_t len = 1;
    if (c < 0x80) {
      cp = c;
    } else {
      const size_t want = utf8_len(c);
      if (want > 1 && i + want <= n) {
        uint32_t v = c & (0x7F >> want);
        bool ok = true;
        for (size_t k = 1; k < want; ++k) {
          if ((p[i + k] & 0xC0) != 0x80) {
            ok = false;
            break;
          }
          v = (v << 6) | (p[i + k] & 0x3F);
        }
        // Reject overlong forms, surrogates and values past U+10FFFF.
        static const uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (ok && v >= kMin[want] && v <= 0x10FFFF && !(v >= 0xD800 && v <= 0xDFFF)) {
          cp = v;
          len = want;
        }
      }
    }
    out.push_back({cp, uint32_t(i), uint32_t(len)});
    i += len;
  }
  return out;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

}  // namespace tq::unicode
