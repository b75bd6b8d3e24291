// Softmax, layer norm and RMS norm over the rows of a contiguous x [rows, n], and the norms' input
// gradient (kernels.h, nn section; CPU twins in kernels/cpu/softmax.h and kernels/cpu/norm.h and
// the ops-built backward in core/ops/nn.cpp, same formulas).
//
// Launch shape: a row of n <= 1024 is handled by one warp (4 rows per 128-thread block), a longer
// row by one 512-thread block; blocks stride over the rows, so any row count works. Each pass
// re-reads the row from global memory (L1/L2 hits after the first); when every row pointer is
// 16-byte aligned and n is a multiple of the pack width, rows are read and written in 16-byte
// packs, else element by element. Sums run in Compute<T> (f32, f64 for f64 x), per thread in index
// order, then across lanes with xor shuffles and across warps through shared memory in warp order;
// the result is deterministic. Softmax subtracts the row max; the norms take the variance in two
// passes (mean first), eps inside the sqrt, and write mean/rstd [rows] in Compute<T>. y is
// overwritten and may not alias x (x is read through the read-only cache).
#include <cmath>
#include <cstdint>

#include "kernels/cuda/context.h"
#include "kernels/cuda/dtype_cuda.cuh"
#include "kernels/cuda/kernels.h"
#include "kernels/cuda/pack.cuh"

namespace loom::kernels::cuda {

namespace {

constexpr int64_t kWarpRowMax = 1024;  // longest row one warp handles
constexpr int kBlockThreads = 512;     // threads per row above that
constexpr int kWarpRowsPerBlock = 4;

struct Sum {
  template <class C>
  __device__ C operator()(C a, C b) const {
    return a + b;
  }
};
struct Max {
  template <class C>
  __device__ C operator()(C a, C b) const {
    return fmax(a, b);
  }
};

// Combines v over the G threads of a row (threadIdx.x in [0, G)); every thread gets the result.
template <int G, class C, class Op>
__device__ C row_reduce(C v, Op op) {
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  if constexpr (G > 32) {
    __shared__ C part[G / 32];
    __syncthreads();  // the previous reduction may still be reading part
    if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = v;
    __syncthreads();
    v = part[0];
    for (int w = 1; w < G / 32; ++w) v = op(v, part[w]);
  }
  return v;
}

// A thread's rows are first_row(), first_row() + row_step(), ...: blockDim = (G, rows per block).
__device__ __forceinline__ int64_t first_row() {
  return int64_t(blockIdx.x) * blockDim.y + threadIdx.y;
}
__device__ __forceinline__ int64_t row_step() {
  return int64_t(gridDim.x) * blockDim.y;
}

template <class T, int V, int G>
__global__ void softmax_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t rows, int64_t n,
                               bool log_softmax) {
  using C = typename Compute<T>::type;
  const int64_t packs = n / V;
  for (int64_t r = first_row(); r < rows; r += row_step()) {
    const T* xr = x + r * n;
    T* yr = y + r * n;
    C m = -C(INFINITY);
    for (int64_t i = threadIdx.x; i < packs; i += G) {
      const Pack<T, V> p = load_pack<V>(xr, i);
      for (int j = 0; j < V; ++j) m = fmax(m, to_compute<C>(p.v[j]));
    }
    m = row_reduce<G>(m, Max{});
    C s = 0;
    for (int64_t i = threadIdx.x; i < packs; i += G) {
      const Pack<T, V> p = load_pack<V>(xr, i);
      for (int j = 0; j < V; ++j) s += exp(to_compute<C>(p.v[j]) - m);
    }
    s = row_reduce<G>(s, Sum{});
    const C shift = m + log(s), inv = C(1) / s;
    for (int64_t i = threadIdx.x; i < packs; i += G) {
      const Pack<T, V> p = load_pack<V>(xr, i);
      Pack<T, V> q;
      for (int j = 0; j < V; ++j) {
        const C v = to_compute<C>(p.v[j]);
        q.v[j] = from_compute<T>(log_softmax ? v - shift : exp(v - m) * inv);
      }
      store_pack<V>(yr, i, q);
    }
  }
}

template <class T, int V, int G>
__global__ void layer_norm_kernel(const T* __restrict__ x, const T* __restrict__ w,
                                  const T* __restrict__ b, T* __restrict__ y,
                                  typename Compute<T>::type* __restrict__ mean,
                                  typename Compute<T>::type* __restrict__ rstd, int64_t rows,
                                  int64_t n, double eps) {
  using C = typename Compute<T>::type;
  const int64_t packs = n / V;
  for (int64_t r = first_row(); r < rows; r += row_step()) {
    const T* xr = x + r * n;
    T* yr = y + r * n;
    C s = 0;
    for (int64_t i = threadIdx.x; i < packs; i += G) {
      const Pack<T, V> p = load_pack<V>(xr, i);
      for (int j = 0; j < V; ++j) s += to_compute<C>(p.v[j]);
    }
    const C mu = row_reduce<G>(s, Sum{}) / C(n);
    C ss = 0;
    for (int64_t i = threadIdx.x; i < packs; i += G) {
      const Pack<T, V> p = load_pack<V>(xr, i);
      for (int j = 0; j < V; ++j) {
        const C d = to_compute<C>(p.v[j]) - mu;
        ss += d * d;
      }
    }
    const C rs = C(1) / sqrt(row_reduce<G>(ss, Sum{}) / C(n) + C(eps));
    if (threadIdx.x == 0) {
      mean[r] = mu;
      rstd[r] = rs;
    }
    for (int64_t i = threadIdx.x; i < packs; i += G) {
      const Pack<T, V> p = load_pack<V>(xr, i);
      Pack<T, V> wp, bp, q;
      if (w) wp = load_pack<V>(w, i);
      if (b) bp = load_pack<V>(b, i);
      for (int j = 0; j < V; ++j) {
        C v = (to_compute<C>(p.v[j]) - mu) * rs;
        if (w) v *= to_compute<C>(wp.v[j]);
        if (b) v += to_compute<C>(bp.v[j]);
        q.v[j] = from_compute<T>(v);
      }
      store_pack<V>(yr, i, q);
    }
  }
}

template <class T, int V, int G>
__global__ void rms_norm_kernel(const T* __restrict__ x, const T* __restrict__ w, T* __restrict__ y,
                                typename Compute<T>::type* __restrict__ rstd, int64_t rows,
                                int64_t n, double eps) {
  using C = typename Compute<T>::type;
  const int64_t packs = n / V;
  for (int64_t r = first_row(); r < rows; r += row_step()) {
    const T* xr = x + r * n;
    T* yr = y + r * n;
    C ss = 0;
    for (int64_t i = threadIdx.x; i < packs; i += G) {
      const Pack<T, V> p = load_pack<V>(xr, i);
      for (int j = 0; j < V; ++j) {
        const C v = to_compute<C>(p.v[j]);
        ss += v * v;
      }
    }
    const C rs = C(1) / sqrt(row_reduce<G>(ss, Sum{}) / C(n) + C(eps));
    if (threadIdx.x == 0) rstd[r] = rs;
    for (int64_t i = threadIdx.x; i < packs; i += G) {
      const Pack<T, V> p = load_pack<V>(xr, i);
      Pack<T, V> wp, q;
      if (w) wp = load_pack<V>(w, i);
      for (int j = 0; j < V; ++j) {
        C v = to_compute<C>(p.v[j]) * rs;
        if (w) v *= to_compute<C>(wp.v[j]);
        q.v[j] = from_compute<T>(v);
      }
      store_pack<V>(yr, i, q);
    }
  }
}

template <int V, int G>
struct RowShape {
  static constexpr int kVec = V, kThreads = G;
  static dim3 block() { return dim3(G, G == 32 ? kWarpRowsPerBlock : 1); }
  static unsigned grid(int64_t rows) { return blocks_for(rows, G == 32 ? kWarpRowsPerBlock : 1); }
};

// The input gradient of layer_norm (mean given) or rms_norm (mean null), one 256-thread block per
// row: with xhat = (x - mean) * rstd (rms: x * rstd) and gxhat = dy * w (dy when w is null),
//   layer_norm: dx = rstd * (gxhat - mean(gxhat) - xhat * mean(gxhat * xhat))
//   rms_norm:   dx = rstd * (gxhat - xhat * mean(gxhat * xhat))
// the formulas of the ops-built CPU backward (core/ops/nn.cpp); the second pass re-reads the row.
constexpr int kNormBackwardThreads = 256;

template <class T>
__global__ void norm_backward_kernel(const T* x, const T* w, const typename Compute<T>::type* mean,
                                     const typename Compute<T>::type* rstd, const T* dy, T* dx, int64_t n) {
  using C = typename Compute<T>::type;
  const int64_t row = blockIdx.x;
  const T* xr = x + row * n;
  const T* gr = dy + row * n;
  T* dr = dx + row * n;
  const C mu = mean ? C(mean[row]) : C(0), rs = C(rstd[row]);
  C sum_g = 0, sum_gx = 0;
  for (int64_t j = threadIdx.x; j < n; j += kNormBackwardThreads) {
    const C g = to_compute<C>(gr[j]) * (w ? to_compute<C>(w[j]) : C(1));
    sum_g += g;
    sum_gx += g * (to_compute<C>(xr[j]) - mu) * rs;
  }
  const C mean_g = mean ? row_reduce<kNormBackwardThreads>(sum_g, Sum{}) / C(n) : C(0);
  const C mean_gx = row_reduce<kNormBackwardThreads>(sum_gx, Sum{}) / C(n);
  for (int64_t j = threadIdx.x; j < n; j += kNormBackwardThreads) {
    const C g = to_compute<C>(gr[j]) * (w ? to_compute<C>(w[j]) : C(1));
    const C xh = (to_compute<C>(xr[j]) - mu) * rs;
    dr[j] = from_compute<T>(rs * (g - mean_g - xh * mean_gx));
  }
}

// Calls f(RowShape<V, G>{}) for the row kernels of dtype T: 16-byte packs when `aligned` (every
// row pointer's base is) and n fills whole packs; a warp per row up to kWarpRowMax.
template <class T, class F>
void with_row_shape(int64_t n, bool aligned, F&& f) {
  constexpr int kPack = 16 / sizeof(T);
  const bool packed = aligned && n % kPack == 0;
  if (n <= kWarpRowMax) {
    packed ? f(RowShape<kPack, 32>{}) : f(RowShape<1, 32>{});
  } else {
    packed ? f(RowShape<kPack, kBlockThreads>{}) : f(RowShape<1, kBlockThreads>{});
  }
}

}  // namespace

void softmax_rows(const void* x, void* y, DType dtype, int64_t rows, int64_t n, bool log) {
  if (rows <= 0 || n <= 0) return;
  dispatch_float(dtype, "softmax_rows", [&](auto tag) {
    using T = decltype(tag);
    with_row_shape<T>(n, aligned16(x) && aligned16(y), [&](auto shape) {
      using S = decltype(shape);
      softmax_kernel<T, S::kVec, S::kThreads><<<S::grid(rows), S::block(), 0, compute_stream()>>>(
          static_cast<const T*>(x), static_cast<T*>(y), rows, n, log);
    });
  });
  check_launch("softmax_rows");
}

void layer_norm_forward(const void* x, const void* w, const void* b, void* y, void* mean,
                        void* rstd, DType dtype, int64_t rows, int64_t n, double eps) {
  if (rows <= 0 || n <= 0) return;
  dispatch_float(dtype, "layer_norm_forward", [&](auto tag) {
    using T = decltype(tag);
    using C = typename Compute<T>::type;
    const bool aligned = aligned16(x) && aligned16(w) && aligned16(b) && aligned16(y);
    with_row_shape<T>(n, aligned, [&](auto shape) {
      using S = decltype(shape);
      layer_norm_kernel<T, S::kVec, S::kThreads>
          <<<S::grid(rows), S::block(), 0, compute_stream()>>>(
              static_cast<const T*>(x), static_cast<const T*>(w), static_cast<const T*>(b),
              static_cast<T*>(y), static_cast<C*>(mean), static_cast<C*>(rstd), rows, n, eps);
    });
  });
  check_launch("layer_norm_forward");
}

void rms_norm_forward(const void* x, const void* w, void* y, void* rstd, DType dtype, int64_t rows,
                      int64_t n, double eps) {
  if (rows <= 0 || n <= 0) return;
  dispatch_float(dtype, "rms_norm_forward", [&](auto tag) {
    using T = decltype(tag);
    using C = typename Compute<T>::type;
    with_row_shape<T>(n, aligned16(x) && aligned16(w) && aligned16(y), [&](auto shape) {
      using S = decltype(shape);
      rms_norm_kernel<T, S::kVec, S::kThreads><<<S::grid(rows), S::block(), 0, compute_stream()>>>(
          static_cast<const T*>(x), static_cast<const T*>(w), static_cast<T*>(y),
          static_cast<C*>(rstd), rows, n, eps);
    });
  });
  check_launch("rms_norm_forward");
}

void norm_backward_input(const void* x, const void* w, const void* mean, const void* rstd,
                         const void* dy, void* dx, DType dtype, int64_t rows, int64_t n) {
  if (rows == 0 || n == 0) return;
  dispatch_float(dtype, "norm_backward_input", [&](auto tag) {
    using T = decltype(tag);
    norm_backward_kernel<T><<<blocks_for(rows, 1), kNormBackwardThreads, 0, compute_stream()>>>(
        static_cast<const T*>(x), static_cast<const T*>(w), static_cast<const typename Compute<T>::type*>(mean),
        static_cast<const typename Compute<T>::type*>(rstd), static_cast<const T*>(dy), static_cast<T*>(dx), n);
  });
  check_launch("norm_backward_input");
}

}  // namespace loom::kernels::cuda
