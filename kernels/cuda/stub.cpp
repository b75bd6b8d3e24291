// CPU-only builds link this instead of runtime.cpp: every device entry point fails clearly.
#include <stdexcept>

#include "kernels/cuda/runtime.h"

namespace loom::kernels::cuda {

namespace {
[[noreturn]] void no_cuda(const char* what) {
  throw std::runtime_error(std::string("[cuda] ") + what +
                           ": this loom was built without CUDA (configure with -DLOOM_CUDA=ON on a "
                           "machine with the CUDA toolkit)");
}
}  // namespace

bool built_with_cuda() {
  return false;
}
int device_count() {
  return 0;
}
void* device_malloc(size_t, int) {
  no_cuda("device_malloc");
}
void device_free(void*, int) {}
void memcpy_any(void*, bool, const void*, bool, size_t) {
  no_cuda("memcpy");
}

}  // namespace loom::kernels::cuda
