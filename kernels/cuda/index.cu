// The index kernels of kernels.h (index_select, index_add, gather, scatter_add, topk_rows); CPU
// twins in kernels/cpu/index.h, same semantics. Index values are i32 or i64; the kernels check
// them (index_fault.h): an out-of-range index skips its element (index_select and gather write 0)
// and is reported at the host's next synchronization.
//
// Launch shapes: index_select, index_add and gather run one thread per element (256-thread blocks,
// grid-stride). index_select only moves bytes: rows of `inner` elements are copied in the widest
// unit (16, 8, 4, 2 or 1 bytes) that divides a row and both base pointers, so it serves every
// dtype; gather likewise copies elements of x's size. index_add adds with atomicAdd (duplicates add
// in an unspecified order). scatter_add runs one thread per fiber along `dim` (every position but
// `dim` fixed) and adds that fiber's entries in increasing position, exactly like the CPU twin:
// fibers never write the same output element, so it is deterministic without atomics, but a long
// `dim` with few fibers runs serially. topk_rows gives each row one warp (n <= 1024, 4 rows per
// block) or one 256-thread block and makes k passes over the row, each picking the best entry that
// ranks strictly after the previous pick: O(k n) reads per row, meant for small k.
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "kernels/cuda/context.h"
#include "kernels/cuda/dtype_cuda.cuh"
#include "kernels/cuda/grid.cuh"
#include "kernels/cuda/index_fault.h"
#include "kernels/cuda/kernels.h"
#include "kernels/cuda/strided.cuh"

namespace loom::kernels::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kWarpRowMax = 1024;  // longest topk row one warp handles
constexpr int kTopkBlockThreads = 256;
constexpr int kWarpRowsPerBlock = 4;


// Calls f(U{}) with U an unsigned type (uint4 for 16 bytes) of `bytes` bytes.
template <class F>
void dispatch_unit(int64_t bytes, F&& f) {
  switch (bytes) {
    case 16:
      f(uint4{});
      return;
    case 8:
      f(uint64_t{});
      return;
    case 4:
      f(uint32_t{});
      return;
    case 2:
      f(uint16_t{});
      return;
    default:
      f(uint8_t{});
      return;
  }
}

void check_same_dtype(const char* kernel, DType a, DType b) {
  if (a != b) {
    throw std::runtime_error(std::string("[cuda] ") + kernel + ": dtypes #" +
                             std::to_string(int(a)) + " and #" + std::to_string(int(b)) +
                             " differ; the data operands must share one dtype");
  }
}

__device__ __forceinline__ void atomic_add(float* p, float v) {
  atomicAdd(p, v);
}
__device__ __forceinline__ void atomic_add(double* p, double v) {
  atomicAdd(p, v);
}
__device__ __forceinline__ void atomic_add(__half* p, __half v) {
  atomicAdd(p, v);
}
__device__ __forceinline__ void atomic_add(__nv_bfloat16* p, __nv_bfloat16 v) {
  atomicAdd(p, v);
}
__device__ __forceinline__ void atomic_add(int32_t* p, int32_t v) {
  atomicAdd(p, v);
}
__device__ __forceinline__ void atomic_add(int64_t* p, int64_t v) {
  // Two's complement: the unsigned sum has the bits of the signed one.
  atomicAdd(reinterpret_cast<unsigned long long*>(p), static_cast<unsigned long long>(v));
}

// Whether idx (at `position` of the index tensor) lies in [0, bound); if not, records the first
// such fault for raise_index_fault.
template <class I>
__device__ bool index_in_range(I idx, int64_t bound, int64_t position, IndexOp op,
                               IndexFault* fault) {
  if (int64_t(idx) >= 0 && int64_t(idx) < bound) return true;
  if (atomicCAS(&fault->flag, 0, 1) == 0) {
    fault->op = op;
    fault->value = int64_t(idx);
    fault->position = position;
    fault->bound = bound;
    __threadfence_system();
  }
  return false;
}

// The three operands' strides along the indexed dim.
struct Along {
  int64_t s[3];
};

// -- index_select / index_add -------------------------------------------------------------------
// x [outer, n, inner] -> out [outer, m, inner], in units U (inner counts units).
template <class U, class I>
__global__ void index_select_kernel(const U* __restrict__ x, U* __restrict__ out,
                                    const I* __restrict__ idx, int64_t total, int64_t n, int64_t m,
                                    int64_t inner, IndexFault* fault) {
  for (int64_t e = grid_index(); e < total; e += grid_step()) {
    const int64_t c = e % inner, r = e / inner;
    const int64_t o = r / m, j = r % m;
    const I i = idx[j];
    out[e] = index_in_range(i, n, j, IndexOp::index_select, fault)
                 ? x[(o * n + int64_t(i)) * inner + c]
                 : U{};
  }
}

// out [outer, n, inner] += src [outer, m, inner] scattered by idx [m]; e runs over src.
template <class T, class I>
__global__ void index_add_kernel(T* out, const T* __restrict__ src, const I* __restrict__ idx,
                                 int64_t total, int64_t n, int64_t m, int64_t inner,
                                 IndexFault* fault) {
  for (int64_t e = grid_index(); e < total; e += grid_step()) {
    const int64_t c = e % inner, r = e / inner;
    const int64_t o = r / m, j = r % m;
    const I i = idx[j];
    if (index_in_range(i, n, j, IndexOp::index_add, fault))
      atomic_add(out + (o * n + int64_t(i)) * inner + c, src[e]);
  }
}

// -- gather / scatter_add -----------------------------------------------------------------------
// Operands (x, index, out), x's stride along dim zeroed; x_along is the real one:
// out[p] = x[p with coordinate dim <- idx[p]].
template <class U, class I>
__global__ void gather_kernel(StridePack<3> p, int64_t x_along, int64_t bound,
                              const U* __restrict__ x, const I* __restrict__ idx,
                              U* __restrict__ out, int64_t total, IndexFault* fault) {
  for (int64_t e = grid_index(); e < total; e += grid_step()) {
    int64_t off[3];
    strided_offsets(p, e, off);
    const I i = idx[off[1]];
    out[off[2]] = index_in_range(i, bound, off[1], IndexOp::gather, fault)
                      ? x[off[0] + int64_t(i) * x_along]
                      : U{};
  }
}

// Operands (out, index, src) with sizes[dim] set to 1, so position f is fiber f; `along` holds
// the operands' strides along dim and len its extent. Each fiber adds in increasing position.
template <class T, class I>
__global__ void scatter_add_kernel(StridePack<3> p, Along along, int64_t len, int64_t bound,
                                   T* __restrict__ out, const I* __restrict__ idx,
                                   const T* __restrict__ src, int64_t fibers, IndexFault* fault) {
  using C = typename Compute<T>::type;
  for (int64_t f = grid_index(); f < fibers; f += grid_step()) {
    int64_t off[3];
    strided_offsets(p, f, off);
    for (int64_t j = 0; j < len; ++j) {
      const int64_t at = off[1] + j * along.s[1];
      const I i = idx[at];
      if (!index_in_range(i, bound, at, IndexOp::scatter_add, fault)) continue;
      T* o = out + off[0] + int64_t(i) * along.s[0];
      *o = from_compute<T>(to_compute<C>(*o) + to_compute<C>(src[off[2] + j * along.s[2]]));
    }
  }
}

// -- topk -----------------------------------------------------------------------------------------
// An entry of a row: its value and position (position -1: none).
template <class C>
struct Entry {
  C v;
  int64_t i;
};

// a > b with NaN above every number (and not above another NaN).
template <class C>
__device__ __forceinline__ bool above(C a, C b) {
  if constexpr (std::is_floating_point_v<C>) {
    if (isnan(a)) return !isnan(b);
    if (isnan(b)) return false;
  }
  return a > b;
}

// Whether a ranks before b: the larger (smaller) value first, equal values by lower position. A
// strict total order on a row's entries.
template <class C>
__device__ __forceinline__ bool before(const Entry<C>& a, const Entry<C>& b, bool largest) {
  const bool a_wins = largest ? above(a.v, b.v) : above(b.v, a.v);
  const bool b_wins = largest ? above(b.v, a.v) : above(a.v, b.v);
  return a_wins || (!b_wins && a.i < b.i);
}

template <class C>
__device__ __forceinline__ Entry<C> better(const Entry<C>& a, const Entry<C>& b, bool largest) {
  if (a.i < 0) return b;
  if (b.i < 0) return a;
  return before(b, a, largest) ? b : a;
}

// The best entry over the G threads of a row (threadIdx.x in [0, G)); every thread gets it.
template <int G, class C>
__device__ Entry<C> row_best(Entry<C> e, bool largest) {
  for (int o = 16; o > 0; o >>= 1) {
    const Entry<C> other{__shfl_xor_sync(0xffffffffu, e.v, o),
                         __shfl_xor_sync(0xffffffffu, e.i, o)};
    e = better(e, other, largest);
  }
  if constexpr (G > 32) {
    __shared__ C part_v[G / 32];
    __shared__ int64_t part_i[G / 32];
    __syncthreads();  // the previous round may still be reading the parts
    if (threadIdx.x % 32 == 0) {
      part_v[threadIdx.x / 32] = e.v;
      part_i[threadIdx.x / 32] = e.i;
    }
    __syncthreads();
    e = {part_v[0], part_i[0]};
    for (int w = 1; w < G / 32; ++w) e = better(e, Entry<C>{part_v[w], part_i[w]}, largest);
  }
  return e;
}

// blockDim = (G, rows per block); each group of G threads takes rows in a grid stride.
template <class T, int G>
__global__ void topk_kernel(const T* __restrict__ x, T* __restrict__ values,
                            int64_t* __restrict__ indices, int64_t rows, int64_t n, int64_t k,
                            bool largest) {
  using C = typename Compute<T>::type;
  for (int64_t r = int64_t(blockIdx.x) * blockDim.y + threadIdx.y; r < rows;
       r += int64_t(gridDim.x) * blockDim.y) {
    const T* xr = x + r * n;
    Entry<C> prev{C(0), -1};
    for (int64_t t = 0; t < k; ++t) {
      Entry<C> best{C(0), -1};
      for (int64_t i = threadIdx.x; i < n; i += G) {
        const Entry<C> e{to_compute<C>(xr[i]), i};
        if (prev.i >= 0 && !before(prev, e, largest)) continue;  // picked in an earlier round
        best = better(best, e, largest);
      }
      best = row_best<G>(best, largest);
      if (threadIdx.x == 0) {
        values[r * k + t] = xr[best.i];
        indices[r * k + t] = best.i;
      }
      prev = best;
    }
  }
}

}  // namespace

void index_select(const void* x, void* out, DType dtype, const void* idx, DType idx_dtype,
                  int64_t outer, int64_t n, int64_t m, int64_t inner) {
  const int64_t row_bytes = inner * dtype_bytes(dtype);
  if (outer <= 0 || m <= 0 || row_bytes <= 0) return;
  const uintptr_t bits =
      uintptr_t(row_bytes) | reinterpret_cast<uintptr_t>(x) | reinterpret_cast<uintptr_t>(out);
  int64_t unit = 16;
  while (bits % unit != 0) unit /= 2;
  dispatch_unit(unit, [&](auto utag) {
    using U = decltype(utag);
    dispatch_index(idx_dtype, "index_select", [&](auto itag) {
      using I = decltype(itag);
      const int64_t units = row_bytes / unit, total = outer * m * units;
      index_select_kernel<<<blocks_for(total, kThreads), kThreads, 0, compute_stream()>>>(
          static_cast<const U*>(x), static_cast<U*>(out), static_cast<const I*>(idx), total, n, m,
          units, index_fault_record());
    });
  });
  check_launch("index_select");
}

void index_add(void* out, const void* src, DType dtype, const void* idx, DType idx_dtype,
               int64_t outer, int64_t n, int64_t m, int64_t inner) {
  if (outer <= 0 || m <= 0 || inner <= 0) return;
  const int64_t total = outer * m * inner;
  dispatch_arith(dtype, "index_add", [&](auto tag) {
    using T = decltype(tag);
    dispatch_index(idx_dtype, "index_add", [&](auto itag) {
      using I = decltype(itag);
      index_add_kernel<<<blocks_for(total, kThreads), kThreads, 0, compute_stream()>>>(
          static_cast<T*>(out), static_cast<const T*>(src), static_cast<const I*>(idx), total, n, m,
          inner, index_fault_record());
    });
  });
  check_launch("index_add");
}

void gather(const IterShape& index_shape, int dim, int64_t bound, const Operand& x,
            const Operand& index, const Operand& out) {
  const int64_t total = index_shape.numel();
  if (total <= 0) return;
  check_same_dtype("gather", x.dtype, out.dtype);
  StridePack<3> p = pack_strides(index_shape, {&x, &index, &out});
  p.strides[0][dim] = 0;  // x's coordinate along dim comes from the index
  dispatch_unit(dtype_bytes(x.dtype), [&](auto utag) {
    using U = decltype(utag);
    dispatch_index(index.dtype, "gather", [&](auto itag) {
      using I = decltype(itag);
      gather_kernel<<<blocks_for(total, kThreads), kThreads, 0, compute_stream()>>>(
          p, x.strides[dim], bound, static_cast<const U*>(x.data),
          static_cast<const I*>(index.data), static_cast<U*>(out.data), total,
          index_fault_record());
    });
  });
  check_launch("gather");
}

void scatter_add(const IterShape& index_shape, int dim, int64_t bound, const Operand& out,
                 const Operand& index, const Operand& src) {
  if (index_shape.numel() <= 0) return;
  check_same_dtype("scatter_add", out.dtype, src.dtype);
  StridePack<3> p = pack_strides(index_shape, {&out, &index, &src});
  p.sizes[dim] = 1;  // one position per fiber
  const int64_t len = index_shape.sizes[dim], fibers = index_shape.numel() / len;
  const Along along{{out.strides[dim], index.strides[dim], src.strides[dim]}};
  dispatch_arith(out.dtype, "scatter_add", [&](auto tag) {
    using T = decltype(tag);
    dispatch_index(index.dtype, "scatter_add", [&](auto itag) {
      using I = decltype(itag);
      scatter_add_kernel<<<blocks_for(fibers, kThreads), kThreads, 0, compute_stream()>>>(
          p, along, len, bound, static_cast<T*>(out.data),
          static_cast<const I*>(index.data), static_cast<const T*>(src.data), fibers,
          index_fault_record());
    });
  });
  check_launch("scatter_add");
}

void topk_rows(const void* x, void* values, int64_t* indices, DType dtype, int64_t rows, int64_t n,
               int64_t k, bool largest) {
  if (rows <= 0 || n <= 0 || k <= 0) return;
  dispatch_arith(dtype, "topk_rows", [&](auto tag) {
    using T = decltype(tag);
    const auto* xt = static_cast<const T*>(x);
    auto* vt = static_cast<T*>(values);
    if (n <= kWarpRowMax) {
      topk_kernel<T, 32><<<blocks_for(rows, kWarpRowsPerBlock), dim3(32, kWarpRowsPerBlock), 0,
                           compute_stream()>>>(xt, vt, indices, rows, n, k, largest);
    } else {
      topk_kernel<T, kTopkBlockThreads>
          <<<blocks_for(rows, 1), kTopkBlockThreads, 0, compute_stream()>>>(xt, vt, indices, rows,
                                                                            n, k, largest);
    }
  });
  check_launch("topk_rows");
}

}  // namespace loom::kernels::cuda
