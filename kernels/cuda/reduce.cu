// CUDA reductions of kernels.h: reduce_rows (sum, max, min), reduce_cols and arg_reduce_rows.
//
// Row launch shape, chosen by row length n: a row per thread when n <= 16, a row per warp when
// n <= 2048, a row per 256-thread block beyond, and for fewer than 512 long rows (a full
// reduction) chunks of a row per block followed by a pass over the chunk results. Each lane accumulates a strided slice of its row
// in the compute type (float for 16/32-bit floats, double for f64 and integers), then lanes
// combine by shuffles (and shared memory across warps). NaN propagates through max/min (and ranks
// as the maximum in argmax), matching the CPU twins in kernels/cpu/reduce.h; the summation order
// differs from the CPU's, so sums agree to rounding, not bitwise.
#include "kernels/cuda/context.h"
#include "kernels/cuda/dtype_cuda.cuh"
#include "kernels/cuda/kernels.h"
#include "kernels/cuda/runtime.h"

#include <algorithm>
#include <stdexcept>

namespace loom::kernels::cuda {

namespace {

template <class C>
__device__ __forceinline__ bool is_nan_v(C v) {
  return v != v;
}

template <class C>
__device__ __forceinline__ C combine(C a, C b, RowReduce kind) {
  switch (kind) {
    case RowReduce::sum: return a + b;
    case RowReduce::max: return (is_nan_v(a) || a >= b) ? a : b;
    default: return (is_nan_v(a) || a <= b) ? a : b;
  }
}

template <class C>
__device__ __forceinline__ C warp_combine(C v, RowReduce kind) {
  for (int o = 16; o > 0; o >>= 1) v = combine(v, __shfl_xor_sync(0xffffffffu, v, o), kind);
  return v;
}

// `lanes` threads (1, 32 or 256) reduce each row; rows_per_block rows per block.
template <class T, int kLanes, class Out = T>
__global__ void reduce_rows_kernel(const T* x, Out* y, int64_t rows, int64_t n, RowReduce kind) {
  using C = typename Compute<T>::type;
  constexpr int kRowsPerBlock = 256 / kLanes;
  const int lane = threadIdx.x % kLanes;
  const int64_t row = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / kLanes;
  const bool active = row < rows;
  C acc = C(0);
  bool have = false;
  if (active) {
    const T* xr = x + row * n;
    for (int64_t j = lane; j < n; j += kLanes) {
      const C v = to_compute<C>(xr[j]);
      acc = have ? combine(acc, v, kind) : v;
      have = true;
    }
  }
  // Lanes that saw no element contribute a neutral value: 0 for sum, the row's first element for
  // max/min.
  if (kLanes > 1) {
    if (!have && active && n > 0) acc = kind == RowReduce::sum ? C(0) : to_compute<C>(x[row * n]);
    if (kLanes >= 32) acc = warp_combine(acc, kind);
    if (kLanes == 256) {
      __shared__ C partial[8];
      if (lane % 32 == 0) partial[lane / 32] = acc;
      __syncthreads();
      if (lane < 32) {
        acc = lane < 8 ? partial[lane] : (kind == RowReduce::sum ? C(0) : partial[0]);
        acc = warp_combine(acc, kind);
      }
    }
  }
  if (active && lane == 0) y[row] = from_compute<Out>(n > 0 ? acc : C(0));
}

// Few long rows (a full reduction, a norm): block b reduces chunk b % parts of row b / parts into
// partial[b] (compute type); a second reduce_rows pass combines the parts of each row. Every chunk
// holds at least one element, whose value seeds max/min (neutral there); sums start at 0.
template <class T>
__global__ void reduce_chunks_kernel(const T* x, typename Compute<T>::type* partial, int64_t n,
                                     int64_t parts, int64_t len, RowReduce kind) {
  using C = typename Compute<T>::type;
  const int64_t row = blockIdx.x / parts, chunk = blockIdx.x % parts;
  const int64_t begin = chunk * len, end = min(n, begin + len);
  const T* xr = x + row * n;
  C acc = kind == RowReduce::sum ? C(0) : to_compute<C>(xr[begin]);
  for (int64_t j = begin + threadIdx.x; j < end; j += blockDim.x)
    acc = combine(acc, to_compute<C>(xr[j]), kind);
  acc = warp_combine(acc, kind);
  __shared__ C warp_part[8];
  if (threadIdx.x % 32 == 0) warp_part[threadIdx.x / 32] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    C total = warp_part[0];
    for (int w = 1; w < int(blockDim.x / 32); ++w) total = combine(total, warp_part[w], kind);
    partial[blockIdx.x] = total;
  }
}

struct Best {
  double v;
  int64_t i;
};
// a beats b: larger (smaller) value, NaN above all, ties to the lower index.
__device__ __forceinline__ bool beats(const Best& a, const Best& b, bool is_max) {
  const bool an = a.v != a.v, bn = b.v != b.v;
  if (an || bn) return an && (!bn || a.i < b.i);
  if (a.v != b.v) return is_max ? a.v > b.v : a.v < b.v;
  return a.i < b.i;
}

template <class T>
__global__ void arg_reduce_kernel(const T* x, int64_t* idx, int64_t n, bool is_max) {
  const int64_t row = blockIdx.x;
  const T* xr = x + row * n;
  Best best{0, -1};
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    const Best c{to_compute<double>(xr[j]), j};
    if (best.i < 0 || beats(c, best, is_max)) best = c;
  }
  for (int o = 16; o > 0; o >>= 1) {
    Best other{__shfl_xor_sync(0xffffffffu, best.v, o), __shfl_xor_sync(0xffffffffu, best.i, o)};
    if (other.i >= 0 && (best.i < 0 || beats(other, best, is_max))) best = other;
  }
  __shared__ Best partial[8];
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = best;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < int(blockDim.x / 32); ++w)
      if (partial[w].i >= 0 && (best.i < 0 || beats(partial[w], best, is_max))) best = partial[w];
    idx[row] = best.i;
  }
}

// Column reduction of contiguous x [outer, rows, cols] (outer = blockIdx.z): a block of 32 x 8
// threads covers 32 columns; its 8 row lanes stride over the rows assigned to blockIdx.y and
// combine through shared memory. With gridDim.y == 1 the block writes y [outer, cols]; otherwise
// partial [outer, gridDim.y, cols] in the compute type.
template <class T, class Out>
__global__ void reduce_cols_kernel(const T* x, Out* out, int64_t rows, int64_t cols,
                                   RowReduce kind) {
  x += int64_t(blockIdx.z) * rows * cols;
  out += int64_t(blockIdx.z) * gridDim.y * cols;
  using C = typename Compute<T>::type;
  const int64_t col = int64_t(blockIdx.x) * 32 + threadIdx.x;
  const int64_t step = int64_t(gridDim.y) * 8;
  C acc = C(0);
  bool have = false;
  if (col < cols) {
    for (int64_t r = int64_t(blockIdx.y) * 8 + threadIdx.y; r < rows; r += step) {
      const C v = to_compute<C>(x[r * cols + col]);
      acc = have ? combine(acc, v, kind) : v;
      have = true;
    }
  }
  __shared__ C part[8][33];
  __shared__ bool has[8][33];
  part[threadIdx.y][threadIdx.x] = acc;
  has[threadIdx.y][threadIdx.x] = have;
  __syncthreads();
  if (threadIdx.y == 0 && col < cols) {
    bool any = false;
    C total = C(0);
    for (int j = 0; j < 8; ++j) {
      if (!has[j][threadIdx.x]) continue;
      total = any ? combine(total, part[j][threadIdx.x], kind) : part[j][threadIdx.x];
      any = true;
    }
    out[int64_t(blockIdx.y) * cols + col] = from_compute<Out>(total);
  }
}

}  // namespace

void reduce_cols(const void* x, void* y, DType dtype, int64_t outer, int64_t rows, int64_t cols,
                 RowReduce kind) {
  if (cols == 0 || outer == 0) return;
  if (outer > 65535) throw std::runtime_error("[cuda] reduce_cols: outer extent above 65535");
  dispatch_arith(dtype, "reduce_cols", [&](auto tag) {
    using T = decltype(tag);
    using C = typename Compute<T>::type;
    cudaStream_t s = compute_stream();
    const dim3 block(32, 8);
    const unsigned col_blocks = unsigned((cols + 31) / 32);
    // Enough row groups to fill the GPU, each with at least 64 rows of work.
    const int64_t groups = std::min<int64_t>(
        std::max<int64_t>((rows + 63) / 64, 1),
        std::max<int64_t>(1, 2048 / (int64_t(col_blocks) * outer)));
    const unsigned z = unsigned(outer);
    if (groups == 1) {
      reduce_cols_kernel<T, T><<<dim3(col_blocks, 1, z), block, 0, s>>>(
          static_cast<const T*>(x), static_cast<T*>(y), rows, cols, kind);
    } else {
      // Partials in the compute type, reduced by a second pass; the scratch block returns to the
      // cache at once, which is safe because later work is ordered after it on the stream.
      C* partial = static_cast<C*>(
          device_malloc(size_t(outer * groups * cols) * sizeof(C), current_device()));
      reduce_cols_kernel<T, C><<<dim3(col_blocks, unsigned(groups), z), block, 0, s>>>(
          static_cast<const T*>(x), partial, rows, cols, kind);
      reduce_cols_kernel<C, T><<<dim3(col_blocks, 1, z), block, 0, s>>>(
          partial, static_cast<T*>(y), groups, cols, kind);
      device_free(partial, current_device());
    }
  });
  check_launch("reduce_cols");
}

void reduce_rows(const void* x, void* y, DType dtype, int64_t rows, int64_t n, RowReduce kind) {
  if (rows == 0) return;
  dispatch_arith(dtype, "reduce_rows", [&](auto tag) {
    using T = decltype(tag);
    const T* px = static_cast<const T*>(x);
    T* py = static_cast<T*>(y);
    cudaStream_t s = compute_stream();
    if (n <= 16) {
      reduce_rows_kernel<T, 1><<<blocks_for(rows, 256), 256, 0, s>>>(px, py, rows, n, kind);
    } else if (n <= 2048) {
      reduce_rows_kernel<T, 32><<<blocks_for(rows, 8), 256, 0, s>>>(px, py, rows, n, kind);
    } else if (rows >= 512) {
      reduce_rows_kernel<T, 256><<<blocks_for(rows, 1), 256, 0, s>>>(px, py, rows, n, kind);
    } else {  // too few rows to fill the GPU with a block each: split them into chunks first
      using C = typename Compute<T>::type;
      const int64_t parts = std::min<int64_t>((n + 8191) / 8192, 2048 / rows + 1);
      const int64_t len = (n + parts - 1) / parts, used = (n + len - 1) / len;
      C* partial = static_cast<C*>(device_malloc(size_t(rows * used) * sizeof(C), current_device()));
      reduce_chunks_kernel<T><<<unsigned(rows * used), 256, 0, s>>>(px, partial, n, used, len, kind);
      reduce_rows_kernel<C, 32, T><<<blocks_for(rows, 8), 256, 0, s>>>(partial, py, rows, used,
                                                                       kind);
      device_free(partial, current_device());
    }
  });
  check_launch("reduce_rows");
}

void arg_reduce_rows(const void* x, int64_t* idx, DType dtype, int64_t rows, int64_t n,
                     bool is_max) {
  if (rows == 0) return;
  dispatch_arith(dtype, "arg_reduce_rows", [&](auto tag) {
    using T = decltype(tag);
    arg_reduce_kernel<T><<<blocks_for(rows, 1), 256, 0, compute_stream()>>>(
        static_cast<const T*>(x), idx, n, is_max);
  });
  check_launch("arg_reduce_rows");
}

}  // namespace loom::kernels::cuda
