#pragma once
// The CUDA kernels of the MoE layer as core/ops/moe_ops.cpp calls them: the grouped GEMM of the
// stacked experts (grouped_gemm.cu), the fused SwiGLU gate and the stable counting sort of the
// routing assignments by expert (moe.cu). Like kernels.h: host functions that enqueue work on the
// current device's compute stream and return without waiting; device pointers to element 0; sizes
// in elements; launch errors throw std::runtime_error "[cuda] <kernel>: ...". Plain C++, so core
// includes it; CPU-only builds link stub.cpp, where every entry throws.
//
// The SwiGLU scalar functions below are shared with the CPU twin in core/ops/moe_ops.cpp, so both
// devices evaluate one definition (f32 compute for 16-bit operands, as everywhere in kernels/).
#include <cstdint>

#include "kernels/dtype.h"
#include "kernels/scalar_fns.h"

namespace loom::kernels::fn {

// silu(a) * b, the gate of a SwiGLU feed-forward.
struct SwiGlu {
  template <class T>
  LOOM_HD static T f(T a, T b) {
    return Silu::f(a) * b;
  }
};
// The gradients of SwiGlu for the output gradient g: da = g b silu'(a), db = g silu(a). The
// operations are those of the composite silu(a) * b's backward, so the CPU results are bitwise
// those of the unfused ops.
struct SwiGluGrad {
  template <class T>
  LOOM_HD static void f(T a, T b, T g, T& da, T& db) {
    da = SiluGrad::f(a, g * b);
    db = g * Silu::f(a);
  }
};

}  // namespace loom::kernels::fn

namespace loom::kernels::cuda {

// -- grouped GEMM (grouped_gemm.cu) ------------------------------------------------------------
// One problem of a grouped GEMM, row-major as kernels.h's Gemm: C [m, n] = op(A) [m, k] op(B)
// [k, n] with C contiguous. k == 0 writes zeros; m == 0 or n == 0 does nothing.
struct GemmProblem {
  int64_t m = 0, n = 0, k = 0;
  const void* a = nullptr;
  const void* b = nullptr;
  void* c = nullptr;
};
// What the problems of one call share: the transposes and the leading dimensions of A and B (A is
// stored [m, k], or [k, m] when trans_a, with rows lda apart; likewise B).
struct GroupedGemm {
  bool trans_a = false, trans_b = false;
  int64_t lda = 0, ldb = 0;
};
// Runs `count` problems as one cuBLASLt GEMM each (kernels.h gemm). With LOOM_GROUPED_GEMM=grouped
// in the environment: one cublasGemmGroupedBatchedEx call instead (f32, bf16, f16; f32
// accumulation, TF32 when allow_tf32 for f32) after one small launch that writes its device
// pointer tables (calls of more than 128 problems are split), except for f64 and operands whose
// pointers or row strides are not 16-byte aligned. The loop is the default because it was
// faster on the H200 (2026-11-29, CUDA 13: DiT-MoE-S/2 1178 against 1090 img/s, DiT-MoE-B/2 847
// against 669; the grouped call's weight-gradient products ran at about 45 TFLOP/s,
// docs/PERFORMANCE.md). C is overwritten.
void grouped_gemm(const GroupedGemm& g, const GemmProblem* problems, int64_t count, DType dtype,
                  bool allow_tf32);

// -- SwiGLU (moe.cu) ---------------------------------------------------------------------------
// y = silu(a) * b over n contiguous elements of one floating dtype.
void swiglu_forward(const void* a, const void* b, void* y, DType dtype, int64_t n);
// da, db from a, b and dy (fn::SwiGluGrad), n contiguous elements, one dtype; both overwritten.
void swiglu_backward(const void* a, const void* b, const void* dy, void* da, void* db, DType dtype,
                     int64_t n);

// -- expert sort (moe.cu) ----------------------------------------------------------------------
// The stable counting sort of n_assign routing assignments by expert (the CPU twin is
// sort_by_expert in core/ops/moe_ops.cpp): assignment p = token * top_k + slot has expert ids[p].
// Within an expert, assignments keep increasing p; with capacity > 0 only the first `capacity` of
// each expert are kept. Kept assignment p at sorted position q gets order[q] = p,
// token[q] = p / top_k and position[p] = q; a dropped one position[p] = -1. Positions follow
// expert id (expert e's after e - 1's).
struct ExpertSort {
  const void* ids = nullptr;  // [n_assign], i32 or i64
  DType ids_dtype = DType::i64;
  int64_t n_assign = 0, top_k = 1, n_experts = 1, capacity = 0;  // n_experts <= kMaxSortExperts
  int64_t* order = nullptr;     // [n_assign]: the first sum(kept) entries written
  int64_t* token = nullptr;     // [n_assign]: likewise
  int64_t* position = nullptr;  // [n_assign]: every entry of a valid id written
  // [n_experts + 1]: assignments per expert before the capacity cut, then the first assignment
  // whose id lies outside [0, n_experts) (n_assign when none; such assignments are skipped).
  int64_t* routed = nullptr;
};
constexpr int64_t kMaxSortExperts = 2048;
// Three launches (per-chunk histograms, their scan, the stable scatter); does not synchronize.
void expert_sort(const ExpertSort& s);

// -- dispatch and combine of expert-sorted rows (expert_rows.cu) -------------------------------
// The twins of core/ops/expert_rows.cpp's CPU loops. Rows of `width` contiguous elements; sorted
// row r came from token token[r]; slot j of token t sits at row position[t * top_k + j], or
// nowhere when that is negative (dropped). Sums run in slot order in the compute type (f32 for
// 16-bit, f64 for f64): deterministic, no atomics. `acc` is the dtype of base, out, weight and the
// output gradient (f32, f64, bf16, f16); `rows` that of the expert rows, either acc or, with acc
// f32, bf16 or f16.
struct ExpertRows {
  const int64_t* token = nullptr;     // [n_rows]
  const int64_t* position = nullptr;  // [n_tokens * top_k]
  int64_t n_tokens = 0, top_k = 1, n_rows = 0, width = 0;
};
// out[t] = base[t] + sum over kept slots (row r) of weight[r] * y[r].
void combine_rows_forward(const ExpertRows& r, const void* base, const void* y, const void* weight,
                          void* out, DType acc, DType rows);
// dy[r] = weight[r] * g[token[r]] (in `rows`), dweight[r] = sum_c g[token[r], c] * y[r, c].
void combine_rows_backward(const ExpertRows& r, const void* g, const void* y, const void* weight,
                           void* dy, void* dweight, DType acc, DType rows);
// dx[t] = sum over kept slots (row r) of drows[r], zeros for a token without one; one dtype.
void gather_slot_sum(const ExpertRows& r, const void* drows, void* dx, DType dtype);

}  // namespace loom::kernels::cuda
