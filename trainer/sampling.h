#pragma once
// Generating images from a trained DiT with the recipe's sampler: respaced DDPM, DDIM (eta) or
// Euler for rectified flow, with classifier-free guidance on all channels when cfg_scale != 1
// (DiT::forward_with_cfg). The model is put in eval mode for the call and restored after.
#include <string>

#include "core/rng.h"
#include "models/diffusion/model_fn.h"
#include "models/dit/dit.h"

namespace loom::trainer {

struct SamplerConfig {
  std::string objective = "ddpm";  // "ddpm" | "rectified_flow"
  int64_t num_timesteps = 1000;    // of the training process (DDPM)
  std::string sampler = "ddpm";    // "ddpm" | "ddim" | "euler"
  int64_t steps = 50;
  double cfg_scale = 1.0;
  double eta = 0.0;
  bool autocast = true;  // bf16 autocast when the model is on CUDA (train.precision)
};

// Images [N, C, I, I] for labels [N] (i64), starting from noise drawn from `gen`.
Tensor generate_images(dit::DiT& model, const SamplerConfig& config, const Tensor& labels,
                       Generator& gen, const diffusion::ProgressFn& progress = {});

// Labels 0..num_classes-1, each repeated per_class times: [num_classes * per_class] i64.
Tensor class_grid_labels(int64_t num_classes, int64_t per_class);

}  // namespace loom::trainer
