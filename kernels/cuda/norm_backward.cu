// CUDA backward of layer_norm / rms_norm with respect to the input (kernels.h), one pass pair per
// row: with xhat = (x - mean) * rstd (rms: x * rstd) and gxhat = dy * w (dy when w is null),
//   layer_norm: dx = rstd * (gxhat - mean(gxhat) - xhat * mean(gxhat * xhat))
//   rms_norm:   dx = rstd * (gxhat - xhat * mean(gxhat * xhat))
// the same formulas as the ops-built CPU backward (core/ops/nn.cpp). Launch shape: one 256-thread
// block per row; the two row sums go through warp shuffles and shared memory in the compute type
// (f32, f64 for f64), the second pass re-reads the row (from cache).
#include "kernels/cuda/context.h"
#include "kernels/cuda/dtype_cuda.cuh"
#include "kernels/cuda/kernels.h"

namespace loom::kernels::cuda {

namespace {

constexpr int kThreads = 256;

template <class C>
__device__ __forceinline__ C block_sum(C v, C* shared) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  C total = C(0);
  for (int w = 0; w < kThreads / 32; ++w) total += shared[w];
  __syncthreads();  // shared is reused by the next call
  return total;
}

template <class T, class S>
__global__ void norm_backward_kernel(const T* x, const T* w, const S* mean, const S* rstd,
                                     const T* dy, T* dx, int64_t n) {
  using C = typename Compute<T>::type;
  __shared__ C shared[kThreads / 32];
  const int64_t row = blockIdx.x;
  const T* xr = x + row * n;
  const T* gr = dy + row * n;
  T* dr = dx + row * n;
  const C mu = mean ? C(mean[row]) : C(0), rs = C(rstd[row]);
  C sum_g = 0, sum_gx = 0;
  for (int64_t j = threadIdx.x; j < n; j += kThreads) {
    const C g = to_compute<C>(gr[j]) * (w ? to_compute<C>(w[j]) : C(1));
    const C xh = (to_compute<C>(xr[j]) - mu) * rs;
    sum_g += g;
    sum_gx += g * xh;
  }
  const C mean_g = mean ? block_sum(sum_g, shared) / C(n) : C(0);
  const C mean_gx = block_sum(sum_gx, shared) / C(n);
  for (int64_t j = threadIdx.x; j < n; j += kThreads) {
    const C g = to_compute<C>(gr[j]) * (w ? to_compute<C>(w[j]) : C(1));
    const C xh = (to_compute<C>(xr[j]) - mu) * rs;
    dr[j] = from_compute<T>(rs * (g - mean_g - xh * mean_gx));
  }
}

}  // namespace

void norm_backward_input(const void* x, const void* w, const void* mean, const void* rstd,
                         const void* dy, void* dx, DType dtype, int64_t rows, int64_t n) {
  if (rows == 0 || n == 0) return;
  dispatch_float(dtype, "norm_backward_input", [&](auto tag) {
    using T = decltype(tag);
    using S = std::conditional_t<std::is_same_v<T, double>, double, float>;
    norm_backward_kernel<T, S><<<blocks_for(rows, 1), kThreads, 0, compute_stream()>>>(
        static_cast<const T*>(x), static_cast<const T*>(w), static_cast<const S*>(mean),
        static_cast<const S*>(rstd), static_cast<const T*>(dy), static_cast<T*>(dx), n);
  });
  check_launch("norm_backward_input");
}

}  // namespace loom::kernels::cuda
