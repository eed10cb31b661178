// Fuzz target: the tool's numeric option parsing (core/numeric_flag.h). Bytes 0-1 pick the
// range, the rest is the option's text. A value that parses must lie in the range and be the
// number the text spells (checked against strtoll / strtod); anything else must be a tq::Error.
// Seeds: fuzz/corpus/fuzz_numeric_flag.
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "core/numeric_flag.h"
#include "tq/error.h"

namespace {

// The text is [+-]?[0-9]+ (what an integer flag accepts).
bool is_integer_text(const std::string& s) {
  size_t i = (!s.empty() && (s[0] == '+' || s[0] == '-')) ? 1 : 0;
  if (i == s.size()) return false;
  for (; i < s.size(); ++i)
    if (s[i] < '0' || s[i] > '9') return false;
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  static const int64_t kLo[] = {0, -1, 1, 4, INT32_MIN, INT64_MIN, 2, 16};
  static const int64_t kHi[] = {1 << 24, INT32_MAX, 8, 65536, INT32_MAX, INT64_MAX, 1, 1 << 20};
  const int64_t lo = kLo[data[0] & 7], hi = kHi[data[1] & 7];
  const std::string text(reinterpret_cast<const char*>(data + 2), size - 2);

  bool ok = true;
  int64_t v = 0;
  try {
    v = tq::parse_int_flag("--flag", text, lo, hi);
  } catch (const tq::Error&) {
    ok = false;
  }
  if (ok) {
    if (v < lo || v > hi || !is_integer_text(text)) std::abort();
    errno = 0;
    char* end = nullptr;
    const long long ref = std::strtoll(text.c_str(), &end, 10);
    if (errno != 0 || ref != v) std::abort();
  } else if (is_integer_text(text) && text.size() < 18) {
    // A short well-formed integer fails only by range.
    const long long ref = std::strtoll(text.c_str(), nullptr, 10);
    if (ref >= lo && ref <= hi) std::abort();
  }

  const double flo = double(lo) / 8, fhi = double(hi) / 8;
  ok = true;
  double d = 0;
  try {
    d = tq::parse_float_flag("--temp", text, flo, fhi);
  } catch (const tq::Error&) {
    ok = false;
  }
  if (ok) {
    if (!std::isfinite(d) || d < flo || d > fhi) std::abort();
    const double ref = std::strtod(text.c_str(), nullptr);
    if (ref != d) std::abort();
  }
  return 0;
}
