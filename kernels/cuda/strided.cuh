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
template <int K>
__device__ __forceinline__ void strided_offsets(const StridePack<K>& p, int64_t i, int64_t* off) {
  for (int k = 0; k < K; ++k) off[k] = 0;
  for (int d = p.ndim - 1; d >= 0; --d) {
    const int64_t size = p.sizes[d];
    const int64_t idx = i % size;
    i /= size;
    for (int k = 0; k < K; ++k) off[k] += idx * p.strides[k][d];
  }
}

// True when the operand is a dense row-major array over the shape (offset i is element i).
inline bool is_dense(const IterShape& shape, const Operand& op) {
  if (!op.data) return false;
  int64_t expect = 1;
  for (int d = shape.ndim - 1; d >= 0; --d) {
    if (shape.sizes[d] != 1 && op.strides[d] != expect) return false;
    expect *= shape.sizes[d];
  }
  return true;
}

}  // namespace loom::kernels::cuda
