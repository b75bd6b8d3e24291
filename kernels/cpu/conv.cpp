#include "kernels/cpu/conv.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/thread_pool.h"

namespace loom::kernels::cpu {

bool ConvGeom::is_pointwise() const {
  for (int d = 0; d < 3; ++d) {
    if (kernel[d] != 1 || stride[d] != 1 || padding[d] != 0) return false;
  }
  return true;
}

namespace {

constexpr int64_t kGrainElems = int64_t(1) << 15;

int64_t grain_for(int64_t work_per_item) {
  return std::max<int64_t>(1, kGrainElems / std::max<int64_t>(work_per_item, 1));
}

// Outputs o in [lo, hi) whose tap o * stride + offset lands inside [0, in).
struct Range {
  int64_t lo, hi;
};

Range valid_outputs(int64_t out, int64_t stride, int64_t offset, int64_t in) {
  const int64_t lo = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
  const int64_t hi = in - offset <= 0 ? 0 : (in - offset + stride - 1) / stride;
  const int64_t clo = std::min(lo, out);
  return {clo, std::clamp(hi, clo, out)};
}

// Column row r = plane * K + tap, the tap split into (kd, kh, kw).
struct Tap {
  int64_t plane, kd, kh, kw;
};

Tap split_row(const ConvGeom& g, int64_t r) {
  const int64_t k = g.kernel_numel();
  int64_t t = r % k;
  const int64_t kw = t % g.kernel[2];
  t /= g.kernel[2];
  return {r / k, t / g.kernel[1], t % g.kernel[1], kw};
}

// Visits every in-range (input row, column row) pair of one tap: f(src_offset, dst_offset, ow
// range) where src_offset is the input row start (d, h) and dst_offset the output row start.
template <class F>
void for_each_tap_row(const ConvGeom& g, const Tap& t, F&& f) {
  const Range w = valid_outputs(g.out[2], g.stride[2], t.kw - g.padding[2], g.in[2]);
  for (int64_t od = 0; od < g.out[0]; ++od) {
    const int64_t id = od * g.stride[0] - g.padding[0] + t.kd;
    for (int64_t oh = 0; oh < g.out[1]; ++oh) {
      const int64_t ih = oh * g.stride[1] - g.padding[1] + t.kh;
      const bool inside = id >= 0 && id < g.in[0] && ih >= 0 && ih < g.in[1];
      f(inside, (id * g.in[1] + ih) * g.in[2], (od * g.out[1] + oh) * g.out[2], w);
    }
  }
}

// Samples per group so the group's columns stay within the workspace budget.
int64_t group_size(const ConvGeom& g, int64_t n, int64_t elem_bytes, int64_t workspace_bytes) {
  const int64_t per_sample = g.channels * g.kernel_numel() * g.out_numel() * elem_bytes;
  return std::clamp<int64_t>(workspace_bytes / std::max<int64_t>(per_sample, 1), 1,
                             std::max<int64_t>(n, 1));
}

}  // namespace

template <class T>
void vol2col(const ConvGeom& g, int64_t planes, const T* x, T* cols) {
  const int64_t l = g.out_numel(), s = g.in_numel(), sw = g.stride[2];
  const int64_t w_off = -g.padding[2];
  parallel_for(0, planes * g.kernel_numel(), grain_for(l), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const Tap t = split_row(g, r);
      const T* plane = x + t.plane * s;
      T* row = cols + r * l;
      for_each_tap_row(g, t, [&](bool inside, int64_t src, int64_t dst, Range w) {
        T* out = row + dst;
        if (!inside) {
          std::fill(out, out + g.out[2], T(0));
          return;
        }
        const T* in = plane + src + t.kw + w_off;
        std::fill(out, out + w.lo, T(0));
        if (sw == 1) {
          std::copy(in + w.lo, in + w.hi, out + w.lo);
        } else {
          for (int64_t ow = w.lo; ow < w.hi; ++ow) out[ow] = in[ow * sw];
        }
        std::fill(out + w.hi, out + g.out[2], T(0));
      });
    }
  });
}

template <class T>
void col2vol(const ConvGeom& g, int64_t planes, const T* cols, T* dx) {
  const int64_t k = g.kernel_numel(), l = g.out_numel(), s = g.in_numel(), sw = g.stride[2];
  const int64_t w_off = -g.padding[2];
  // One chunk owns whole planes, so the taps of a plane are summed in a fixed order.
  parallel_for(0, planes, grain_for(k * l), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      T* plane = dx + p * s;
      std::fill(plane, plane + s, T(0));
      for (int64_t r = p * k; r < (p + 1) * k; ++r) {
        const Tap t = split_row(g, r);
        const T* row = cols + r * l;
        for_each_tap_row(g, t, [&](bool inside, int64_t src, int64_t dst, Range w) {
          if (!inside) return;
          T* in = plane + src + t.kw + w_off;
          const T* out = row + dst;
          for (int64_t ow = w.lo; ow < w.hi; ++ow) in[ow * sw] += out[ow];
        });
      }
    }
  });
}

template <class T>
void conv_forward(const ConvGeom& g, int64_t n, int64_t cout, const T* x, const T* weight,
                  const T* bias, T* y, int64_t workspace_bytes) {
  const int64_t ck = g.channels * g.kernel_numel(), l = g.out_numel(), s = g.in_numel();
  if (n == 0 || cout == 0 || l == 0) return;
  const bool pointwise = g.is_pointwise();
  const int64_t group = pointwise ? n : group_size(g, n, sizeof(T), workspace_bytes);
  std::vector<T> cols(pointwise ? 0 : size_t(group * ck * l));
  GemmParams p{.m = cout,
               .n = l,
               .k = ck,
               .lda = ck,
               .ldb = l,
               .ldc = l,
               .beta = bias != nullptr ? 1.0 : 0.0};
  for (int64_t i0 = 0; i0 < n; i0 += group) {
    const int64_t gn = std::min(group, n - i0);
    const T* c = x + i0 * g.channels * s;
    if (!pointwise) {
      vol2col(g, gn * g.channels, c, cols.data());
      c = cols.data();
    }
    for (int64_t j = 0; j < gn; ++j) {
      T* yi = y + (i0 + j) * cout * l;
      if (bias != nullptr) {
        for (int64_t o = 0; o < cout; ++o) std::fill(yi + o * l, yi + (o + 1) * l, bias[o]);
      }
      gemm(p, weight, c + j * ck * l, yi);
    }
  }
}

template <class T>
void conv_backward_input(const ConvGeom& g, int64_t n, int64_t cout, const T* dy, const T* weight,
                         T* dx, int64_t workspace_bytes) {
  const int64_t ck = g.channels * g.kernel_numel(), l = g.out_numel(), s = g.in_numel();
  if (n == 0) return;
  const bool pointwise = g.is_pointwise();
  const int64_t group = pointwise ? n : group_size(g, n, sizeof(T), workspace_bytes);
  std::vector<T> cols(pointwise ? 0 : size_t(group * ck * l));
  const GemmParams p{.trans_a = true, .m = ck, .n = l, .k = cout, .lda = ck, .ldb = l, .ldc = l};
  for (int64_t i0 = 0; i0 < n; i0 += group) {
    const int64_t gn = std::min(group, n - i0);
    T* dxi = dx + i0 * g.channels * s;
    T* c = pointwise ? dxi : cols.data();
    for (int64_t j = 0; j < gn; ++j) gemm(p, weight, dy + (i0 + j) * cout * l, c + j * ck * l);
    if (!pointwise) col2vol(g, gn * g.channels, c, dxi);
  }
}

template <class T>
void conv_backward_weight(const ConvGeom& g, int64_t n, int64_t cout, const T* dy, const T* x,
                          T* dweight, int64_t workspace_bytes) {
  const int64_t ck = g.channels * g.kernel_numel(), l = g.out_numel(), s = g.in_numel();
  if (n == 0 || l == 0) {
    std::fill(dweight, dweight + cout * ck, T(0));
    return;
  }
  const bool pointwise = g.is_pointwise();
  const int64_t group = pointwise ? n : group_size(g, n, sizeof(T), workspace_bytes);
  std::vector<T> cols(pointwise ? 0 : size_t(group * ck * l));
  GemmParams p{.trans_b = true, .m = cout, .n = ck, .k = l, .lda = l, .ldb = l, .ldc = ck};
  for (int64_t i0 = 0; i0 < n; i0 += group) {
    const int64_t gn = std::min(group, n - i0);
    const T* c = x + i0 * g.channels * s;
    if (!pointwise) {
      vol2col(g, gn * g.channels, c, cols.data());
      c = cols.data();
    }
    // Samples accumulate into dweight in order (beta = 1 after the first).
    for (int64_t j = 0; j < gn; ++j) {
      p.beta = i0 + j == 0 ? 0.0 : 1.0;
      gemm(p, dy + (i0 + j) * cout * l, c + j * ck * l, dweight);
    }
  }
}

template <class T>
void max_pool_forward(const ConvGeom& g, int64_t planes, const T* x, T* y, int64_t* argmax) {
  const int64_t l = g.out_numel(), s = g.in_numel();
  parallel_for(0, planes, grain_for(l * g.kernel_numel()), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const T* plane = x + p * s;
      int64_t o = p * l;
      for (int64_t od = 0; od < g.out[0]; ++od) {
        const int64_t d0 = od * g.stride[0] - g.padding[0];
        const int64_t d_lo = std::max<int64_t>(d0, 0), d_hi = std::min(d0 + g.kernel[0], g.in[0]);
        for (int64_t oh = 0; oh < g.out[1]; ++oh) {
          const int64_t h0 = oh * g.stride[1] - g.padding[1];
          const int64_t h_lo = std::max<int64_t>(h0, 0);
          const int64_t h_hi = std::min(h0 + g.kernel[1], g.in[1]);
          for (int64_t ow = 0; ow < g.out[2]; ++ow, ++o) {
            const int64_t w0 = ow * g.stride[2] - g.padding[2];
            const int64_t w_lo = std::max<int64_t>(w0, 0);
            const int64_t w_hi = std::min(w0 + g.kernel[2], g.in[2]);
            // Padding is -inf, so it never wins: scan only the real taps, starting from the
            // first one so an all -inf window still points at a real element.
            int64_t best = (d_lo * g.in[1] + h_lo) * g.in[2] + w_lo;
            T vbest = plane[best];
            for (int64_t d = d_lo; d < d_hi; ++d) {
              for (int64_t h = h_lo; h < h_hi; ++h) {
                const int64_t row = (d * g.in[1] + h) * g.in[2];
                for (int64_t w = w_lo; w < w_hi; ++w) {
                  const T v = plane[row + w];
                  if (v > vbest || (std::isnan(v) && !std::isnan(vbest))) {
                    vbest = v;
                    best = row + w;
                  }
                }
              }
            }
            y[o] = vbest;
            argmax[o] = best;
          }
        }
      }
    }
  });
}

template <class T>
void max_pool_backward(const ConvGeom& g, int64_t planes, const T* dy, const int64_t* argmax,
                       T* dx) {
  const int64_t l = g.out_numel(), s = g.in_numel();
  parallel_for(0, planes, grain_for(l + s), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      T* plane = dx + p * s;
      std::fill(plane, plane + s, T(0));
      for (int64_t o = p * l; o < (p + 1) * l; ++o) plane[argmax[o]] += dy[o];
    }
  });
}

#define LOOM_CONV_INSTANTIATE(T)                                                                   \
  template void vol2col<T>(const ConvGeom&, int64_t, const T*, T*);                                \
  template void col2vol<T>(const ConvGeom&, int64_t, const T*, T*);                                \
  template void conv_forward<T>(const ConvGeom&, int64_t, int64_t, const T*, const T*, const T*,   \
                                T*, int64_t);                                                      \
  template void conv_backward_input<T>(const ConvGeom&, int64_t, int64_t, const T*, const T*, T*,  \
                                       int64_t);                                                   \
  template void conv_backward_weight<T>(const ConvGeom&, int64_t, int64_t, const T*, const T*, T*, \
                                        int64_t);                                                  \
  template void max_pool_forward<T>(const ConvGeom&, int64_t, const T*, T*, int64_t*);             \
  template void max_pool_backward<T>(const ConvGeom&, int64_t, const T*, const int64_t*, T*);

LOOM_CONV_INSTANTIATE(float)
LOOM_CONV_INSTANTIATE(double)
#undef LOOM_CONV_INSTANTIATE

}  // namespace loom::kernels::cpu
