// bench_nccl: collective bandwidth through loom's NCCL communicator (issue: multi-GPU). Run under
// mpirun, one rank per GPU (rank r uses GPU local_rank % count). For each size, times all_reduce
// (sum, f32, in place) and all_to_all_v (equal rows to every peer) on device tensors: median of
// --iters synchronized calls after 3 warm-ups, then the bus bandwidth as nccl-tests defines it
// (all_reduce: bytes * 2 (n - 1) / n / time; all-to-all: bytes * (n - 1) / n / time). Rank 0
// prints one JSON line per size. bench/nccl_peer.py measures the same through
// torch.distributed (its NCCL calls, no loom) for the ratio.
//   mpirun -np 2 build-gpu/bench/bench_nccl [--iters 20] [--sizes-mib 1,16,64,256,1024]
#include <CLI/CLI.hpp>

#include <cstdio>
#include <vector>

#include "bench/timing.h"
#include "core/loom.h"
#include "kernels/cuda/runtime.h"
#include "parallel/communicator.h"
#include "parallel/nccl_communicator.h"

int main(int argc, char** argv) {
  using namespace loom;
  int64_t iters = 20;
  std::vector<int64_t> sizes_mib = {1, 16, 64, 256, 1024};
  CLI::App app{"Bus bandwidth of loom's NCCL collectives"};
  app.add_option("--iters", iters);
  app.add_option("--sizes-mib", sizes_mib)->delimiter(',');
  CLI11_PARSE(app, argc, argv);
  const int count = kernels::cuda::device_count();
  if (count == 0) {
    std::fprintf(stderr, "bench_nccl: no CUDA device\n");
    return 77;
  }
  const Device gpu = Device::cuda(parallel::local_rank() % count);
  const auto world = parallel::nccl_communicator(parallel::world_communicator(), gpu);
  const int n = world->size();
  for (const int64_t mib : sizes_mib) {
    const int64_t numel = mib * (int64_t(1) << 20) / 4 / n * n;  // f32, divisible by the ranks
    const double bytes = double(numel) * 4;
    const Tensor x = ones({numel}, DType::f32, gpu);
    const double reduce_s = bench::median_seconds(iters, gpu.index, [&] { world->all_reduce(x); });
    const Tensor rows = ones({n, numel / n}, DType::f32, gpu), out = empty({n, numel / n}, DType::f32, gpu);
    const std::vector<int64_t> counts(static_cast<size_t>(n), 1);
    const double a2a_s =
        bench::median_seconds(iters, gpu.index, [&] { world->all_to_all_v(rows, out, counts, counts); });
    if (world->rank() == 0)
      std::printf(
          "{\"impl\": \"loom\", \"ranks\": %d, \"mib\": %lld, \"all_reduce_ms\": %.3f, "
          "\"all_reduce_busbw_GBps\": %.1f, \"all_to_all_ms\": %.3f, "
          "\"all_to_all_busbw_GBps\": %.1f}\n",
          n, static_cast<long long>(mib), reduce_s * 1e3,
          bytes * 2 * (n - 1) / n / reduce_s / 1e9, a2a_s * 1e3,
          bytes * (n - 1) / n / a2a_s / 1e9);
  }
  return 0;
}
