#pragma once
// Softmax row kernels: x and y are [rows, n] row-major contiguous; each row is normalized
// independently and y is overwritten (y may not alias x). The row maximum is subtracted before
// exponentiating, and the row sum accumulates in double, in index order, so the result is the same
// for any thread count. A row whose entries are all -inf has no finite maximum: like PyTorch, its
// output is NaN. n == 0 is a no-op.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "kernels/cpu/thread_pool.h"

namespace loom::kernels::cpu {

// y = exp(x - max) / sum(exp(x - max)) per row, or its logarithm when `log` is set:
// y = x - max - log(sum(exp(x - max))).
template <class T>
void softmax_forward(const T* x, T* y, int64_t rows, int64_t n, bool log) {
  if (rows <= 0 || n <= 0) return;
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 14) / n);
  parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* xr = x + r * n;
      T* yr = y + r * n;
      T m = -std::numeric_limits<T>::infinity();
      for (int64_t i = 0; i < n; ++i) m = std::max(m, xr[i]);
      double total = 0;
      if (log) {
        for (int64_t i = 0; i < n; ++i) total += std::exp(double(xr[i]) - double(m));
        const double shift = double(m) + std::log(total);
        for (int64_t i = 0; i < n; ++i) yr[i] = T(double(xr[i]) - shift);
      } else {
        for (int64_t i = 0; i < n; ++i) {
          const T e = std::exp(xr[i] - m);
          yr[i] = e;
          total += double(e);
        }
        const T inv = T(1.0 / total);
        for (int64_t i = 0; i < n; ++i) yr[i] *= inv;
      }
    }
  });
}

}  // namespace loom::kernels::cpu
