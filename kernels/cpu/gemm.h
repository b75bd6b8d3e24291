#pragma once
// GEMM through OpenBLAS: C = alpha * op(A) op(B) + beta * C, row-major, for float and double.
// A batched form loops the batch over strided pointers (OpenBLAS threads each GEMM).
#include <cstdint>

namespace loom::kernels::cpu {

struct GemmParams {
  bool trans_a = false, trans_b = false;
  int64_t m = 0, n = 0, k = 0;
  int64_t lda = 0, ldb = 0, ldc = 0;
  double alpha = 1, beta = 0;
};

void gemm(const GemmParams& p, const float* a, const float* b, float* c);
void gemm(const GemmParams& p, const double* a, const double* b, double* c);

}  // namespace loom::kernels::cpu
