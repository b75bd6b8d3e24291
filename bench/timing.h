#pragma once
// Timing for the CUDA benchmarks: the median wall time of `iters` calls of f, each followed by a
// device synchronize, after three untimed warm-up calls.
#include <algorithm>
#include <chrono>
#include <vector>

#include "kernels/cuda/runtime.h"

namespace loom::bench {

template <class F>
double median_seconds(int64_t iters, int device, F f) {
  for (int i = 0; i < 3; ++i) f();
  kernels::cuda::synchronize(device);
  std::vector<double> t;
  for (int64_t i = 0; i < iters; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    kernels::cuda::synchronize(device);
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace loom::bench
