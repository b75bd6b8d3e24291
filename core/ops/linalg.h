#pragma once
// Matrix products through the GEMM kernels (OpenBLAS on the CPU, cuBLASLt on CUDA).
#include "core/tensor.h"

namespace loom {

// a [..., M, K] @ b [..., K, N] -> [..., M, N], batch dims broadcast. 1-D operands are promoted
// as in NumPy (a vector on the left is a row, on the right a column) and the added dim removed.
// Transposed views are passed to the GEMM as transposes, not copied.
Tensor matmul(const Tensor& a, const Tensor& b);

// x [..., in] @ weight [out, in]^T + bias [out] -> [..., out]  (bias may be undefined).
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());

// Whether f32 matmuls on CUDA may use TF32 tensor cores (off by default: full f32 products). A
// process-wide switch, set from the recipe (train.allow_tf32) before training.
void set_matmul_allow_tf32(bool allow);
bool matmul_allow_tf32();

}  // namespace loom
