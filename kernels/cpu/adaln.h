#pragma once
// The adaLN kernels of the DiT block on the CPU (core/ops/adaln.h), twins of kernels/cuda/adaln.h:
//   layer_norm_modulate: y = (x - mean) * rstd * (1 + scale) + shift   (LayerNorm, no affine)
//   gated_residual:      out = x + gate * y
// and their backward. x, y, out and their gradients are [B, T, C] row-major contiguous; shift,
// scale, gate and their gradients are [B, C] contiguous, one vector per batch item broadcast over
// its T tokens; mean and rstd are [B * T]. T is f32 or f64 for every operand. Every output is
// overwritten. Arithmetic runs in double; row statistics (biased variance, two passes, eps inside
// the sqrt, as layer_norm) and the sums over tokens accumulate in index order, so results do not
// depend on the thread count.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <vector>

#include "kernels/cpu/thread_pool.h"

namespace loom::kernels::cpu {

namespace adaln_detail {

inline int64_t row_grain(int64_t cols) {
  return std::max<int64_t>(1, (int64_t(1) << 14) / std::max<int64_t>(cols, 1));
}

// Calls f(r) for every row r < rows, in parallel chunks.
template <class F>
void for_each_row(int64_t rows, int64_t cols, F&& f) {
  parallel_for(0, rows, row_grain(cols), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) f(r);
  });
}

// out[b, c] = sum over t < tokens, in order, of term(b * tokens + t, c) for each term, in parallel
// over (batch item, block of columns).
template <class T, class... Terms>
void sum_over_tokens(int64_t batch, int64_t tokens, int64_t cols, std::initializer_list<T*> outs,
                     Terms&&... terms) {
  constexpr int64_t kBlock = 256;
  const int64_t blocks = (cols + kBlock - 1) / kBlock;
  parallel_for(0, batch * blocks, 1, [&](int64_t i0, int64_t i1) {
    std::vector<double> acc(static_cast<size_t>(kBlock * sizeof...(Terms)));
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = i / blocks, c0 = i % blocks * kBlock, c1 = std::min(cols, c0 + kBlock);
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t t = 0; t < tokens; ++t) {
        double* a = acc.data();
        const auto add = [&](auto&& term) {
          for (int64_t c = c0; c < c1; ++c) a[c - c0] += term(b * tokens + t, c);
          a += kBlock;
        };
        (add(terms), ...);
      }
      const double* a = acc.data();
      for (T* out : outs) {
        for (int64_t c = c0; c < c1; ++c) out[b * cols + c] = T(a[c - c0]);
        a += kBlock;
      }
    }
  });
}

}  // namespace adaln_detail

// y = LN(x) * (1 + scale) + shift; mean and rstd of each row are written too.
template <class T>
void layer_norm_modulate_forward(const T* x, const T* shift, const T* scale, T* y, T* mean, T* rstd,
                                 int64_t batch, int64_t tokens, int64_t cols, double eps) {
  if (cols <= 0) return;
  adaln_detail::for_each_row(batch * tokens, cols, [&](int64_t r) {
    const T* xr = x + r * cols;
    const T* sh = shift + r / tokens * cols;
    const T* sc = scale + r / tokens * cols;
    double s = 0;
    for (int64_t i = 0; i < cols; ++i) s += double(xr[i]);
    const double mu = s / double(cols);
    double ss = 0;
    for (int64_t i = 0; i < cols; ++i) ss += (double(xr[i]) - mu) * (double(xr[i]) - mu);
    const double rs = 1.0 / std::sqrt(ss / double(cols) + eps);
    mean[r] = T(mu);
    rstd[r] = T(rs);
    for (int64_t i = 0; i < cols; ++i) {
      const double z = (double(xr[i]) - mu) * rs;
      y[r * cols + i] = T(z * (1.0 + double(sc[i])) + double(sh[i]));
    }
  });
}

// With g = dy, gz = g * (1 + scale) and x_hat = (x - mean) * rstd:
//   dx = rstd * (gz - mean_C(gz) - x_hat * mean_C(gz * x_hat)),
//   dshift[b] = sum_t g,  dscale[b] = sum_t g * x_hat.
// dres (may be null) is added to dx: the gradient of a residual use of x.
template <class T>
void layer_norm_modulate_backward(const T* x, const T* scale, const T* mean, const T* rstd,
                                  const T* dy, const T* dres, T* dx, T* dshift, T* dscale,
                                  int64_t batch, int64_t tokens, int64_t cols) {
  if (cols <= 0) return;
  const auto x_hat = [&](int64_t r, int64_t c) {
    return (double(x[r * cols + c]) - double(mean[r])) * double(rstd[r]);
  };
  adaln_detail::for_each_row(batch * tokens, cols, [&](int64_t r) {
    const T* sc = scale + r / tokens * cols;
    const T* g = dy + r * cols;
    double sum_gz = 0, sum_gzx = 0;
    for (int64_t c = 0; c < cols; ++c) {
      const double gz = double(g[c]) * (1.0 + double(sc[c]));
      sum_gz += gz;
      sum_gzx += gz * x_hat(r, c);
    }
    const double mean_gz = sum_gz / double(cols), mean_gzx = sum_gzx / double(cols);
    for (int64_t c = 0; c < cols; ++c) {
      const double gz = double(g[c]) * (1.0 + double(sc[c]));
      const double res = dres ? double(dres[r * cols + c]) : 0.0;
      dx[r * cols + c] = T(res + double(rstd[r]) * (gz - mean_gz - x_hat(r, c) * mean_gzx));
    }
  });
  adaln_detail::sum_over_tokens<T>(
      batch, tokens, cols, {dshift, dscale},
      [&](int64_t r, int64_t c) { return double(dy[r * cols + c]); },
      [&](int64_t r, int64_t c) { return double(dy[r * cols + c]) * x_hat(r, c); });
}

// out = x + gate * y.
template <class T>
void gated_residual_forward(const T* x, const T* gate, const T* y, T* out, int64_t batch,
                            int64_t tokens, int64_t cols) {
  if (cols <= 0) return;
  adaln_detail::for_each_row(batch * tokens, cols, [&](int64_t r) {
    const T* gt = gate + r / tokens * cols;
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t i = r * cols + c;
      out[i] = T(double(x[i]) + double(gt[c]) * double(y[i]));
    }
  });
}

// dy = dout * gate, dgate[b] = sum_t dout * y (dx is dout itself: nothing to compute).
template <class T>
void gated_residual_backward(const T* gate, const T* y, const T* dout, T* dy, T* dgate,
                             int64_t batch, int64_t tokens, int64_t cols) {
  if (cols <= 0) return;
  adaln_detail::for_each_row(batch * tokens, cols, [&](int64_t r) {
    const T* gt = gate + r / tokens * cols;
    for (int64_t c = 0; c < cols; ++c)
      dy[r * cols + c] = T(double(dout[r * cols + c]) * double(gt[c]));
  });
  adaln_detail::sum_over_tokens<T>(batch, tokens, cols, {dgate}, [&](int64_t r, int64_t c) {
    return double(dout[r * cols + c]) * double(y[r * cols + c]);
  });
}

}  // namespace loom::kernels::cpu
