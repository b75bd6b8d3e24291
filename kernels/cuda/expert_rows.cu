// CUDA kernels of moe.h's dispatch and combine of expert-sorted rows. One warp per output row
// (a token for combine_rows_forward and gather_slot_sum, a sorted row for combine_rows_backward),
// eight rows per block; lanes step over the row V elements at a time (V = 4 when the width and
// every pointer allow 4-element accesses, else 1). The slot loop runs inside the lane, in slot
// order, so every sum has one fixed order.
#include <stdexcept>
#include <string>

#include "kernels/cuda/context.h"
#include "kernels/cuda/dtype_cuda.cuh"
#include "kernels/cuda/moe.h"
#include "kernels/cuda/pack.cuh"

namespace loom::kernels::cuda {

namespace {

constexpr int kRowsPerBlock = 8;

__device__ __forceinline__ int64_t warp_row() {
  return int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32;
}

template <int V, class A, class Y>
__global__ void combine_forward_kernel(ExpertRows r, const A* __restrict__ base,
                                       const Y* __restrict__ y, const A* __restrict__ weight,
                                       A* __restrict__ out) {
  using C = typename Compute<A>::type;
  const int64_t t = warp_row();
  if (t >= r.n_tokens) return;
  const int lane = threadIdx.x % 32;
  const int64_t* slots = r.position + t * r.top_k;
  for (int64_t c = int64_t(lane) * V; c < r.width; c += 32 * V) {
    C acc[V];
    load_pack<V>(base + t * r.width, c / V, acc);
    for (int64_t j = 0; j < r.top_k; ++j) {
      const int64_t row = slots[j];
      if (row < 0) continue;
      const C w = to_compute<C>(weight[row]);
      C v[V];
      load_pack<V>(y + row * r.width, c / V, v);
#pragma unroll
      for (int i = 0; i < V; ++i) acc[i] += w * v[i];
    }
    store_pack<V>(out + t * r.width, c / V, acc);
  }
}

template <int V, class A, class Y>
__global__ void combine_backward_kernel(ExpertRows r, const A* __restrict__ g,
                                        const Y* __restrict__ y, const A* __restrict__ weight,
                                        Y* __restrict__ dy, A* __restrict__ dweight) {
  using C = typename Compute<A>::type;
  const int64_t row = warp_row();
  if (row >= r.n_rows) return;
  const int lane = threadIdx.x % 32;
  const A* grow = g + r.token[row] * r.width;
  const C w = to_compute<C>(weight[row]);
  C dot = 0;
  for (int64_t c = int64_t(lane) * V; c < r.width; c += 32 * V) {
    C gv[V], yv[V], dv[V];
    load_pack<V>(grow, c / V, gv);
    load_pack<V>(y + row * r.width, c / V, yv);
#pragma unroll
    for (int i = 0; i < V; ++i) {
      dv[i] = w * gv[i];
      dot += gv[i] * yv[i];
    }
    store_pack<V>(dy + row * r.width, c / V, dv);
  }
#pragma unroll
  for (int o = 16; o > 0; o /= 2) dot += __shfl_xor_sync(0xffffffffu, dot, o);
  if (lane == 0) dweight[row] = from_compute<A>(dot);
}

template <int V, class T>
__global__ void gather_slot_sum_kernel(ExpertRows r, const T* __restrict__ drows,
                                       T* __restrict__ dx) {
  using C = typename Compute<T>::type;
  const int64_t t = warp_row();
  if (t >= r.n_tokens) return;
  const int lane = threadIdx.x % 32;
  const int64_t* slots = r.position + t * r.top_k;
  for (int64_t c = int64_t(lane) * V; c < r.width; c += 32 * V) {
    C acc[V] = {};
    for (int64_t j = 0; j < r.top_k; ++j) {
      const int64_t row = slots[j];
      if (row < 0) continue;
      C v[V];
      load_pack<V>(drows + row * r.width, c / V, v);
#pragma unroll
      for (int i = 0; i < V; ++i) acc[i] += v[i];
    }
    store_pack<V>(dx + t * r.width, c / V, acc);
  }
}

// launch(integral_constant V): V = 4 when the width is a multiple of 4 and every pointer is
// aligned to 4 of its elements, else 1.
template <class L>
void with_row_vectors(int64_t width, std::initializer_list<std::pair<const void*, int>> ptrs,
                      L&& launch) {
  bool four = width % 4 == 0;
  for (const auto& [p, bytes] : ptrs)
    four = four && reinterpret_cast<uintptr_t>(p) % uintptr_t(4 * bytes) == 0;
  if (four) return launch(std::integral_constant<int, 4>{});
  launch(std::integral_constant<int, 1>{});
}

dim3 warp_rows_grid(int64_t rows) {
  return dim3(unsigned((rows + kRowsPerBlock - 1) / kRowsPerBlock));
}

// f(A tag, Y tag) for the supported (acc, rows) pairs.
template <class F>
void dispatch_acc_rows(DType acc, DType rows, const char* kernel, F&& f) {
  if (rows == acc) {
    dispatch_float(acc, kernel, [&](auto tag) { f(tag, tag); });
  } else if (acc == DType::f32 && rows == DType::bf16) {
    f(float{}, __nv_bfloat16{});
  } else if (acc == DType::f32 && rows == DType::f16) {
    f(float{}, __half{});
  } else {
    throw std::runtime_error(std::string("[cuda] ") + kernel + ": rows of dtype #" +
                             std::to_string(int(rows)) + " with accumulator dtype #" +
                             std::to_string(int(acc)) + " are not supported");
  }
}

}  // namespace

void combine_rows_forward(const ExpertRows& r, const void* base, const void* y, const void* weight,
                          void* out, DType acc, DType rows) {
  if (r.n_tokens == 0 || r.width == 0) return;
  dispatch_acc_rows(acc, rows, "combine_rows_forward", [&](auto atag, auto ytag) {
    using A = decltype(atag);
    using Y = decltype(ytag);
    with_row_vectors(
        r.width, {{base, int(sizeof(A))}, {y, int(sizeof(Y))}, {out, int(sizeof(A))}}, [&](auto v) {
          combine_forward_kernel<decltype(v)::value, A, Y>
              <<<warp_rows_grid(r.n_tokens), kRowsPerBlock * 32, 0, compute_stream()>>>(
                  r, static_cast<const A*>(base), static_cast<const Y*>(y),
                  static_cast<const A*>(weight), static_cast<A*>(out));
        });
  });
  check_launch("combine_rows_forward");
}

void combine_rows_backward(const ExpertRows& r, const void* g, const void* y, const void* weight,
                           void* dy, void* dweight, DType acc, DType rows) {
  if (r.n_rows == 0) return;
  dispatch_acc_rows(acc, rows, "combine_rows_backward", [&](auto atag, auto ytag) {
    using A = decltype(atag);
    using Y = decltype(ytag);
    with_row_vectors(
        r.width, {{g, int(sizeof(A))}, {y, int(sizeof(Y))}, {dy, int(sizeof(Y))}}, [&](auto v) {
          combine_backward_kernel<decltype(v)::value, A, Y>
              <<<warp_rows_grid(r.n_rows), kRowsPerBlock * 32, 0, compute_stream()>>>(
                  r, static_cast<const A*>(g), static_cast<const Y*>(y),
                  static_cast<const A*>(weight), static_cast<Y*>(dy), static_cast<A*>(dweight));
        });
  });
  check_launch("combine_rows_backward");
}

void gather_slot_sum(const ExpertRows& r, const void* drows, void* dx, DType dtype) {
  if (r.n_tokens == 0 || r.width == 0) return;
  dispatch_float(dtype, "gather_slot_sum", [&](auto tag) {
    using T = decltype(tag);
    with_row_vectors(r.width, {{drows, int(sizeof(T))}, {dx, int(sizeof(T))}}, [&](auto v) {
      gather_slot_sum_kernel<decltype(v)::value, T>
          <<<warp_rows_grid(r.n_tokens), kRowsPerBlock * 32, 0, compute_stream()>>>(
              r, static_cast<const T*>(drows), static_cast<T*>(dx));
    });
  });
  check_launch("gather_slot_sum");
}

}  // namespace loom::kernels::cuda
