#pragma once
// Rectified flow as DiT-MoE trains it with --rf (ALGORITHMS.md §2.5): straight paths
// z_t = (1 - t)·x0 + t·ε between data (t = 0) and noise (t = 1), a velocity target ε - x0, and
// Euler sampling from t = 1 down to 0.
//
// Shapes: x0, ε and z_t are [B, C, ...] (f32 or f64, one dtype); t is [B] with values in [0, 1].
// The model (a ModelFn, see model_fn.h) receives z_t and t itself as t_model [B] f32 (no ×1000)
// and returns [B, C, ...] or [B, 2C, ...] in z_t's dtype; only the first C channels are the
// velocity, extra learned-sigma channels get no loss and are ignored by the sampler. There is no
// variational-bound term (Losses::vb is 0).
#include <cstdint>

#include "core/rng.h"
#include "core/tensor.h"
#include "models/diffusion/model_fn.h"

namespace loom::diffusion {

class RectifiedFlow {
 public:
  using Losses = diffusion::Losses;

  // Logit-normal times t = sigmoid(n), n ~ N(0, 1): f32 [batch].
  Tensor sample_t(int64_t batch, Generator& gen) const;

  // z_t = (1 - t)·x0 + t·noise for x0 and noise [B, C, ...], t [B] floating.
  Tensor interpolate(const Tensor& x0, const Tensor& t, const Tensor& noise) const;

  // Draws t = sample_t(B) and then ε ~ N(0, I) like x0 (in that order, as the reference), and
  // returns the losses below.
  Losses training_losses(const ModelFn& model, const Tensor& x0, Generator& gen) const;
  // loss = mean over everything of (ε - x0 - v̂)², v̂ = the first C model output channels for
  // z_t = interpolate(x0, t, noise). mse = loss, vb = 0.
  Losses training_losses(const ModelFn& model, const Tensor& x0, const Tensor& t,
                         const Tensor& noise) const;

  // Euler integration of dz/dt = v̂ from z_1 ~ N(0, I) of `shape` (f32) to t = 0 in `steps` equal
  // steps: for i = steps, ..., 1 the model sees t = i/steps and z <- z - (1/steps)·v̂.
  Tensor sample_euler(const ModelFn& model, const Shape& shape, int64_t steps, Generator& gen,
                      const ProgressFn& progress = {}) const;
};

}  // namespace loom::diffusion
