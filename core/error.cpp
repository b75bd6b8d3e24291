#include "core/error.h"

namespace loom::detail {

void assert_fail(const char* expr, const char* file, int line, const std::string& msg) {
  std::fprintf(stderr, "loom internal error: %s:%d: assertion `%s` failed %s\n", file, line, expr,
               msg.c_str());
  std::abort();
}

}  // namespace loom::detail
