#pragma once
// Contiguous elementwise maps with vector memory access, the form a bandwidth-bound kernel over
// contiguous data takes: each thread moves V elements per load and store (V · sizeof ≤ 16 bytes,
// one 128-bit transaction for the widest operand) in a grid-stride loop over whole vectors; the
// last n % V elements are done one at a time. V is the widest the pointers' alignment allows
// (1 when they are not aligned: the plain loop).
//
// Values are loaded from storage type In, converted to the compute type C, mapped by f (a functor
// C -> C or (C, C) -> C) and stored as Out:
//   map1: y[i] = f(x[i])          map2: y[i] = f(a[i], b[i]); a null a or b reads its scalar
#include <cstdint>
#include <initializer_list>
#include <type_traits>
#include <utility>

#include "kernels/cuda/context.h"
#include "kernels/cuda/dtype_cuda.cuh"
#include "kernels/cuda/grid.cuh"
#include "kernels/cuda/pack.cuh"

namespace loom::kernels::cuda {

template <int V, class C, class In, class Out, class F>
__global__ void map1_kernel(const In* x, Out* y, int64_t n, F f) {
  const int64_t packs = n / V;
  for (int64_t p = grid_index(); p < packs; p += grid_step()) {
    const Pack<In, V> in = reinterpret_cast<const Pack<In, V>*>(x)[p];
    Pack<Out, V> out;
#pragma unroll
    for (int j = 0; j < V; ++j) out.v[j] = from_compute<Out>(f(to_compute<C>(in.v[j])));
    reinterpret_cast<Pack<Out, V>*>(y)[p] = out;
  }
  for (int64_t i = packs * V + grid_index(); i < n; i += grid_step())
    y[i] = from_compute<Out>(f(to_compute<C>(x[i])));
}

template <int V, class C, class In, class Out, class F>
__global__ void map2_kernel(const In* a, const In* b, C sa, C sb, Out* y, int64_t n, F f) {
  const int64_t packs = n / V;
  for (int64_t p = grid_index(); p < packs; p += grid_step()) {
    Pack<In, V> va, vb;
    if (a) va = reinterpret_cast<const Pack<In, V>*>(a)[p];
    if (b) vb = reinterpret_cast<const Pack<In, V>*>(b)[p];
    Pack<Out, V> out;
#pragma unroll
    for (int j = 0; j < V; ++j)
      out.v[j] = from_compute<Out>(
          f(a ? to_compute<C>(va.v[j]) : sa, b ? to_compute<C>(vb.v[j]) : sb));
    reinterpret_cast<Pack<Out, V>*>(y)[p] = out;
  }
  for (int64_t i = packs * V + grid_index(); i < n; i += grid_step())
    y[i] = from_compute<Out>(f(a ? to_compute<C>(a[i]) : sa, b ? to_compute<C>(b[i]) : sb));
}

// Calls launch(std::integral_constant<int, V>) with the widest V ≤ 16 / Widest (a power of two)
// for which every pointer of `ptrs` (pointer, element bytes; null ones skipped) is V-aligned.
template <int Widest, class L>
void with_vector_width(std::initializer_list<std::pair<const void*, int>> ptrs, L&& launch) {
  const auto aligned = [&](int v) {
    for (const auto& [p, bytes] : ptrs)
      if (p && reinterpret_cast<uintptr_t>(p) % uintptr_t(v * bytes) != 0) return false;
    return true;
  };
  constexpr int vmax = 16 / Widest;
  if constexpr (vmax >= 8) {
    if (aligned(8)) return launch(std::integral_constant<int, 8>{});
  }
  if constexpr (vmax >= 4) {
    if (aligned(4)) return launch(std::integral_constant<int, 4>{});
  }
  if constexpr (vmax >= 2) {
    if (aligned(2)) return launch(std::integral_constant<int, 2>{});
  }
  launch(std::integral_constant<int, 1>{});
}

template <class In, class Out>
constexpr int widest_bytes() {
  return sizeof(In) > sizeof(Out) ? int(sizeof(In)) : int(sizeof(Out));
}

constexpr int kMapThreads = 256;

template <class C, class In, class Out, class F>
void map1(const In* x, Out* y, int64_t n, F f, cudaStream_t stream) {
  if (n == 0) return;
  with_vector_width<widest_bytes<In, Out>()>(
      {{x, int(sizeof(In))}, {y, int(sizeof(Out))}}, [&](auto width) {
        constexpr int V = decltype(width)::value;
        map1_kernel<V, C><<<blocks_for((n + V - 1) / V, kMapThreads), kMapThreads, 0, stream>>>(
            x, y, n, f);
      });
}

template <class C, class In, class Out, class F>
void map2(const In* a, const In* b, C sa, C sb, Out* y, int64_t n, F f, cudaStream_t stream) {
  if (n == 0) return;
  with_vector_width<widest_bytes<In, Out>()>(
      {{a, int(sizeof(In))}, {b, int(sizeof(In))}, {y, int(sizeof(Out))}}, [&](auto width) {
        constexpr int V = decltype(width)::value;
        map2_kernel<V, C><<<blocks_for((n + V - 1) / V, kMapThreads), kMapThreads, 0, stream>>>(
            a, b, sa, sb, y, n, f);
      });
}

}  // namespace loom::kernels::cuda
