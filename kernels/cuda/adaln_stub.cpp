// CPU-only builds link this instead of adaln.cu: every entry of adaln.h fails clearly.
#include <stdexcept>
#include <string>

#include "kernels/cuda/adaln.h"

namespace loom::kernels::cuda {

namespace {
[[noreturn]] void no_cuda(const char* what) {
  throw std::runtime_error(std::string("[cuda] ") + what +
                           ": this loom was built without CUDA (configure with -DLOOM_CUDA=ON on a "
                           "machine with the CUDA toolkit)");
}
}  // namespace

void layer_norm_modulate_forward(const void*, const void*, const void*, void*, void*, void*, DType,
                                 DType, int64_t, int64_t, int64_t, double) {
  no_cuda("layer_norm_modulate_forward");
}
void layer_norm_modulate_backward(const void*, const void*, const void*, const void*, const void*,
                                  void*, void*, void*, DType, DType, int64_t, int64_t, int64_t) {
  no_cuda("layer_norm_modulate_backward");
}
void gated_residual_forward(const void*, const void*, const void*, void*, DType, DType, int64_t,
                            int64_t, int64_t) {
  no_cuda("gated_residual_forward");
}
void gated_residual_backward(const void*, const void*, const void*, void*, void*, DType, DType,
                             int64_t, int64_t, int64_t) {
  no_cuda("gated_residual_backward");
}

}  // namespace loom::kernels::cuda
