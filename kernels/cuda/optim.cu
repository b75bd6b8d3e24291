// CUDA optimizer updates of kernels.h: the fused AdamW step (one pass over p, g, m and v).
//
// Launch shape: one thread per four elements (float4) when every pointer is 16-byte aligned and
// n is a multiple of 4, else one per element; 256 threads per block, grid-stride.
#include "kernels/cuda/context.h"
#include "kernels/cuda/grid.cuh"
#include "kernels/cuda/kernels.h"

namespace loom::kernels::cuda {

namespace {

__device__ __forceinline__ void adamw_one(float& p, float g, float& m, float& v,
                                          const AdamWStep& s) {
  p *= s.decay;
  m += s.one_minus_beta1 * (g - m);
  v = s.beta2 * v + s.one_minus_beta2 * g * g;
  p -= s.step_size * m / (sqrtf(v) / s.bc2_sqrt + s.eps);
}

__global__ void adamw_kernel(float* p, const float* g, float* m, float* v, int64_t n,
                             AdamWStep s) {
  for (int64_t i = grid_index(); i < n; i += grid_step()) adamw_one(p[i], g[i], m[i], v[i], s);
}

__global__ void adamw_kernel4(float4* p, const float4* g, float4* m, float4* v, int64_t n4,
                              AdamWStep s) {
  for (int64_t i = grid_index(); i < n4; i += grid_step()) {
    float4 pp = p[i], mm = m[i], vv = v[i];
    const float4 gg = g[i];
    adamw_one(pp.x, gg.x, mm.x, vv.x, s);
    adamw_one(pp.y, gg.y, mm.y, vv.y, s);
    adamw_one(pp.z, gg.z, mm.z, vv.z, s);
    adamw_one(pp.w, gg.w, mm.w, vv.w, s);
    p[i] = pp;
    m[i] = mm;
    v[i] = vv;
  }
}

}  // namespace

void adamw_step(float* p, const float* g, float* m, float* v, int64_t n, const AdamWStep& s) {
  if (n == 0) return;
  constexpr int kThreads = 256;
  if (n % 4 == 0 && aligned16(p) && aligned16(g) && aligned16(m) && aligned16(v)) {
    const int64_t n4 = n / 4;
    adamw_kernel4<<<blocks_for(n4, kThreads), kThreads, 0, compute_stream()>>>(
        reinterpret_cast<float4*>(p), reinterpret_cast<const float4*>(g),
        reinterpret_cast<float4*>(m), reinterpret_cast<float4*>(v), n4, s);
  } else {
    adamw_kernel<<<blocks_for(n, kThreads), kThreads, 0, compute_stream()>>>(p, g, m, v, n, s);
  }
  check_launch("adamw_step");
}

}  // namespace loom::kernels::cuda
