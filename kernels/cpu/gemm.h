#pragma once
// GEMM through OpenBLAS: C = alpha * op(A) op(B) + beta * C, row-major, for float and double.
// Threads: OpenBLAS runs single-threaded; a product of at least kGemmSplitMacs multiply-adds is
// cut into up to kGemmBlocks blocks of C's rows (of its columns when C is wider than tall), fixed
// by the shape alone, which the pool (thread_pool.h) runs side by side, each a BLAS call over
// the whole k: the same calls for any thread count, so the same bits. Called from a pool thread
// the blocks run one after another. (OpenBLAS's own threads spin-wait after each call; on two
// cores they took turns with the pool's threads and cost about a quarter of a DiT-MoE training
// step, docs/PERFORMANCE.md.)
#include <cstdint>

namespace loom::kernels::cpu {

constexpr int64_t kGemmSplitMacs = int64_t(1) << 18;
constexpr int64_t kGemmBlocks = 8;

struct GemmParams {
  bool trans_a = false, trans_b = false;
  int64_t m = 0, n = 0, k = 0;
  int64_t lda = 0, ldb = 0, ldc = 0;
  double alpha = 1, beta = 0;
};

void gemm(const GemmParams& p, const float* a, const float* b, float* c);
void gemm(const GemmParams& p, const double* a, const double* b, double* c);

}  // namespace loom::kernels::cpu
