// bench_cpu: CPU microbenchmarks of the core's fixed costs.
//  1. GEMM: loom::matmul against a raw cblas_sgemm on the same square f32 operands, OpenBLAS
//     threading itself over the same number of threads, to show what the op layer (checks, output
//     allocation, dispatch) and loom's split of the GEMM over its own pool cost on top of
//     OpenBLAS.
//  2. Dispatch: the time of one elementwise add of two 1-element tensors, where the arithmetic is
//     nothing and everything measured is op overhead, without and with autograd recording.
// Prints a table and then one JSON line. Threads: LOOM_NUM_THREADS (OpenBLAS gets the same count
// while the raw calls run, one thread while loom's run, as in loom).
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "core/loom.h"
#include "kernels/cpu/thread_pool.h"

namespace {

using Clock = std::chrono::steady_clock;
using loom::Tensor;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

struct GemmRow {
  int64_t n;
  double loom_gflops, blas_gflops, max_rel_diff;
};

// Median of rounds * block timed calls of each.
GemmRow bench_gemm(int64_t n, int rounds, int block) {
  loom::Generator gen(42, uint64_t(n));
  const Tensor a = loom::rand({n, n}, gen) - 0.5;
  const Tensor b = loom::rand({n, n}, gen) - 0.5;
  Tensor c_blas = loom::zeros({n, n});
  loom::NoGradGuard no_grad;
  const int threads = loom::kernels::cpu::num_threads();
  auto run_blas = [&] {
    openblas_set_num_threads(threads);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(n), int(n), int(n), 1.0f,
                a.data<float>(), int(n), b.data<float>(), int(n), 0.0f, c_blas.data<float>(),
                int(n));
  };
  Tensor c_loom;
  // Blocks of back-to-back calls, alternating loom and cblas, the first call of each block
  // discarded: OpenBLAS's workers sleep after a pause, so timing single interleaved calls would
  // mostly measure their wake-up, and alternating blocks spreads load from other processes.
  std::vector<double> t_loom, t_blas;
  auto time_block = [&](auto&& f, std::vector<double>& out) {
    for (int i = 0; i <= block; ++i) {
      const auto t0 = Clock::now();
      f();
      if (i > 0) out.push_back(seconds(t0, Clock::now()));
    }
  };
  auto run_loom = [&] {
    openblas_set_num_threads(1);
    c_loom = loom::matmul(a, b);
  };
  for (int r = 0; r < rounds; ++r) {
    time_block(run_loom, t_loom);
    time_block(run_blas, t_blas);
  }
  const auto vl = c_loom.to_vector<float>(), vb = c_blas.to_vector<float>();
  double max_diff = 0, max_ref = 0;
  for (size_t i = 0; i < vl.size(); ++i) {
    max_diff = std::max(max_diff, double(std::abs(vl[i] - vb[i])));
    max_ref = std::max(max_ref, double(std::abs(vb[i])));
  }
  const double flops = 2.0 * double(n) * double(n) * double(n);
  return {n, flops / median(t_loom) / 1e9, flops / median(t_blas) / 1e9, max_diff / max_ref};
}

// Median time of one call of f over `calls` individually timed calls, minus the clock's own cost.
template <class F>
double median_call_ns(int calls, double clock_ns, F&& f) {
  std::vector<double> t(static_cast<size_t>(calls));
  for (int w = 0; w < 100; ++w) f();
  for (auto& x : t) {
    const auto t0 = Clock::now();
    f();
    const auto t1 = Clock::now();
    x = seconds(t0, t1) * 1e9;
  }
  return std::max(0.0, median(t) - clock_ns);
}

}  // namespace

int main() {
  const int threads = loom::kernels::cpu::num_threads();  // also sets OpenBLAS's thread count
  constexpr int kCalls = 10000;

  std::vector<GemmRow> gemm;
  for (int64_t n : {256, 512, 1024}) gemm.push_back(bench_gemm(n, 6, n >= 1024 ? 3 : 10));

  std::vector<double> clock_t(static_cast<size_t>(kCalls));
  for (auto& x : clock_t) {
    const auto t0 = Clock::now();
    const auto t1 = Clock::now();
    x = seconds(t0, t1) * 1e9;
  }
  const double clock_ns = median(clock_t);

  const Tensor x = loom::ones({1}), y = loom::ones({1});
  const Tensor xg = loom::ones({1}).set_requires_grad(), yg = loom::ones({1}).set_requires_grad();
  Tensor sink;
  double ns_no_grad, ns_plain, ns_record;
  {
    loom::NoGradGuard g;
    ns_no_grad = median_call_ns(kCalls, clock_ns, [&] { sink = loom::add(x, y); });
  }
  ns_plain = median_call_ns(kCalls, clock_ns, [&] { sink = loom::add(x, y); });
  ns_record = median_call_ns(kCalls, clock_ns, [&] { sink = loom::add(xg, yg); });
  if (sink.item() != 2.0) {
    std::fprintf(stderr, "bench_cpu: add gave %g, expected 2\n", sink.item());
    return 1;
  }

  std::printf("bench_cpu: %d threads\n\n", threads);
  std::printf("%-22s %12s %12s %8s %12s\n", "GEMM f32 (n x n x n)", "loom GF/s", "cblas GF/s",
              "ratio", "max rel diff");
  bool ok = true;
  for (const GemmRow& r : gemm) {
    std::printf("%-22lld %12.1f %12.1f %8.3f %12.1e\n", (long long)r.n, r.loom_gflops,
                r.blas_gflops, r.loom_gflops / r.blas_gflops, r.max_rel_diff);
    ok = ok && r.max_rel_diff < 1e-5;
  }
  std::printf("\n%-44s %10s\n", "dispatch: add of two [1] f32 tensors", "ns/call");
  std::printf("%-44s %10.0f\n", "  under NoGradGuard", ns_no_grad);
  std::printf("%-44s %10.0f\n", "  grad mode on, inputs need no grad", ns_plain);
  std::printf("%-44s %10.0f\n", "  recording (inputs require grad)", ns_record);
  std::printf("%-44s %10.0f\n", "  (clock read, subtracted above)", clock_ns);
  std::printf("\n{\"bench\":\"bench_cpu\",\"threads\":%d,\"gemm\":[", threads);
  for (size_t i = 0; i < gemm.size(); ++i)
    std::printf("%s{\"n\":%lld,\"loom_gflops\":%.2f,\"cblas_gflops\":%.2f,\"ratio\":%.4f}",
                i ? "," : "", (long long)gemm[i].n, gemm[i].loom_gflops, gemm[i].blas_gflops,
                gemm[i].loom_gflops / gemm[i].blas_gflops);
  std::printf(
      "],\"dispatch_ns\":{\"add_no_grad\":%.1f,\"add_grad_mode\":%.1f,\"add_record\":%.1f}}\n",
      ns_no_grad, ns_plain, ns_record);
  if (!ok) {
    std::fprintf(stderr, "bench_cpu: loom::matmul disagrees with cblas_sgemm\n");
    return 1;
  }
  return 0;
}
