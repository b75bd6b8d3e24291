// bench_muon: the cost of Muon on CUDA (issue: optimizers). Times Newton-Schulz (5 steps, bf16)
// on one 768 x 3072 matrix, the shape BENCH.md gives PyTorch's 0.63 ms for, and one Muon step over
// the hidden matrices of DiT-B/2 (blocks' attention, MLP and adaLN weights, as the default recipe
// groups them) with random gradients. Medians of --iters synchronized runs after 3 warm-ups;
// prints one JSON line. Compare the step with a DiT-B/2 training step (bench_dit_train).
//   bench_muon [--iters 20]
#include <CLI/CLI.hpp>

#include <cstdio>

#include "bench/timing.h"
#include "core/loom.h"
#include "kernels/cuda/runtime.h"
#include "models/dit/dit.h"
#include "optim/muon.h"

int main(int argc, char** argv) {
  using namespace loom;
  int64_t iters = 20;
  CLI::App app{"Time Muon on CUDA"};
  app.add_option("--iters", iters);
  CLI11_PARSE(app, argc, argv);
  const Device gpu = Device::cuda(0);
  Generator gen(0);
  const Tensor g = randn({768, 3072}, gen, DType::f32, gpu);
  const double ns5_ms = 1e3 * bench::median_seconds(iters, 0, [&] { (void)optim::newton_schulz(g, 5); });

  dit::DiT model({.input_size = 32, .hidden_size = 768, .depth = 12, .num_heads = 12}, gen);
  model.to(gpu);
  std::vector<Tensor> hidden;
  for (const auto& [name, p] : model.named_parameters())
    if (name.rfind("blocks.", 0) == 0 && p.dim() == 2) hidden.push_back(p);
  for (const Tensor& p : hidden) p.set_grad(randn(p.shape(), gen, DType::f32, gpu));
  optim::Muon muon(hidden, {.lr = 0.02});
  const double step_ms = 1e3 * bench::median_seconds(iters, 0, [&] { muon.step(); });
  int64_t numel = 0;
  for (const Tensor& p : hidden) numel += p.numel();
  std::printf(
      "{\"impl\": \"loom\", \"ns5_768x3072_ms\": %.3f, \"muon_step_ms\": %.2f, "
      "\"muon_matrices\": %zu, \"muon_params_M\": %.1f}\n",
      ns5_ms, step_ms, hidden.size(), double(numel) / 1e6);
  return 0;
}
