#include "trainer/sampling.h"

#include "core/loom.h"
#include "models/diffusion/gaussian_diffusion.h"
#include "models/diffusion/rectified_flow.h"

namespace loom::trainer {

Tensor generate_images(dit::DiT& model, const SamplerConfig& c, const Tensor& labels,
                       Generator& gen, const diffusion::ProgressFn& progress) {
  const dit::DiTConfig& mc = model.config();
  const bool was_training = model.is_training();
  model.eval();
  NoGradGuard no_grad;
  // The sampler's state stays on the host; each model call runs where the model lives (bf16
  // autocast on CUDA) and answers on the host in f32.
  const Device device = model.parameters().front().device();
  const Tensor y = labels.to(device);
  const diffusion::ModelFn fn = [&](const Tensor& x_host, const Tensor& t_host) {
    AutocastGuard autocast(DType::bf16, device.is_cuda() && c.autocast);
    const Tensor x = x_host.to(device), t = t_host.to(device);
    const Tensor out = c.cfg_scale == 1.0 ? model.forward(x, t, y).out
                                          : model.forward_with_cfg(x, t, y, c.cfg_scale);
    return out.to(Device::cpu()).to(x_host.dtype());
  };
  const Shape shape{labels.size(0), mc.in_channels, mc.input_size, mc.input_size};
  Tensor images;
  if (c.objective == "rectified_flow") {
    LOOM_CHECK(c.sampler == "euler", "[sample] rectified flow samples with \"euler\", not \"",
               c.sampler, "\"");
    images = diffusion::RectifiedFlow().sample_euler(fn, shape, c.steps, gen, progress);
  } else {
    LOOM_CHECK(c.sampler == "ddpm" || c.sampler == "ddim",
               "[sample] a DDPM model samples with "
               "\"ddpm\" or \"ddim\", not \"",
               c.sampler, "\"");
    const diffusion::GaussianDiffusion process(
        {.num_timesteps = c.num_timesteps, .learn_sigma = mc.learn_sigma, .respacing = c.steps});
    images = c.sampler == "ddpm" ? process.sample_ddpm(fn, shape, gen, progress)
                                 : process.sample_ddim(fn, shape, c.eta, gen, progress);
  }
  model.train(was_training);
  return images;
}

Tensor class_grid_labels(int64_t num_classes, int64_t per_class) {
  std::vector<int64_t> v;
  for (int64_t c = 0; c < num_classes; ++c)
    for (int64_t i = 0; i < per_class; ++i) v.push_back(c);
  return from_vector(v, {num_classes * per_class});
}

}  // namespace loom::trainer
