#pragma once
// The ops of a mixture-of-experts layer: the stable sort of routing assignments by expert, the
// grouped linear map of expert-sorted rows through stacked expert weights, and the fused SwiGLU
// gate. Each runs on the CPU and on CUDA (kernels/cuda/moe.h); each has a composite reference
// (noted per op) that the tests hold it to. Misuse throws loom::Error prefixed with the op name.
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace loom {

// -- expert sort --------------------------------------------------------------------------------
// The kept assignments of one routing, sorted by expert id. Assignment p = n * k + j is slot j of
// token n. The sort is stable (within an expert, increasing p: token order, then slot); a capacity
// C keeps the first C assignments of each expert in that order and drops the rest.
struct ExpertDispatch {
  Tensor order;                  // i64 [M]: assignment p at each sorted position (M = sum(counts))
  Tensor token;                  // i64 [M]: order / k, the token row of each sorted position
  Tensor position;               // i64 [N * k]: sorted position of assignment p, -1 if dropped
  Tensor routed;                 // i64 [E]: assignments per expert before the capacity cut
  std::vector<int64_t> counts;   // [E]: kept assignments per expert; expert e's rows follow e-1's
  std::vector<int64_t> dropped;  // [E]: assignments of expert e beyond the capacity (0 if none)
};

// Sorts the top-k expert ids topk_idx (i64 or i32 [N, k], values in [0, n_experts)) by expert,
// keeping at most `capacity` assignments per expert (0: no limit). order, token, position and
// routed live on topk_idx's device; counts and dropped on the host. On CUDA the sort runs on the device (at
// most 2048 experts) and only routed comes back to the host, which is this function's one
// synchronization. Not differentiable. Throws naming the assignment for an
// id out of range, and for a negative capacity.
ExpertDispatch sort_by_expert(const Tensor& topk_idx, int64_t n_experts, int64_t capacity = 0);

// -- grouped linear -------------------------------------------------------------------------------
// x [M, D] with counts[l] consecutive rows for expert l (sum(counts) == M, counts >= 0), w
// [L, F, D] with L == counts.size() -> [M, F]: the rows of expert l times w[l]^T. Reference: cat
// over l of linear(x_l, w[l]). Gradients: dx_l = g_l w[l], dw[l] = g_l^T x_l (exactly zero for an
// expert with no rows), both grouped the same way (and differentiable again). f32/f64 on the CPU
// (one BLAS GEMM per expert), f32/bf16/f16/f64 on CUDA (one cuBLASLt GEMM per expert;
// kernels/cuda/moe.h).
// Under autocast x and w are cast to the autocast dtype, as matmul does, and so is the result.
Tensor grouped_linear(const Tensor& x, const Tensor& w, const std::vector<int64_t>& counts);

// -- SwiGLU gate ----------------------------------------------------------------------------------
// silu(a) * b elementwise for a, b of one shape, dtype and device, in one pass; the backward is one
// pass too
// (da = g b silu'(a), db = g silu(a)). Reference: silu(a) * b, whose CPU results it reproduces
// bitwise. Its second derivative is not implemented (throws).
Tensor swiglu(const Tensor& a, const Tensor& b);

}  // namespace loom
