#pragma once
// Row-wise iteration over N-d strided operands: the building block of elementwise kernels.
// Shapes and strides are in elements. The last dim is the "row"; the callback receives the row's
// base offset in each operand, the row length and each operand's stride along the row, so the
// inner loop is a plain (often unit-stride, vectorizable) loop.
#include <array>
#include <cstdint>
#include <type_traits>

#include "kernels/cpu/thread_pool.h"

namespace loom::kernels::cpu {

// Rows per parallel chunk so each chunk holds about 32K elements.
inline int64_t row_grain(int64_t row_len) {
  return std::max<int64_t>(1, (int64_t(1) << 15) / std::max<int64_t>(row_len, 1));
}

// f(std::array<int64_t, K> base, int64_t n, std::array<int64_t, K> step) for every row.
template <size_t K, class F>
void for_each_row(int ndim, const int64_t* shape, const std::array<const int64_t*, K>& strides,
                  F&& f) {
  if (ndim == 0) {
    std::array<int64_t, K> base{}, step{};
    f(base, int64_t(1), step);
    return;
  }
  const int64_t n = shape[ndim - 1];
  int64_t rows = 1;
  for (int d = 0; d < ndim - 1; ++d) rows *= shape[d];
  if (rows == 0 || n == 0) return;
  std::array<int64_t, K> step;
  for (size_t k = 0; k < K; ++k) step[k] = strides[k][ndim - 1];
  parallel_for(0, rows, row_grain(n), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      std::array<int64_t, K> base{};
      int64_t rem = r;
      for (int d = ndim - 2; d >= 0; --d) {
        const int64_t i = rem % shape[d];
        rem /= shape[d];
        for (size_t k = 0; k < K; ++k) base[k] += i * strides[k][d];
      }
      f(base, n, step);
    }
  });
}

// Value conversion between any two element types, through float/double for the 16-bit ones.
template <class D, class S>
inline D convert(S s) {
  if constexpr (std::is_same_v<D, S>) {
    return s;
  } else if constexpr (std::is_arithmetic_v<D> && std::is_arithmetic_v<S>) {
    return static_cast<D>(s);
  } else if constexpr (std::is_arithmetic_v<S>) {  // to bf16/f16
    return D(static_cast<float>(s));
  } else {  // from bf16/f16
    return convert<D>(static_cast<float>(s));
  }
}

// dst[i] = convert(src[i]) over `shape`, both strided (src may have 0 strides to broadcast).
template <class D, class S>
void strided_copy(int ndim, const int64_t* shape, D* dst, const int64_t* dst_strides, const S* src,
                  const int64_t* src_strides) {
  for_each_row<2>(ndim, shape, {dst_strides, src_strides}, [&](auto base, int64_t n, auto step) {
    D* d = dst + base[0];
    const S* s = src + base[1];
    if (step[0] == 1 && step[1] == 1) {
      for (int64_t i = 0; i < n; ++i) d[i] = convert<D>(s[i]);
    } else {
      for (int64_t i = 0; i < n; ++i) d[i * step[0]] = convert<D>(s[i * step[1]]);
    }
  });
}

}  // namespace loom::kernels::cpu
