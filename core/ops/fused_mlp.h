#pragma once
// The transformer MLP as one op:
//   gelu_mlp(x, w1, b1, w2, b2) = linear(gelu_tanh(linear(x, w1, b1)), w2, b2)
// x [..., in], w1 [hidden, in], b1 [hidden], w2 [out, hidden], b2 [out] -> [..., out].
//
// On CUDA with 16-bit operands (bf16 under autocast) and in, hidden, out multiples of 8 the
// forward is two GEMMs: the first's cuBLASLt epilogue adds b1, applies GELU(tanh) and keeps the
// pre-activation for the backward (GELU_AUX_BIAS), so no separate GELU pass runs. The backward
// is the three ops' GEMMs; the GELU gradient is one pass that also sums its columns into b1's
// gradient (kernels.h gelu_tanh_grad_col_sums), so fc1's weight gradient is a plain GEMM, and
// b2's gradient comes from fc2's weight-gradient GEMM epilogue (BGRADB). cuBLASLt's DGELU_BGRAD
// epilogue ran 3x slower on the H200. It saves what the three ops would (x, the
// pre-activation, the hidden activation). Anywhere else
// (CPU, f32, other widths, no biases) it is exactly the three ops.
#include "core/tensor.h"

namespace loom {

Tensor gelu_mlp(const Tensor& x, const Tensor& w1, const Tensor& b1, const Tensor& w2,
                const Tensor& b2);

}  // namespace loom
