// The little Unicode the tokenizers need: UTF-8 decoding and the character classes of the
// pre-tokenizer regexes (\p{L}, \p{N}, \s).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tq::unicode {

struct CodepointRange {
  uint32_t first, last;
};
extern const CodepointRange kLetters[];
extern const size_t kLetters_count;
extern const CodepointRange kNumbers[];
extern const size_t kNumbers_count;
extern const CodepointRange kMarks[];
extern const size_t kMarks_count;

bool is_letter(uint32_t cp);      // \p{L}
bool is_number(uint32_t cp);      // \p{N}
bool is_mark(uint32_t cp);        // \p{M}
bool is_whitespace(uint32_t cp);  // \s: the Unicode White_Space property

// One decoded code point and the bytes it came from. An invalid or truncated UTF-8 sequence
// yields U+FFFD for each bad byte (len 1), so every input byte belongs to exactly one unit.
struct Unit {
  uint32_t cp;
  uint32_t pos;  // byte offset in the text
  uint32_t len;  // bytes
};
std::vector<Unit> decode_utf8(std::string_view s);

void append_utf8(std::string& out, uint32_t cp);
// Length of the UTF-8 sequence that starts with byte c (1 for an invalid lead byte).
size_t utf8_len(unsigned char c);

}  // namespace tq::unicode
