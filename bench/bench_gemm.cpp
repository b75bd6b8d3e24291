// bench_gemm: loom's bf16 GEMMs on CUDA for the shapes of a DiT training step (issue: CUDA
// backend). For each linear layer of DiT-B/2 (or --width/--batch-tokens), times the three GEMMs
// of one training step through loom's ops under NoGradGuard: forward y = x W^T + b (bias in the
// epilogue), the input gradient dx = dy W and the weight gradient dW = dy^T x. Median of --iters
// synchronized calls after 3 warm-ups; one JSON line per layer with TFLOP/s. bench/gemm_peer.py
// times the same products through PyTorch (F.linear, matmul) for the ratio.
//   bench_gemm [--width 768] [--tokens 65536] [--iters 20]
#include <CLI/CLI.hpp>

#include <cstdio>
#include <string>
#include <vector>

#include "bench/timing.h"
#include "core/loom.h"

int main(int argc, char** argv) {
  using namespace loom;
  int64_t width = 768, tokens = 256 * 256, iters = 20;
  CLI::App app{"Time loom's bf16 GEMMs for a DiT block"};
  app.add_option("--width", width);
  app.add_option("--tokens", tokens, "rows: batch x tokens per image");
  app.add_option("--iters", iters);
  CLI11_PARSE(app, argc, argv);
  if (kernels::cuda::device_count() == 0) {
    std::fprintf(stderr, "bench_gemm: no CUDA device\n");
    return 77;
  }
  const Device gpu = Device::cuda(0);
  NoGradGuard no_grad;
  Generator gen(0);
  struct Layer {
    std::string name;
    int64_t in, out;
  };
  const std::vector<Layer> layers = {{"qkv", width, 3 * width},
                                     {"proj", width, width},
                                     {"fc1", width, 4 * width},
                                     {"fc2", 4 * width, width}};
  for (const Layer& l : layers) {
    const Tensor x = randn({tokens, l.in}, gen, DType::f32, gpu).to(DType::bf16);
    const Tensor w = randn({l.out, l.in}, gen, DType::f32, gpu).to(DType::bf16);
    const Tensor b = randn({l.out}, gen, DType::f32, gpu).to(DType::bf16);
    const Tensor dy = randn({tokens, l.out}, gen, DType::f32, gpu).to(DType::bf16);
    const double flops = 2.0 * double(tokens) * double(l.in) * double(l.out);
    const double fwd = bench::median_seconds(iters, 0, [&] { (void)linear(x, w, b); });
    const double dx = bench::median_seconds(iters, 0, [&] { (void)matmul(dy, w); });
    const double dw = bench::median_seconds(iters, 0, [&] { (void)matmul(dy.t(), x); });
    std::printf(
        "{\"impl\": \"loom\", \"layer\": \"%s\", \"m\": %lld, \"k\": %lld, \"n\": %lld, "
        "\"fwd_tflops\": %.1f, \"dx_tflops\": %.1f, \"dw_tflops\": %.1f, \"total_ms\": %.3f}\n",
        l.name.c_str(), static_cast<long long>(tokens), static_cast<long long>(l.in),
        static_cast<long long>(l.out), flops / fwd / 1e12, flops / dx / 1e12, flops / dw / 1e12,
        (fwd + dx + dw) * 1e3);
  }
  return 0;
}
