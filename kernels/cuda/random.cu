// CUDA random numbers of kernels.h: Philox4x32-10 fills, value for value the host generator's.
//
// Launch shape: one thread per counter (four outputs), 256 threads per block, grid-stride.
#include <array>

#include "kernels/cuda/context.h"
#include "kernels/cuda/grid.cuh"
#include "kernels/cuda/kernels.h"
#include "kernels/philox.h"

namespace loom::kernels::cuda {

namespace {

__global__ void philox_kernel(float* out, int64_t n, uint64_t seed, uint64_t stream,
                              uint64_t first, Distribution dist) {
  const int64_t blocks = (n + 3) / 4;
  for (int64_t b = grid_index(); b < blocks; b += grid_step()) {
    const std::array<uint32_t, 4> w = philox4x32(seed, first + uint64_t(b), stream);
    for (int j = 0; j < 4 && 4 * b + j < n; ++j) {
      float v;
      if (dist == Distribution::uniform) {
        v = u32_to_unit(w[j]);
      } else {
        const int pair = j / 2;
        const double r = sqrt(-2.0 * log(double(u32_to_unit_open0(w[2 * pair]))));
        const double theta = 2.0 * 3.14159265358979323846 * double(u32_to_unit(w[2 * pair + 1]));
        v = float(j % 2 == 0 ? r * cos(theta) : r * sin(theta));
      }
      out[4 * b + j] = v;
    }
  }
}

}  // namespace

void philox_fill(float* out, int64_t n, uint64_t seed, uint64_t stream, uint64_t first,
                 Distribution dist) {
  if (n == 0) return;
  constexpr int kThreads = 256;
  philox_kernel<<<blocks_for((n + 3) / 4, kThreads), kThreads, 0, compute_stream()>>>(
      out, n, seed, stream, first, dist);
  check_launch("philox_fill");
}

}  // namespace loom::kernels::cuda
