#pragma once
// Moving rows between token order and the expert-sorted order of an MoE layer (ExpertDispatch,
// core/ops/moe_ops.h): sorted row r holds token token[r], and slot j of token t sits at row
// position[t * k + j], or nowhere when that is -1 (dropped by a capacity). Both directions are
// gathers that sum each token's slots in slot order, so results are deterministic (the composite
// references below scatter with index_add, whose CUDA kernel adds with atomics in no fixed
// order). token and position must be those sort_by_expert gave (shapes and dtypes are checked,
// the values are not). CPU (f32, f64) and CUDA (kernels/cuda/moe.h). Misuse throws loom::Error
// prefixed with the op name.
#include "core/tensor.h"

namespace loom {

// x [N, D] -> [M, D]: row r is x[token[r]]. Reference: index_select(x, 0, token). Gradient: dx[t]
// = the sum of the gradient rows of t's kept slots (zero for a token whose slots were all
// dropped), in x's dtype with f32 (f64) accumulation. token i64 [M], position i64 [N * k] on x's
// device. Second derivatives are not implemented (throws).
Tensor dispatch_expert_rows(const Tensor& x, const Tensor& token, const Tensor& position);

// out[t] = base[t] + sum over t's kept slots (row r) of weight[r] * y[r], in base's dtype:
// base [N, D], y [M, D], weight [M]. Reference: index_add(base, 0, token, y.to(base dtype) *
// weight.unsqueeze(1)). Gradients: base's is the output gradient g itself; y's is weight[r] *
// g[token[r]] in y's dtype (a bf16 expert output under autocast gets a bf16 gradient for its
// GEMMs); weight's is sum_c g[token[r], c] * y[r, c] in weight's dtype. On CUDA y may be bf16 or
// f16 with f32 base and weight; every other mix is computed after casting y to base's dtype.
// Second derivatives are not implemented (throws).
Tensor combine_expert_rows(const Tensor& base, const Tensor& y, const Tensor& weight,
                           const Tensor& token, const Tensor& position);

}  // namespace loom
