#pragma once
// Row reductions: x is [rows, n] contiguous, y is [rows]. Every reduction over arbitrary dims is
// run as this after the core permutes the reduced dims last. Floating sums accumulate in double
// and integer sums in int64, in a fixed order, so results are deterministic.
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "kernels/cpu/thread_pool.h"

namespace loom::kernels::cpu {

enum class RowReduce { sum, max, min };

template <class T>
inline bool is_nan(T v) {
  if constexpr (std::is_floating_point_v<T>) return std::isnan(v);
  return false;
}

template <class T>
void reduce_rows(const T* x, T* y, int64_t rows, int64_t n, RowReduce kind) {
  parallel_for(0, rows, std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(n, 1)),
               [&](int64_t r0, int64_t r1) {
                 for (int64_t r = r0; r < r1; ++r) {
                   const T* row = x + r * n;
                   using Acc = std::conditional_t<std::is_integral_v<T>, int64_t, double>;
                   if (kind == RowReduce::sum) {
                     Acc acc = 0;
                     for (int64_t i = 0; i < n; ++i) acc += Acc(row[i]);
                     y[r] = T(acc);
                   } else if (kind == RowReduce::max) {
                     T m = std::numeric_limits<T>::lowest();
                     for (int64_t i = 0; i < n; ++i)
                       m = (row[i] > m || is_nan(row[i])) ? row[i] : m;
                     y[r] = m;
                   } else {
                     T m = std::numeric_limits<T>::max();
                     for (int64_t i = 0; i < n; ++i)
                       m = (row[i] < m || is_nan(row[i])) ? row[i] : m;
                     y[r] = m;
                   }
                 }
               });
}

// idx[r] = first index of the max (or min) of row r.
template <class T>
void arg_reduce_rows(const T* x, int64_t* idx, int64_t rows, int64_t n, bool is_max) {
  parallel_for(0, rows, std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(n, 1)),
               [&](int64_t r0, int64_t r1) {
                 for (int64_t r = r0; r < r1; ++r) {
                   const T* row = x + r * n;
                   int64_t best = 0;
                   for (int64_t i = 1; i < n; ++i)
                     if (is_max ? row[i] > row[best] : row[i] < row[best]) best = i;
                   idx[r] = best;
                 }
               });
}

}  // namespace loom::kernels::cpu
