#pragma once
// The CPU kernels' thread pool. Work is cut into fixed chunks of `grain` items that do not depend
// on the number of threads, so a kernel that combines per-chunk partial results in chunk order
// gives bit-identical results run to run and for any thread count.
// Threads: LOOM_NUM_THREADS, else the CPUs of the process's affinity mask, divided among the
// node's ranks when a launcher started several without binding them. OpenBLAS is set to one
// thread: GEMMs split themselves over this pool (gemm.h).
#include <cstdint>
#include <functional>

namespace loom::kernels::cpu {

int num_threads();
void set_num_threads(int n);

// Calls f(chunk_begin, chunk_end) for consecutive chunks of [begin, end), each at most `grain`
// long, in parallel. Runs serially when there is one chunk or when called from a pool thread.
void parallel_for(int64_t begin, int64_t end, int64_t grain,
                  const std::function<void(int64_t, int64_t)>& f);

// Number of chunks parallel_for makes for this range and grain (for per-chunk partials).
inline int64_t num_chunks(int64_t n, int64_t grain) {
  return n <= 0 ? 0 : (n + grain - 1) / grain;
}

}  // namespace loom::kernels::cpu
