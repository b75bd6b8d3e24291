#pragma once
// How core's ops hand tensors to the CUDA GEMM (kernels::cuda::gemm): an operand's last two dims
// must be unit-stride in one of them (else it is copied contiguous), and a 2-D product with an
// epilogue is one call. Shared by linalg.cpp and fused_mlp.cpp; not part of the public API.
#include <utility>

#include "core/tensor.h"
#include "kernels/cuda/kernels.h"

namespace loom::ops {

struct GemmOperand {
  Tensor t;
  bool trans = false;
  int64_t ld = 0;
};

// x [.., R, C] as a GEMM operand: itself when one of its last two dims is unit-stride, else a
// contiguous copy.
GemmOperand as_gemm_operand(const Tensor& x);

// One [m, k] x [k, n] product of the two operands into a contiguous [m, n] output (no epilogue).
kernels::cuda::Gemm cuda_gemm_of(const GemmOperand& ga, const GemmOperand& gb, int64_t m,
                                 int64_t n, int64_t k);

// a [m, k] @ b [k, n] into a new contiguous [m, n] CUDA tensor of a's dtype, with the epilogue
// pointers of `epilogue` (kernels.h; its shape fields are ignored).
Tensor cuda_product(const Tensor& a, const Tensor& b, const kernels::cuda::Gemm& epilogue);

// The weight and bias gradients of a linear layer y = x Wᵀ + b from dy [M, N] and x [M, K]:
// dW = dyᵀ x [N, K] and db = Σ_rows dy [N]. For contiguous 16-bit CUDA dy and widths that are
// multiples of 8, one GEMM whose epilogue (BGRADB) also sums dy's rows; else a GEMM and a sum.
std::pair<Tensor, Tensor> weight_and_bias_grad(const Tensor& dy, const Tensor& x);

}  // namespace loom::ops
