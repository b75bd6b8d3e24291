#pragma once
// Vectorized access for the CUDA kernels (row kernels, vectorized.cuh's maps, the MoE and GELU
// kernels): V consecutive elements of T moved as one aligned load or store. Callers check that
// the row and V * sizeof(T) are aligned.
#include "kernels/cuda/dtype_cuda.cuh"

namespace loom::kernels::cuda {

template <class T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

// Pack i of a row, as stored.
template <int V, class T>
__device__ __forceinline__ Pack<T, V> load_pack(const T* row, int64_t i) {
  return reinterpret_cast<const Pack<T, V>*>(row)[i];
}
template <int V, class T>
__device__ __forceinline__ void store_pack(T* row, int64_t i, const Pack<T, V>& p) {
  reinterpret_cast<Pack<T, V>*>(row)[i] = p;
}

// Pack i of a row converted to the compute type C, and back.
template <int V, class C, class T>
__device__ __forceinline__ void load_pack(const T* row, int64_t i, C (&out)[V]) {
  const Pack<T, V> q = load_pack<V>(row, i);
#pragma unroll
  for (int j = 0; j < V; ++j) out[j] = to_compute<C>(q.v[j]);
}
template <int V, class T, class C>
__device__ __forceinline__ void store_pack(T* row, int64_t i, const C (&in)[V]) {
  Pack<T, V> q;
#pragma unroll
  for (int j = 0; j < V; ++j) q.v[j] = from_compute<T>(in[j]);
  store_pack<V>(row, i, q);
}

}  // namespace loom::kernels::cuda
