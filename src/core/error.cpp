#include <cstdio>
#include <cstdlib>

#include "tq/error.h"

namespace tq {

void assert_fail(const char* expr, const char* file, int line) {
  std::fprintf(stderr, "tq: internal error: assertion '%s' failed at %s:%d\n", expr, file, line);
  std::abort();
}

}  // namespace tq
