// CPU-only builds link this instead of runtime.cpp and the .cu files: every device entry point
// (runtime.h, kernels.h, attention.h, adaln.h, moe.h) fails clearly.
#include <stdexcept>
#include <string>

#include "kernels/cuda/adaln.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/kernels.h"
#include "kernels/cuda/moe.h"
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
MemoryStats memory_stats(int) {
  no_cuda("memory_stats");
}
void reset_peak_memory(int) {
  no_cuda("reset_peak_memory");
}
void empty_cache(int) {}
void synchronize(int) {
  no_cuda("synchronize");
}

// -- kernels.h: elementwise, reductions, gemm --
template <class F>
void unary(const void*, void*, DType, int64_t) {
  no_cuda("unary");
}
template <class F>
void binary(const IterShape&, const Operand&, const Operand&, const Operand&) {
  no_cuda("binary");
}
#define LOOM_STUB_UNARY(F) template void unary<fn::F>(const void*, void*, DType, int64_t);
LOOM_UNARY_FNS(LOOM_STUB_UNARY)
#define LOOM_STUB_BINARY(F) \
  template void binary<fn::F>(const IterShape&, const Operand&, const Operand&, const Operand&);
LOOM_BINARY_FNS(LOOM_STUB_BINARY)
void where(const IterShape&, const Operand&, const Operand&, const Operand&, const Operand&) {
  no_cuda("where");
}
void clamp(const void*, void*, DType, int64_t, double, double) {
  no_cuda("clamp");
}
void copy(const IterShape&, const Operand&, const Operand&) {
  no_cuda("copy");
}
void fill(void*, DType, int64_t, double) {
  no_cuda("fill");
}
void reduce_rows(const void*, void*, DType, int64_t, int64_t, RowReduce) {
  no_cuda("reduce_rows");
}
void norm_backward_input(const void*, const void*, const void*, const void*, const void*, void*,
                         DType, int64_t, int64_t) {
  no_cuda("norm_backward_input");
}
void reduce_cols(const void*, void*, DType, int64_t, int64_t, int64_t, RowReduce) {
  no_cuda("reduce_cols");
}
void arg_reduce_rows(const void*, int64_t*, DType, int64_t, int64_t, bool) {
  no_cuda("arg_reduce_rows");
}
void gemm(const Gemm&, const void*, const void*, void*, DType, bool) {
  no_cuda("gemm");
}
void gelu_tanh_grad_col_sums(const void*, const void*, void*, void*, DType, int64_t, int64_t) {
  no_cuda("gelu_tanh_grad_col_sums");
}

void philox_fill(float*, int64_t, uint64_t, uint64_t, uint64_t, Distribution) {
  no_cuda("philox_fill");
}
void adamw_step(float*, const float*, float*, float*, int64_t, const AdamWStep&) {
  no_cuda("adamw_step");
}

// -- kernels.h: nn, index, conv --
void softmax_rows(const void*, void*, DType, int64_t, int64_t, bool) {
  no_cuda("softmax_rows");
}
void layer_norm_forward(const void*, const void*, const void*, void*, void*, void*, DType, int64_t,
                        int64_t, double) {
  no_cuda("layer_norm_forward");
}
void rms_norm_forward(const void*, const void*, void*, void*, DType, int64_t, int64_t, double) {
  no_cuda("rms_norm_forward");
}
void index_select(const void*, void*, DType, const void*, DType, int64_t, int64_t, int64_t,
                  int64_t) {
  no_cuda("index_select");
}
void index_add(void*, const void*, DType, const void*, DType, int64_t, int64_t, int64_t, int64_t) {
  no_cuda("index_add");
}
void gather(const IterShape&, int, int64_t, const Operand&, const Operand&, const Operand&) {
  no_cuda("gather");
}
void scatter_add(const IterShape&, int, int64_t, const Operand&, const Operand&, const Operand&) {
  no_cuda("scatter_add");
}
void topk_rows(const void*, void*, int64_t*, DType, int64_t, int64_t, int64_t, bool) {
  no_cuda("topk_rows");
}
void vol2col(const ConvGeometry&, int64_t, const void*, void*, DType) {
  no_cuda("vol2col");
}
void col2vol(const ConvGeometry&, int64_t, const void*, void*, DType) {
  no_cuda("col2vol");
}

// -- attention.h: flash attention --
void flash_attention_forward(const AttentionArgs&, const void*, const void*, const void*, void*,
                             float*, DType) {
  no_cuda("flash_attention_forward");
}
size_t flash_attention_backward_workspace_bytes(const AttentionArgs&) {
  no_cuda("flash_attention_backward_workspace_bytes");
}
void flash_attention_backward(const AttentionArgs&, const void*, const void*, const void*,
                              const void*, const void*, const float*, void*, void*, void*, DType,
                              float*) {
  no_cuda("flash_attention_backward");
}

// -- adaln.h --
void layer_norm_modulate_forward(const void*, const void*, const void*, void*, void*, void*, DType,
                                 DType, int64_t, int64_t, int64_t, double) {
  no_cuda("layer_norm_modulate_forward");
}
void layer_norm_modulate_backward(const void*, const void*, const void*, const void*, const void*,
                                  const void*, void*, void*, void*, DType, DType, int64_t, int64_t,
                                  int64_t) {
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

// -- moe.h --
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
void combine_rows_forward(const ExpertRows&, const void*, const void*, const void*, void*, DType,
                          DType) {
  no_cuda("combine_rows_forward");
}
void combine_rows_backward(const ExpertRows&, const void*, const void*, const void*, void*, void*,
                           DType, DType) {
  no_cuda("combine_rows_backward");
}
void gather_slot_sum(const ExpertRows&, const void*, void*, DType) {
  no_cuda("gather_slot_sum");
}

}  // namespace loom::kernels::cuda
