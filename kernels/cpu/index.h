#pragma once
// CPU kernels behind the index ops (index_select, gather, scatter_add, index_add, topk).
// Shapes and strides are in elements. Index arrays hold i32 or i64 values that the caller has
// already checked with first_out_of_range; the kernels do not check them again. The kernels that
// only move data (index_select, gather) may be instantiated on unsigned integers of the element
// size, so they serve every dtype. The accumulating kernels (index_add, scatter_add) add into
// `out` (+=) and give bit-identical results for any thread count: work is split only between
// positions that never write the same output element, and each output element receives its
// contributions in increasing index position.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include "kernels/cpu/strided.h"
#include "kernels/cpu/thread_pool.h"

namespace loom::kernels::cpu {

// Position of the first of the n indices outside [0, size), or -1 when all lie in range.
template <class I>
int64_t first_out_of_range(const I* idx, int64_t n, int64_t size) {
  for (int64_t i = 0; i < n; ++i) {
    if (idx[i] < 0 || int64_t(idx[i]) >= size) return i;
  }
  return -1;
}

// Calls f(base) once per fiber along `dim` of `shape` (the positions whose coordinate `dim` is
// 0), fibers in parallel; base[k] is that position's offset under strides[k]. Walking the fiber
// is left to f, so one thread owns a whole fiber.
template <size_t K, class F>
void for_each_fiber(int ndim, const int64_t* shape, int dim,
                    const std::array<const int64_t*, K>& strides, F&& f) {
  int64_t fibers = 1;
  for (int d = 0; d < ndim; ++d) {
    if (d != dim) fibers *= shape[d];
  }
  if (fibers == 0) return;
  parallel_for(0, fibers, row_grain(shape[dim]), [&](int64_t f0, int64_t f1) {
    for (int64_t r = f0; r < f1; ++r) {
      std::array<int64_t, K> base{};
      int64_t rem = r;
      for (int d = ndim - 1; d >= 0; --d) {
        if (d == dim) continue;
        const int64_t i = rem % shape[d];
        rem /= shape[d];
        for (size_t k = 0; k < K; ++k) base[k] += i * strides[k][d];
      }
      f(base);
    }
  });
}

// out[o, j, :] = x[o, idx[j], :] for x [outer, n, inner] and out [outer, m, inner], contiguous.
template <class T, class I>
void index_select(const T* x, T* out, const I* idx, int64_t outer, int64_t n, int64_t m,
                  int64_t inner) {
  parallel_for(0, outer * m, row_grain(inner), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t o = r / m, j = r % m;
      const T* src = x + (o * n + int64_t(idx[j])) * inner;
      std::copy(src, src + inner, out + r * inner);
    }
  });
}

// out[o, idx[j], :] += src[o, j, :] for j = 0 .. m-1, with out [outer, n, inner] and
// src [outer, m, inner], contiguous.
template <class T, class I>
void index_add(T* out, const T* src, const I* idx, int64_t outer, int64_t n, int64_t m,
               int64_t inner) {
  // Tasks are (o, block of inner columns); repeated indices then meet inside one task, where j
  // runs in order.
  const int64_t block = std::clamp<int64_t>(inner, 1, 1024);
  const int64_t blocks = (inner + block - 1) / block;
  const int64_t grain =
      std::max<int64_t>(1, (int64_t(1) << 15) / (block * std::max<int64_t>(m, 1)));
  parallel_for(0, outer * blocks, grain, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t o = t / blocks, c0 = (t % blocks) * block, c1 = std::min(inner, c0 + block);
      for (int64_t j = 0; j < m; ++j) {
        T* dst = out + (o * n + int64_t(idx[j])) * inner;
        const T* s = src + (o * m + j) * inner;
        for (int64_t c = c0; c < c1; ++c) dst[c] += s[c];
      }
    }
  });
}

// out[p] = x[p with coordinate `dim` replaced by idx[p]] for every position p of `shape` (the
// index's shape). x, idx and out are read and written through their strides.
template <class T, class I>
void gather(int ndim, const int64_t* shape, int dim, const T* x, const int64_t* x_strides,
            const I* idx, const int64_t* idx_strides, T* out, const int64_t* out_strides) {
  std::vector<int64_t> xs(x_strides, x_strides + ndim);
  const int64_t x_dim_stride = xs[size_t(dim)];
  xs[size_t(dim)] = 0;  // the coordinate along dim comes from the index instead
  for_each_row<3>(ndim, shape, {xs.data(), idx_strides, out_strides},
                  [&](const auto& base, int64_t n, const auto& step) {
                    const T* xb = x + base[0];
                    const I* ib = idx + base[1];
                    T* ob = out + base[2];
                    for (int64_t i = 0; i < n; ++i) {
                      ob[i * step[2]] = xb[i * step[0] + int64_t(ib[i * step[1]]) * x_dim_stride];
                    }
                  });
}

// out[p with coordinate `dim` replaced by idx[p]] += src[p] for every position p of `shape`
// (the index's shape), all three operands strided.
template <class T, class I>
void scatter_add(int ndim, const int64_t* shape, int dim, T* out, const int64_t* out_strides,
                 const I* idx, const int64_t* idx_strides, const T* src,
                 const int64_t* src_strides) {
  const int64_t len = shape[dim], os = out_strides[dim];
  const int64_t is = idx_strides[dim], ss = src_strides[dim];
  // Different fibers differ in a coordinate other than dim, so they never share an output element.
  for_each_fiber<3>(ndim, shape, dim, {out_strides, idx_strides, src_strides},
                    [&](const auto& base) {
                      T* o = out + base[0];
                      const I* ib = idx + base[1];
                      const T* s = src + base[2];
                      for (int64_t j = 0; j < len; ++j) o[int64_t(ib[j * is]) * os] += s[j * ss];
                    });
}

// For every fiber along `dim` of x (`shape`, length n there), writes its k largest values (or
// smallest when !largest) in rank order to `values` and their positions along dim to `indices`;
// both outputs have k along dim. NaN ranks above every number; equal values rank by lower
// position, so the result is unique.
template <class T>
void topk(int ndim, const int64_t* shape, int dim, const T* x, const int64_t* x_strides, int64_t k,
          bool largest, T* values, const int64_t* v_strides, int64_t* indices,
          const int64_t* i_strides) {
  const int64_t n = shape[dim], xs = x_strides[dim], vs = v_strides[dim], is = i_strides[dim];
  if (n == 0 || k == 0) return;
  auto above = [](T a, T b) {
    if constexpr (std::is_floating_point_v<T>) {
      if (std::isnan(a)) return !std::isnan(b);
      if (std::isnan(b)) return false;
    }
    return a > b;
  };
  auto before = [&](const std::pair<T, int64_t>& a, const std::pair<T, int64_t>& b) {
    const bool a_wins = largest ? above(a.first, b.first) : above(b.first, a.first);
    const bool b_wins = largest ? above(b.first, a.first) : above(a.first, b.first);
    return a_wins || (!b_wins && a.second < b.second);
  };
  for_each_fiber<3>(ndim, shape, dim, {x_strides, v_strides, i_strides}, [&](const auto& base) {
    thread_local std::vector<std::pair<T, int64_t>> buf;
    buf.resize(size_t(n));
    const T* xb = x + base[0];
    for (int64_t i = 0; i < n; ++i) buf[size_t(i)] = {xb[i * xs], i};
    if (k < n) std::nth_element(buf.begin(), buf.begin() + k, buf.end(), before);
    std::sort(buf.begin(), buf.begin() + k, before);
    T* vb = values + base[1];
    int64_t* ib = indices + base[2];
    for (int64_t j = 0; j < k; ++j) {
      vb[j * vs] = buf[size_t(j)].first;
      ib[j * is] = buf[size_t(j)].second;
    }
  });
}

}  // namespace loom::kernels::cpu
