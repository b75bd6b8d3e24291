#include "kernels/cpu/gemm.h"

#include <cblas.h>

namespace loom::kernels::cpu {

void gemm(const GemmParams& p, const float* a, const float* b, float* c) {
  if (p.m == 0 || p.n == 0) return;
  cblas_sgemm(CblasRowMajor, p.trans_a ? CblasTrans : CblasNoTrans,
              p.trans_b ? CblasTrans : CblasNoTrans, int(p.m), int(p.n), int(p.k), float(p.alpha),
              a, int(p.lda), b, int(p.ldb), float(p.beta), c, int(p.ldc));
}

void gemm(const GemmParams& p, const double* a, const double* b, double* c) {
  if (p.m == 0 || p.n == 0) return;
  cblas_dgemm(CblasRowMajor, p.trans_a ? CblasTrans : CblasNoTrans,
              p.trans_b ? CblasTrans : CblasNoTrans, int(p.m), int(p.n), int(p.k), p.alpha, a,
              int(p.lda), b, int(p.ldb), p.beta, c, int(p.ldc));
}

}  // namespace loom::kernels::cpu
