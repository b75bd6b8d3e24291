// CUDA kernels of moe.h: the fused SwiGLU gate and the expert sort.
//
// SwiGLU: contiguous maps with 16-byte accesses (vectorized.cuh), compute in f32 (f64 for f64)
// like elementwise.cu.
//
// Expert sort: the assignments are cut into chunks of kChunk, one warp per chunk.
//   1. histogram: each warp counts its chunk's assignments per expert (shared-memory atomics)
//      and notes its first out-of-range id;
//   2. scan (one block): per expert, the chunk histograms become exclusive offsets in chunk order
//      (the rank of each chunk's first assignment of that expert), the totals give the routed
//      counts, and an exclusive scan of the kept counts (capacity applied) gives each expert's
//      first sorted position;
//   3. scatter: each warp walks its chunk 32 assignments at a time in order; __match_any_sync
//      groups the lanes of one expert, so an assignment's rank is its chunk offset plus the
//      running count plus the earlier lanes of its group. Ranks therefore follow p exactly, which
//      makes the result equal to the host's sequential counting sort.
#include <stdexcept>
#include <string>

#include "kernels/cuda/context.h"
#include "kernels/cuda/dtype_cuda.cuh"
#include "kernels/cuda/grid.cuh"
#include "kernels/cuda/moe.h"
#include "kernels/cuda/runtime.h"
#include "kernels/cuda/vectorized.cuh"

namespace loom::kernels::cuda {

namespace {

// fn::SwiGlu as the functor map2 applies.
struct SwiGluMap {
  template <class C>
  __device__ C operator()(C a, C b) const {
    return fn::SwiGlu::f(a, b);
  }
};

// V elements per thread and access (vectorized.cuh's packs), the n % V tail one at a time.
template <int V, class T>
__global__ void swiglu_backward_kernel(const T* __restrict__ a, const T* __restrict__ b,
                                       const T* __restrict__ dy, T* __restrict__ da,
                                       T* __restrict__ db, int64_t n) {
  using C = typename Compute<T>::type;
  using P = Pack<T, V>;
  const auto one = [](T a, T b, T g, T& da, T& db) {
    C ga, gb;
    fn::SwiGluGrad::f(to_compute<C>(a), to_compute<C>(b), to_compute<C>(g), ga, gb);
    da = from_compute<T>(ga);
    db = from_compute<T>(gb);
  };
  const int64_t packs = n / V;
  for (int64_t p = grid_index(); p < packs; p += grid_step()) {
    const P va = reinterpret_cast<const P*>(a)[p], vb = reinterpret_cast<const P*>(b)[p],
            vg = reinterpret_cast<const P*>(dy)[p];
    P oa, ob;
#pragma unroll
    for (int j = 0; j < V; ++j) one(va.v[j], vb.v[j], vg.v[j], oa.v[j], ob.v[j]);
    reinterpret_cast<P*>(da)[p] = oa;
    reinterpret_cast<P*>(db)[p] = ob;
  }
  for (int64_t i = packs * V + grid_index(); i < n; i += grid_step())
    one(a[i], b[i], dy[i], da[i], db[i]);
}

// -- expert sort ---------------------------------------------------------------------------------
constexpr int kWarp = 32;
constexpr int kSortWarps = 4;  // warps (chunks) per block of the histogram and scatter kernels
constexpr int64_t kChunk = 1024;
constexpr unsigned kFullMask = 0xffffffffu;

struct SortShape {
  int64_t n_assign, top_k, n_experts, capacity, n_chunks;
};

__device__ __forceinline__ int64_t chunk_of_warp() {
  return int64_t(blockIdx.x) * kSortWarps + threadIdx.x / kWarp;
}

template <class I>
__global__ void expert_histogram_kernel(const I* __restrict__ ids, SortShape s,
                                        int32_t* __restrict__ chunk_counts,
                                        int64_t* __restrict__ chunk_bad) {
  extern __shared__ int32_t counts_smem[];
  const int lane = threadIdx.x % kWarp;
  const int64_t chunk = chunk_of_warp();
  if (chunk >= s.n_chunks) return;  // uniform over the warp
  int32_t* counts = counts_smem + (threadIdx.x / kWarp) * s.n_experts;
  for (int64_t e = lane; e < s.n_experts; e += kWarp) counts[e] = 0;
  __syncwarp();
  const int64_t begin = chunk * kChunk, end = min(begin + kChunk, s.n_assign);
  int64_t bad = s.n_assign;
  for (int64_t p = begin + lane; p < end; p += kWarp) {
    const int64_t e = int64_t(ids[p]);
    if (e < 0 || e >= s.n_experts) {
      bad = min(bad, p);
    } else {
      atomicAdd(&counts[e], 1);
    }
  }
  for (int offset = kWarp / 2; offset > 0; offset /= 2)
    bad = min(bad, __shfl_xor_sync(kFullMask, bad, offset));
  __syncwarp();
  for (int64_t e = lane; e < s.n_experts; e += kWarp)
    chunk_counts[chunk * s.n_experts + e] = counts[e];
  if (lane == 0) chunk_bad[chunk] = bad;
}

// One block. chunk_counts becomes, in place, each chunk's exclusive offset per expert.
__global__ void expert_scan_kernel(SortShape s, int32_t* __restrict__ chunk_counts,
                                   const int64_t* __restrict__ chunk_bad,
                                   int64_t* __restrict__ expert_start,
                                   int64_t* __restrict__ routed) {
  for (int64_t e = threadIdx.x; e < s.n_experts; e += blockDim.x) {
    int64_t running = 0;
    for (int64_t c = 0; c < s.n_chunks; ++c) {
      int32_t& slot = chunk_counts[c * s.n_experts + e];
      const int32_t here = slot;
      slot = int32_t(running);
      running += here;
    }
    routed[e] = running;
  }
  __syncthreads();
  if (threadIdx.x != 0) return;
  int64_t start = 0, bad = s.n_assign;
  for (int64_t e = 0; e < s.n_experts; ++e) {
    expert_start[e] = start;
    start += s.capacity > 0 ? min(routed[e], s.capacity) : routed[e];
  }
  for (int64_t c = 0; c < s.n_chunks; ++c) bad = min(bad, chunk_bad[c]);
  routed[s.n_experts] = bad;
}

template <class I>
__global__ void expert_scatter_kernel(const I* __restrict__ ids, SortShape s,
                                      const int32_t* __restrict__ chunk_offsets,
                                      const int64_t* __restrict__ expert_start,
                                      int64_t* __restrict__ order, int64_t* __restrict__ token,
                                      int64_t* __restrict__ position) {
  extern __shared__ int32_t running_smem[];
  const int lane = threadIdx.x % kWarp;
  const int64_t chunk = chunk_of_warp();
  if (chunk >= s.n_chunks) return;  // uniform over the warp
  int32_t* running = running_smem + (threadIdx.x / kWarp) * s.n_experts;
  for (int64_t e = lane; e < s.n_experts; e += kWarp)
    running[e] = chunk_offsets[chunk * s.n_experts + e];
  __syncwarp();
  const unsigned earlier_lanes = (1u << lane) - 1;
  const int64_t begin = chunk * kChunk, end = min(begin + kChunk, s.n_assign);
  for (int64_t base = begin; base < end; base += kWarp) {
    const int64_t p = base + lane;
    const int64_t e = p < end ? int64_t(ids[p]) : -1;
    const bool valid = e >= 0 && e < s.n_experts;
    // Lanes without a valid id get keys no expert has, so each forms a group of its own.
    const unsigned peers = __match_any_sync(kFullMask, valid ? int(e) : int(s.n_experts) + lane);
    if (valid) {
      const int64_t rank = running[e] + __popc(peers & earlier_lanes);
      if (s.capacity == 0 || rank < s.capacity) {
        const int64_t q = expert_start[e] + rank;
        order[q] = p;
        token[q] = p / s.top_k;
        position[p] = q;
      } else {
        position[p] = -1;
      }
    }
    __syncwarp();
    if (valid && lane == __ffs(peers) - 1) running[e] += __popc(peers);
    __syncwarp();
  }
}

}  // namespace

void swiglu_forward(const void* a, const void* b, void* y, DType dtype, int64_t n) {
  dispatch_float(dtype, "swiglu_forward", [&](auto tag) {
    using T = decltype(tag);
    map2<typename Compute<T>::type>(static_cast<const T*>(a), static_cast<const T*>(b), {}, {},
                                    static_cast<T*>(y), n, SwiGluMap{}, compute_stream());
  });
  check_launch("swiglu_forward");
}

void swiglu_backward(const void* a, const void* b, const void* dy, void* da, void* db, DType dtype,
                     int64_t n) {
  if (n == 0) return;
  dispatch_float(dtype, "swiglu_backward", [&](auto tag) {
    using T = decltype(tag);
    with_vector_width<int(sizeof(T))>(
        {{a, int(sizeof(T))},
         {b, int(sizeof(T))},
         {dy, int(sizeof(T))},
         {da, int(sizeof(T))},
         {db, int(sizeof(T))}},
        [&](auto width) {
          constexpr int V = decltype(width)::value;
          swiglu_backward_kernel<V, T>
              <<<blocks_for((n + V - 1) / V, kMapThreads), kMapThreads, 0, compute_stream()>>>(
                  static_cast<const T*>(a), static_cast<const T*>(b), static_cast<const T*>(dy),
                  static_cast<T*>(da), static_cast<T*>(db), n);
        });
  });
  check_launch("swiglu_backward");
}

void expert_sort(const ExpertSort& p) {
  if (p.n_experts < 1 || p.n_experts > kMaxSortExperts)
    throw std::runtime_error("[cuda] expert_sort: n_experts must lie in [1, " +
                             std::to_string(kMaxSortExperts) + "], got " +
                             std::to_string(p.n_experts));
  if (p.n_assign >= (int64_t(1) << 31))  // ranks are counted in int32
    throw std::runtime_error("[cuda] expert_sort: at most 2^31 - 1 assignments, got " +
                             std::to_string(p.n_assign));
  const SortShape s{p.n_assign, p.top_k, p.n_experts, p.capacity,
                    (p.n_assign + kChunk - 1) / kChunk};
  // Scratch, stream-ordered by the caching allocator: chunk histograms, first bad id per chunk,
  // the experts' first sorted positions.
  const int device = current_device();
  const size_t counts_bytes = size_t(s.n_chunks * s.n_experts) * sizeof(int32_t);
  const size_t bad_offset = (counts_bytes + 7) / 8 * 8;
  const size_t start_offset = bad_offset + size_t(s.n_chunks) * sizeof(int64_t);
  char* scratch = static_cast<char*>(
      device_malloc(start_offset + size_t(s.n_experts) * sizeof(int64_t), device));
  int32_t* chunk_counts = reinterpret_cast<int32_t*>(scratch);
  int64_t* chunk_bad = reinterpret_cast<int64_t*>(scratch + bad_offset);
  int64_t* expert_start = reinterpret_cast<int64_t*>(scratch + start_offset);

  const unsigned blocks = unsigned((s.n_chunks + kSortWarps - 1) / kSortWarps);
  const size_t smem = size_t(kSortWarps * s.n_experts) * sizeof(int32_t);
  cudaStream_t stream = compute_stream();
  dispatch_index(p.ids_dtype, "expert_sort", [&](auto tag) {
    using I = decltype(tag);
    const I* ids = static_cast<const I*>(p.ids);
    if (blocks > 0) {
      expert_histogram_kernel<I>
          <<<blocks, kSortWarps * kWarp, smem, stream>>>(ids, s, chunk_counts, chunk_bad);
      check_launch("expert_sort histogram");
    }
    expert_scan_kernel<<<1, 1024, 0, stream>>>(s, chunk_counts, chunk_bad, expert_start, p.routed);
    check_launch("expert_sort scan");
    if (blocks > 0) {
      expert_scatter_kernel<I><<<blocks, kSortWarps * kWarp, smem, stream>>>(
          ids, s, chunk_counts, expert_start, p.order, p.token, p.position);
      check_launch("expert_sort scatter");
    }
  });
  device_free(scratch, device);
}

}  // namespace loom::kernels::cuda
