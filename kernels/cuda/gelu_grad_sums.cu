// kernels.h's gelu_tanh_grad_col_sums, in two launches:
//   1. each block covers rows_per_block rows (128, more when the rows would need over 65535
//      blocks) x kColThreads * 8 columns; a thread maps 8 adjacent
//      columns (one 16-byte access per operand and row), walks its block's rows and keeps their
//      8 column sums in f32 registers, then writes them as this block's partial sums
//      [row blocks, cols] (scratch from the caching allocator);
//   2. the partials are added per column: 8 warps split the row blocks (warp w takes w, w + 8,
//      ...), then warp 0 adds the 8 results in warp order, so the sum has one fixed order.
#include <algorithm>
#include <stdexcept>
#include <string>

#include "kernels/cuda/context.h"
#include "kernels/cuda/dtype_cuda.cuh"
#include "kernels/cuda/kernels.h"
#include "kernels/cuda/pack.cuh"
#include "kernels/cuda/runtime.h"
#include "kernels/scalar_fns.h"

namespace loom::kernels::cuda {

namespace {

constexpr int kColThreads = 128;
constexpr int64_t kMinRowsPerBlock = 128;
constexpr int64_t kMaxRowBlocks = 65535;  // gridDim.y
constexpr int kSumWarps = 8;

template <class T>
__global__ void __launch_bounds__(kColThreads)
    gelu_grad_partial_kernel(const T* __restrict__ x, const T* __restrict__ g, T* __restrict__ dx,
                             float* __restrict__ partial, int64_t rows, int64_t cols,
                             int64_t rows_per_block) {
  using P = Pack<T, 8>;
  const int64_t col = (int64_t(blockIdx.x) * kColThreads + threadIdx.x) * 8;
  if (col >= cols) return;
  const int64_t r0 = int64_t(blockIdx.y) * rows_per_block;
  const int64_t r1 = r0 + rows_per_block < rows ? r0 + rows_per_block : rows;
  float sum[8] = {};
#pragma unroll 4
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t i = (r * cols + col) / 8;
    const P vx = reinterpret_cast<const P*>(x)[i], vg = reinterpret_cast<const P*>(g)[i];
    P out;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      out.v[j] = from_compute<T>(
          fn::GeluTanhGrad::f(to_compute<float>(vx.v[j]), to_compute<float>(vg.v[j])));
      sum[j] += to_compute<float>(out.v[j]);
    }
    reinterpret_cast<P*>(dx)[i] = out;
  }
  float4* dst = reinterpret_cast<float4*>(partial + int64_t(blockIdx.y) * cols + col);
  dst[0] = make_float4(sum[0], sum[1], sum[2], sum[3]);
  dst[1] = make_float4(sum[4], sum[5], sum[6], sum[7]);
}

template <class T>
__global__ void __launch_bounds__(kSumWarps * 32)
    col_sums_kernel(const float* __restrict__ partial, int64_t parts, int64_t cols,
                    T* __restrict__ out) {
  __shared__ float warp_sums[kSumWarps][32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t c = int64_t(blockIdx.x) * 32 + lane;
  float acc = 0.f;
  if (c < cols)
    for (int64_t p = warp; p < parts; p += kSumWarps) acc += partial[p * cols + c];
  warp_sums[warp][lane] = acc;
  __syncthreads();
  if (warp != 0 || c >= cols) return;
  float total = 0.f;
#pragma unroll
  for (int w = 0; w < kSumWarps; ++w) total += warp_sums[w][lane];
  out[c] = from_compute<T>(total);
}

}  // namespace

void gelu_tanh_grad_col_sums(const void* x, const void* g, void* dx, void* col_sums, DType dtype,
                             int64_t rows, int64_t cols) {
  const char* what = "gelu_tanh_grad_col_sums";
  if (dtype != DType::bf16 && dtype != DType::f16)
    throw std::runtime_error(std::string("[cuda] ") + what + ": dtype must be bf16 or f16");
  if (cols % 8 != 0)
    throw std::runtime_error(std::string("[cuda] ") + what + ": cols " + std::to_string(cols) +
                             " is not a multiple of 8");
  if (cols == 0) return;
  const int64_t rows_per_block =
      std::max(kMinRowsPerBlock, (rows + kMaxRowBlocks - 1) / kMaxRowBlocks);
  const int64_t parts = (rows + rows_per_block - 1) / rows_per_block;  // 0 rows: sums are 0
  const int device = current_device();
  float* partial = static_cast<float*>(
      device_malloc(size_t(std::max<int64_t>(parts, 1) * cols) * sizeof(float), device));
  const auto launch = [&](auto tag) {
    using T = decltype(tag);
    if (rows > 0) {
      const dim3 grid(unsigned((cols / 8 + kColThreads - 1) / kColThreads), unsigned(parts));
      gelu_grad_partial_kernel<T><<<grid, kColThreads, 0, compute_stream()>>>(
          static_cast<const T*>(x), static_cast<const T*>(g), static_cast<T*>(dx), partial, rows,
          cols, rows_per_block);
    }
    col_sums_kernel<T><<<unsigned((cols + 31) / 32), kSumWarps * 32, 0, compute_stream()>>>(
        partial, parts, cols, static_cast<T*>(col_sums));
  };
  if (dtype == DType::bf16)
    launch(__nv_bfloat16{});
  else
    launch(__half{});
  // Later work is ordered after these kernels on the stream, so the scratch can go back now.
  device_free(partial, device);
  check_launch(what);
}

}  // namespace loom::kernels::cuda
