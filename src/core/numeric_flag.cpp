#include "core/numeric_flag.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <thread>
#include <type_traits>

#include "tq/error.h"

namespace tq {
namespace {

// The text as it appears in a message: at most 40 bytes, control bytes escaped,
// so that a hostile argument cannot break the one-line error.
std::string shown(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size() && i < 40; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c >= 0x7F) {
      char b[8];
      std::snprintf(b, sizeof b, "\\x%02X", c);
      out += b;
    } else {
      out += char(c);
    }
  }
  if (s.size() > 40)
    out += "...";
  return out;
}

std::string num(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%g", v);
  return b;
}

} // namespace

// The text without one leading '+' (which from_chars does not take); false if
// what is left cannot start a number ("", "+-5", "++5").
bool strip_plus(std::string_view &t) {
  if (!t.empty() && t[0] == '+') {
    t.remove_prefix(1);
    if (t.empty() || t[0] == '-' || t[0] == '+')
      return false;
  }
  return !t.empty();
}

namespace {

// The one parse of both flag kinds: the whole text must be one number of T (an
// optional '+' first) inside [lo, hi]; otherwise a one-line error naming the
// flag, the text and the range.
template <class T>
T parse_number_flag(std::string_view flag, std::string_view text, T lo, T hi,
                    const char *what, const std::string &range) {
  std::string_view t = text;
  T v = 0;
  std::errc ec = std::errc::invalid_argument;
  const char *end = nullptr;
  if (strip_plus(t)) {
    const auto r = std::from_chars(t.data(), t.data() + t.size(), v);
    ec = r.ec;
    end = r.ptr;
  }
  if (end != t.data() + t.size() ||
      (ec != std::errc() && ec != std::errc::result_out_of_range))
    throw Error(std::string(flag) + ": expected " + what + " in " + range +
                ", got '" + shown(text) + "'");
  bool finite = true;
  if constexpr (std::is_floating_point_v<T>)
    finite = std::isfinite(v);
  if (ec == std::errc::result_out_of_range || !finite || v < lo || v > hi)
    throw Error(std::string(flag) + " " + shown(text) + " is out of range " +
                range);
  return v;
}

// "[a, b]", built by appends: GCC 12 reports a false -Wrestrict for `"[" + std::string`.
std::string bracket(const std::string &a, const std::string &b) {
  std::string r = "[";
  r += a;
  r += ", ";
  r += b;
  r += "]";
  return r;
}

} // namespace

int64_t parse_int_flag(std::string_view flag, std::string_view text, int64_t lo,
                       int64_t hi) {
  return parse_number_flag<int64_t>(flag, text, lo, hi, "an integer",
                                    bracket(std::to_string(lo), std::to_string(hi)));
}

double parse_float_flag(std::string_view flag, std::string_view text, double lo,
                        double hi) {
  return parse_number_flag<double>(flag, text, lo, hi, "a number",
                                   bracket(num(lo), num(hi)));
}

int max_thread_flag() {
  const unsigned hw = std::thread::hardware_concurrency();
  return 4 * int(hw > 0 ? hw : 1);
}

} // namespace tq
