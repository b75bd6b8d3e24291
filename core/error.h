#pragma once
// Errors. Two tiers (DESIGN.md "Errors"):
//  - loom::Error is thrown for misuse: bad shapes, dtypes, files, recipes. Its message starts with
//    the op or file name in brackets, e.g. "[matmul] shapes [2, 3] and [4, 5] ...". The CLI prints
//    it and exits with status 2.
//  - LOOM_ASSERT guards internal invariants and aborts: a failure is a bug in loom, not in the
//  input.
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <stdexcept>
#include <string>

namespace loom {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {
template <class... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
[[noreturn]] void assert_fail(const char* expr, const char* file, int line, const std::string& msg);
}  // namespace detail

}  // namespace loom

// LOOM_CHECK(cond, "[op] message ", value, ...) throws loom::Error with the streamed message.
#define LOOM_CHECK(cond, ...)                                           \
  do {                                                                  \
    if (!(cond)) throw ::loom::Error(::loom::detail::cat(__VA_ARGS__)); \
  } while (0)

#define LOOM_FAIL(...) throw ::loom::Error(::loom::detail::cat(__VA_ARGS__))

#define LOOM_ASSERT(cond, ...)                                             \
  do {                                                                     \
    if (!(cond))                                                           \
      ::loom::detail::assert_fail(#cond, __FILE__, __LINE__,               \
                                  ::loom::detail::cat("", ##__VA_ARGS__)); \
  } while (0)
