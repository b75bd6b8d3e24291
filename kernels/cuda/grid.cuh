#pragma once
// The grid-stride loop every 1-D CUDA kernel of loom uses:
//   for (int64_t i = grid_index(); i < n; i += grid_step()) ...
// so a launch of any size (blocks_for in context.h caps it) covers n items.
#include <cstdint>

namespace loom::kernels::cuda {

__device__ __forceinline__ int64_t grid_index() {
  return int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_step() {
  return int64_t(gridDim.x) * blockDim.x;
}

}  // namespace loom::kernels::cuda
