// turboquant — strict parsing of numeric command-line values (issue 17).
//
// CLI11's own conversion accepted values that the commands then reinterpreted silently
// (`--chunks -5` meant "all", `-c -50` the default, `-n 2147483647` overflowed later, `--temp nan`
// ran). Every numeric flag of the tool goes through these instead: the whole text must be one
// number inside the flag's stated range, else a tq::Error with a one-line message naming the
// flag, the range and the text.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace tq {

// A decimal integer (optional sign, digits only, nothing else) in [lo, hi].
int64_t parse_int_flag(std::string_view flag, std::string_view text, int64_t lo, int64_t hi);
// A finite decimal or scientific floating-point number in [lo, hi]; NaN and Inf are refused.
double parse_float_flag(std::string_view flag, std::string_view text, double lo, double hi);

// The largest thread count a flag accepts: 4 × the hardware threads (more only oversubscribes
// the cores: -t 1000 ran 10x slower).
int max_thread_flag();

}  // namespace tq
