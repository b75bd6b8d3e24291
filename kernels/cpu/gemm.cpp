#include "kernels/cpu/gemm.h"

#include <cblas.h>

#include <algorithm>

#include "kernels/cpu/thread_pool.h"

namespace loom::kernels::cpu {

namespace {

void blas(const GemmParams& p, const float* a, const float* b, float* c) {
  cblas_sgemm(CblasRowMajor, p.trans_a ? CblasTrans : CblasNoTrans,
              p.trans_b ? CblasTrans : CblasNoTrans, int(p.m), int(p.n), int(p.k), float(p.alpha),
              a, int(p.lda), b, int(p.ldb), float(p.beta), c, int(p.ldc));
}
void blas(const GemmParams& p, const double* a, const double* b, double* c) {
  cblas_dgemm(CblasRowMajor, p.trans_a ? CblasTrans : CblasNoTrans,
              p.trans_b ? CblasTrans : CblasNoTrans, int(p.m), int(p.n), int(p.k), p.alpha, a,
              int(p.lda), b, int(p.ldb), p.beta, c, int(p.ldc));
}

// gemm.h: C's rows (or columns) in kGemmBlocks blocks fixed by the shape alone.
template <class T>
void split_gemm(const GemmParams& p, const T* a, const T* b, T* c) {
  if (p.m == 0 || p.n == 0) return;
  if (p.m * p.n * std::max<int64_t>(p.k, 1) < kGemmSplitMacs) return blas(p, a, b, c);
  const bool by_rows = p.m >= p.n;
  const int64_t extent = by_rows ? p.m : p.n;
  const int64_t grain = std::max<int64_t>(16, (extent + kGemmBlocks - 1) / kGemmBlocks);
  parallel_for(0, extent, grain, [&](int64_t begin, int64_t end) {
    GemmParams part = p;
    if (by_rows) {
      part.m = end - begin;
      blas(part, a + begin * (p.trans_a ? 1 : p.lda), b, c + begin * p.ldc);
    } else {
      part.n = end - begin;
      blas(part, a, b + begin * (p.trans_b ? p.ldb : 1), c + begin);
    }
  });
}

}  // namespace

void gemm(const GemmParams& p, const float* a, const float* b, float* c) {
  split_gemm(p, a, b, c);
}

void gemm(const GemmParams& p, const double* a, const double* b, double* c) {
  split_gemm(p, a, b, c);
}

}  // namespace loom::kernels::cpu
