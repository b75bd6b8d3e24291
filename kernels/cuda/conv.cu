// vol2col and col2vol (kernels.h, convolution helpers), the CPU twins of kernels/cpu/conv.cpp with
// the same column layout: cols row r = plane * K + (kd * kH + kh) * kW + kw (K = kD*kH*kW taps),
// column l = (od * Ho + oh) * Wo + ow, reading x[plane, od*sd - pd + kd, oh*sh - ph + kh,
// ow*sw - pw + kw] or 0 where that lies in the padding.
//
// Launch shape: one thread per output element (256-thread blocks, grid-stride), so vol2col writes
// cols coalesced. col2vol is a gather: each dx element sums the column entries that read it, in
// increasing tap order (the CPU twin's order, so f32/f64 results match it bit for bit), in
// Compute<T> and rounded once; no atomics, deterministic. Both overwrite their output.
#include <cstdint>

#include "kernels/cuda/context.h"
#include "kernels/cuda/dtype_cuda.cuh"
#include "kernels/cuda/grid.cuh"
#include "kernels/cuda/kernels.h"

namespace loom::kernels::cuda {

namespace {

constexpr int kThreads = 256;


template <class T>
__global__ void vol2col_kernel(ConvGeometry g, const T* __restrict__ x, T* __restrict__ cols,
                               int64_t total) {
  using C = typename Compute<T>::type;
  const int64_t k = g.kernel[0] * g.kernel[1] * g.kernel[2];
  const int64_t l = g.out[0] * g.out[1] * g.out[2];
  const int64_t s = g.in[0] * g.in[1] * g.in[2];
  for (int64_t e = grid_index(); e < total; e += grid_step()) {
    const int64_t r = e / l, col = e % l;
    const int64_t plane = r / k, tap = r % k;
    const int64_t kw = tap % g.kernel[2], kh = tap / g.kernel[2] % g.kernel[1];
    const int64_t kd = tap / (g.kernel[2] * g.kernel[1]);
    const int64_t ow = col % g.out[2], oh = col / g.out[2] % g.out[1];
    const int64_t od = col / (g.out[2] * g.out[1]);
    const int64_t id = od * g.stride[0] - g.padding[0] + kd;
    const int64_t ih = oh * g.stride[1] - g.padding[1] + kh;
    const int64_t iw = ow * g.stride[2] - g.padding[2] + kw;
    const bool inside =
        id >= 0 && id < g.in[0] && ih >= 0 && ih < g.in[1] && iw >= 0 && iw < g.in[2];
    cols[e] = inside ? x[plane * s + (id * g.in[1] + ih) * g.in[2] + iw] : from_compute<T>(C(0));
  }
}

// The outputs o in [lo, hi] of one dim whose window reads input position i (tap i + pad - o*st,
// which must lie in [0, kernel)); empty when lo > hi.
struct Outputs {
  int64_t lo, hi;
};
__device__ __forceinline__ Outputs outputs_reading(int64_t i, int64_t kernel, int64_t st,
                                                   int64_t pad, int64_t out) {
  const int64_t t = i + pad;  // = o * st + tap, t >= 0
  const int64_t lo = t - (kernel - 1) <= 0 ? 0 : (t - (kernel - 1) + st - 1) / st;
  return {lo, min(t / st, out - 1)};
}

template <class T>
__global__ void col2vol_kernel(ConvGeometry g, const T* __restrict__ cols, T* __restrict__ dx,
                               int64_t total) {
  using C = typename Compute<T>::type;
  const int64_t k = g.kernel[0] * g.kernel[1] * g.kernel[2];
  const int64_t l = g.out[0] * g.out[1] * g.out[2];
  const int64_t s = g.in[0] * g.in[1] * g.in[2];
  for (int64_t e = grid_index(); e < total; e += grid_step()) {
    const int64_t plane = e / s, pos = e % s;
    const int64_t iw = pos % g.in[2], ih = pos / g.in[2] % g.in[1];
    const int64_t id = pos / (g.in[2] * g.in[1]);
    const Outputs d = outputs_reading(id, g.kernel[0], g.stride[0], g.padding[0], g.out[0]);
    const Outputs h = outputs_reading(ih, g.kernel[1], g.stride[1], g.padding[1], g.out[1]);
    const Outputs w = outputs_reading(iw, g.kernel[2], g.stride[2], g.padding[2], g.out[2]);
    const T* rows = cols + plane * k * l;
    C acc = 0;
    // Descending outputs are ascending taps: the rows are visited in increasing order.
    for (int64_t od = d.hi; od >= d.lo; --od) {
      const int64_t kd = id + g.padding[0] - od * g.stride[0];
      for (int64_t oh = h.hi; oh >= h.lo; --oh) {
        const int64_t kh = ih + g.padding[1] - oh * g.stride[1];
        const T* row =
            rows + (kd * g.kernel[1] + kh) * g.kernel[2] * l + (od * g.out[1] + oh) * g.out[2];
        for (int64_t ow = w.hi; ow >= w.lo; --ow) {
          const int64_t kw = iw + g.padding[2] - ow * g.stride[2];
          acc += to_compute<C>(row[kw * l + ow]);
        }
      }
    }
    dx[e] = from_compute<T>(acc);
  }
}

}  // namespace

void vol2col(const ConvGeometry& g, int64_t planes, const void* x, void* cols, DType dtype) {
  const int64_t total =
      planes * g.kernel[0] * g.kernel[1] * g.kernel[2] * g.out[0] * g.out[1] * g.out[2];
  if (total <= 0) return;
  dispatch_float(dtype, "vol2col", [&](auto tag) {
    using T = decltype(tag);
    vol2col_kernel<<<blocks_for(total, kThreads), kThreads, 0, compute_stream()>>>(
        g, static_cast<const T*>(x), static_cast<T*>(cols), total);
  });
  check_launch("vol2col");
}

void col2vol(const ConvGeometry& g, int64_t planes, const void* cols, void* dx, DType dtype) {
  const int64_t total = planes * g.in[0] * g.in[1] * g.in[2];
  if (total <= 0) return;
  dispatch_float(dtype, "col2vol", [&](auto tag) {
    using T = decltype(tag);
    col2vol_kernel<<<blocks_for(total, kThreads), kThreads, 0, compute_stream()>>>(
        g, static_cast<const T*>(cols), static_cast<T*>(dx), total);
  });
  check_launch("col2vol");
}

}  // namespace loom::kernels::cuda
