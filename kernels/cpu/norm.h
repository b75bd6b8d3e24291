#pragma once
// Normalization row kernels over the last dim. x and y are [rows, C] row-major contiguous; weight
// and bias are [C] or nullptr (no affine term); mean and rstd are [rows]. Every output is
// overwritten. Row statistics accumulate in double, in index order, so results do not depend on
// the thread count. The variance is the biased (population) one, as in PyTorch.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/cpu/thread_pool.h"

namespace loom::kernels::cpu {

inline int64_t norm_row_grain(int64_t cols) {
  return std::max<int64_t>(1, (int64_t(1) << 14) / std::max<int64_t>(cols, 1));
}

// mean[r] = mean(x[r]), rstd[r] = 1 / sqrt(var(x[r]) + eps),
// y[r] = (x[r] - mean[r]) * rstd[r] [* weight] [+ bias].
template <class T>
void layer_norm_forward(const T* x, const T* weight, const T* bias, T* y, T* mean, T* rstd,
                        int64_t rows, int64_t cols, double eps) {
  if (rows <= 0 || cols <= 0) return;
  parallel_for(0, rows, norm_row_grain(cols), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* xr = x + r * cols;
      T* yr = y + r * cols;
      double s = 0;
      for (int64_t i = 0; i < cols; ++i) s += double(xr[i]);
      const double mu = s / double(cols);
      // Two passes: the centered sum of squares does not cancel catastrophically.
      double ss = 0;
      for (int64_t i = 0; i < cols; ++i) {
        const double d = double(xr[i]) - mu;
        ss += d * d;
      }
      const double rs = 1.0 / std::sqrt(ss / double(cols) + eps);
      mean[r] = T(mu);
      rstd[r] = T(rs);
      for (int64_t i = 0; i < cols; ++i) {
        double v = (double(xr[i]) - mu) * rs;
        if (weight) v *= double(weight[i]);
        if (bias) v += double(bias[i]);
        yr[i] = T(v);
      }
    }
  });
}

// rstd[r] = 1 / sqrt(mean(x[r]^2) + eps), y[r] = x[r] * rstd[r] [* weight].
template <class T>
void rms_norm_forward(const T* x, const T* weight, T* y, T* rstd, int64_t rows, int64_t cols,
                      double eps) {
  if (rows <= 0 || cols <= 0) return;
  parallel_for(0, rows, norm_row_grain(cols), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* xr = x + r * cols;
      T* yr = y + r * cols;
      double ss = 0;
      for (int64_t i = 0; i < cols; ++i) ss += double(xr[i]) * double(xr[i]);
      const double rs = 1.0 / std::sqrt(ss / double(cols) + eps);
      rstd[r] = T(rs);
      for (int64_t i = 0; i < cols; ++i) {
        double v = double(xr[i]) * rs;
        if (weight) v *= double(weight[i]);
        yr[i] = T(v);
      }
    }
  });
}

}  // namespace loom::kernels::cpu
