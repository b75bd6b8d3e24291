#pragma once
// Device-side strided indexing for the elementwise, copy and index kernels: the offsets of a
// linear position in an IterShape for up to four operands at once (one division per dim).
#include <cstdint>

#include "kernels/cuda/kernels.h"

namespace loom::kernels::cuda {

// Operand strides packed for a kernel argument (by value into constant parameter space).
template <int K>
struct StridePack {
  int ndim = 0;
  int64_t sizes[kMaxDims] = {};
  int64_t strides[K][kMaxDims] = {};
};

template <int K>
StridePack<K> pack_strides(const IterShape& shape, const Operand* const (&ops)[K]) {
  StridePack<K> p;
  p.ndim = shape.ndim;
  for (int d = 0; d < shape.ndim; ++d) {
    p.sizes[d] = shape.sizes[d];
    for (int k = 0; k < K; ++k) p.strides[k][d] = ops[k]->strides[d];
  }
  return p;
}

// off[k] = element offset of linear position i (row-major over sizes) in operand k.
// The outermost dim takes what is left without a division, so one dim costs none.
template <int K>
__device__ __forceinline__ void strided_offsets(const StridePack<K>& p, int64_t i, int64_t* off) {
  for (int k = 0; k < K; ++k) off[k] = 0;
  for (int d = p.ndim - 1; d >= 1; --d) {
    const int64_t size = p.sizes[d];
    const int64_t idx = i % size;
    i /= size;
    for (int k = 0; k < K; ++k) off[k] += idx * p.strides[k][d];
  }
  if (p.ndim > 0)
    for (int k = 0; k < K; ++k) off[k] += i * p.strides[k][0];
}

// Rewrites shape and the operands' strides to the fewest dims that address the same elements:
// size-1 dims are dropped and a dim merges into the next when every operand steps across it
// uniformly (stride[d] == stride[d + 1] * size[d + 1]). Host scalars (null data) are ignored. An
// elementwise kernel then does one division per remaining dim (usually one or two).
inline void collapse_dims(IterShape& shape, Operand* const* ops, int count) {
  IterShape out;
  int64_t strides[8][kMaxDims] = {};
  for (int d = 0; d < shape.ndim; ++d) {
    if (shape.sizes[d] == 1) continue;
    bool merge = out.ndim > 0;
    for (int k = 0; k < count && merge; ++k) {
      if (!ops[k]->data) continue;
      merge = strides[k][out.ndim - 1] == ops[k]->strides[d] * shape.sizes[d];
    }
    if (merge) {
      out.sizes[out.ndim - 1] *= shape.sizes[d];
      for (int k = 0; k < count; ++k) strides[k][out.ndim - 1] = ops[k]->strides[d];
    } else {
      out.sizes[out.ndim] = shape.sizes[d];
      for (int k = 0; k < count; ++k) strides[k][out.ndim] = ops[k]->strides[d];
      ++out.ndim;
    }
  }
  shape = out;
  for (int k = 0; k < count; ++k)
    for (int d = 0; d < kMaxDims; ++d) ops[k]->strides[d] = d < out.ndim ? strides[k][d] : 0;
}

}  // namespace loom::kernels::cuda
