// CPU-only builds link this instead of moe.cu and grouped_gemm.cu: every entry of moe.h fails
// clearly (core only calls them for CUDA tensors, which such a build cannot make).
#include <stdexcept>
#include <string>

#include "kernels/cuda/moe.h"

namespace loom::kernels::cuda {

namespace {
[[noreturn]] void no_cuda(const char* what) {
  throw std::runtime_error(std::string("[cuda] ") + what +
                           ": this loom was built without CUDA (configure with -DLOOM_CUDA=ON on a "
                           "machine with the CUDA toolkit)");
}
}  // namespace

void grouped_gemm(const GroupedGemm&, const GemmProblem*, int64_t, DType, bool) {
  no_cuda("grouped_gemm");
}
void swiglu_forward(const void*, const void*, void*, DType, int64_t) {
  no_cuda("swiglu_forward");
}
void swiglu_backward(const void*, const void*, const void*, void*, void*, DType, int64_t) {
  no_cuda("swiglu_backward");
}
void expert_sort(const ExpertSort&) {
  no_cuda("expert_sort");
}

}  // namespace loom::kernels::cuda
