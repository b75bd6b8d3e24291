// bench_dit_train: one DiT / DiT-MoE training step (forward, MSE against noise + the MoE balance
// loss, backward, AdamW) timed exactly like the PyTorch peer (../shared/bench/peer_pytorch.py):
// random inputs, 3 warm-up steps, median of --iters steps, FLOPs by the peer's
// train_flops_per_image. Prints one JSON line; scripts/bench-cpu.sh and scripts/bench-gpu.sh run
// it beside the peer. On CUDA (--device cuda) the step runs under bf16 autocast like the peer's,
// each timed step ends with a device synchronization, and the peak device memory is reported.
//   bench_dit_train --depth 4 --width 128 --heads 4 --experts 4 --topk 2 --shared 1 \
//                   --batch 128 --image 28 --channels 1 --patch 4 --classes 10 [--device cuda]
//                   [--activation-checkpointing]
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "core/loom.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/cuda/runtime.h"
#include "models/dit/dit.h"
#include "models/dit/flops.h"
#include "optim/adamw.h"

int main(int argc, char** argv) {
  using namespace loom;
  int64_t depth = 4, width = 128, heads = 4, experts = 4, topk = 2, shared = 1, batch = 128;
  int64_t image = 28, channels = 1, patch = 4, classes = 10, iters = 10;
  std::string device_name = "cpu";
  bool checkpointing = false;
  CLI::App app{"Time DiT training steps"};
  app.add_flag("--activation-checkpointing", checkpointing,
               "recompute each block in backward (train.activation_checkpointing)");
  app.add_option("--device", device_name)->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--depth", depth);
  app.add_option("--width", width);
  app.add_option("--heads", heads);
  app.add_option("--experts", experts);
  app.add_option("--topk", topk);
  app.add_option("--shared", shared);
  app.add_option("--batch", batch);
  app.add_option("--image", image);
  app.add_option("--channels", channels);
  app.add_option("--patch", patch);
  app.add_option("--classes", classes);
  app.add_option("--iters", iters);
  CLI11_PARSE(app, argc, argv);

  const dit::DiTConfig cfg{.input_size = image,
                           .patch_size = patch,
                           .in_channels = channels,
                           .hidden_size = width,
                           .depth = depth,
                           .num_heads = heads,
                           .num_classes = classes,
                           .num_experts = experts,
                           .top_k = topk,
                           .num_shared_experts = shared};
  const bool cuda = device_name == "cuda";
  const Device device = cuda ? Device::cuda(0) : Device::cpu();
  Generator gen(0);
  dit::DiT model(cfg, gen);
  model.set_activation_checkpointing(checkpointing);
  model.to(device);
  optim::AdamW opt(model.parameters(), {.lr = 1e-4, .weight_decay = 0});
  const Tensor x = randn({batch, channels, image, image}, gen, DType::f32, device);
  const Tensor y = randint(0, classes, {batch}, gen).to(device);
  const int64_t tokens = (image / patch) * (image / patch);
  auto step = [&] {
    const Tensor t = randint(0, 1000, {batch}, gen, DType::f32).to(device);
    const Tensor noise = randn({batch, 2 * channels, image, image}, gen, DType::f32, device);
    dit::DiT::Output o;
    {
      AutocastGuard autocast(DType::bf16, cuda);
      o = model.forward(x, t, y, &gen);
    }
    Tensor loss = mse_loss(o.out.to(DType::f32), noise);
    if (o.aux_loss.defined()) loss = loss + o.aux_loss;
    opt.zero_grad();
    loss.backward();
    opt.step();
  };
  for (int i = 0; i < 3; ++i) step();
  if (cuda) {
    kernels::cuda::synchronize(device.index);
    kernels::cuda::reset_peak_memory(device.index);
  }
  std::vector<double> times;
  for (int64_t i = 0; i < iters; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    step();
    if (cuda) kernels::cuda::synchronize(device.index);
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(times.begin(), times.end());
  const double st = times[times.size() / 2];
  const double flops = dit::train_flops_per_image(cfg) * double(batch);
  std::printf(
      "{\"impl\": \"loom\", \"depth\": %ld, \"width\": %ld, \"experts\": %ld, \"topk\": %ld, "
      "\"shared\": %ld, \"batch\": %ld, \"tokens\": %ld, \"threads\": %d, \"step_s\": %.5f, "
      "\"img_per_s\": %.1f, \"model_gflops\": %.1f, \"params_M\": %.2f, \"device\": \"%s\", "
      "\"peak_mem_GiB\": %.2f, \"activation_checkpointing\": %s}\n",
      long(depth), long(width), long(experts), long(topk), long(shared), long(batch), long(tokens),
      kernels::cpu::num_threads(), st, double(batch) / st, flops / st / 1e9,
      double(model.num_parameters()) / 1e6, device_name.c_str(),
      cuda ? double(kernels::cuda::memory_stats(device.index).peak_allocated) / double(1 << 30) : 0.0,
      checkpointing ? "true" : "false");
  return 0;
}
