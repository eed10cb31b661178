// turboquant — error type shared by the library and the tool.
#pragma once
#include <stdexcept>
#include <string>

namespace tq {

// A user-facing error (bad input, unknown type, corrupt file). The tool prints what() on one
// line and exits non-zero. Internal invariants use TQ_ASSERT instead.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

[[noreturn]] void assert_fail(const char* expr, const char* file, int line);

}  // namespace tq

// Always-on invariant check (also in Release builds).
#define TQ_ASSERT(cond) ((cond) ? (void)0 : ::tq::assert_fail(#cond, __FILE__, __LINE__))
