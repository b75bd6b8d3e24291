#pragma once
// The transformer MLP as one op:
//   gelu_mlp(x, w1, b1, w2, b2) = linear(gelu_tanh(linear(x, w1, b1)), w2, b2)
// x [..., in], w1 [hidden, in], b1 [hidden], w2 [out, hidden], b2 [out] -> [..., out].
//
// On CUDA with 16-bit operands (bf16 under autocast) and in, hidden, out multiples of 8 it is two
// GEMMs whose cuBLASLt epilogues do the elementwise work: forward, the first adds b1, applies
// GELU(tanh) and keeps the pre-activation; backward, the gradient through the GELU and b1's
// gradient come out of the product dy·w2 (DGELU_BGRAD), b2's gradient out of w2's weight-gradient
// GEMM (BGRADB). It saves what the three ops would (x, the pre-activation, the hidden
// activation) and no separate GELU pass runs either way. Anywhere else (CPU, f32, other widths,
// no biases) it is exactly the three ops.
#include "core/tensor.h"

namespace loom {

Tensor gelu_mlp(const Tensor& x, const Tensor& w1, const Tensor& b1, const Tensor& w2,
                const Tensor& b2);

}  // namespace loom
