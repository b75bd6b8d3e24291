#pragma once
// Gaussian diffusion as trained and sampled by DiT (ALGORITHMS.md §1.9, §1.10): the linear β
// schedule, the forward process q(x_t | x0), the training objective (ε-MSE plus, with learned
// sigma, the variational-bound term that trains only the variance channels), and the DDPM and
// DDIM samplers.
//
// Shapes: data x0, noise and x_t are [B, C, ...] (images [B, C, H, W]), f32 or f64 (all of one
// dtype); step indices t are integer [B] in [0, num_timesteps()). The model (a ModelFn, see
// model_fn.h) receives x_t and t_model [B] f32 = the ORIGINAL step index t_map[t] and returns
// [B, 2C, ...] (ε̂ then v) when learn_sigma, else [B, C, ...] (ε̂), in x_t's dtype.
//
// The schedule lives on the host in float64 (`betas()`, `alphas_cumprod()`); per-sample
// coefficients are gathered for a batch into [B, 1, ...] tensors of the data's dtype, as the
// reference does. With `respacing = n` the process keeps the n steps of space_timesteps(T, n):
// its betas are β'_i = 1 - ᾱ_{t_i}/ᾱ_{t_{i-1}} (ᾱ before the first = 1), so its ᾱ_i equals the
// original ᾱ_{t_i}, and its index i maps to the model input t_i. Training normally uses the full
// process, sampling a respaced one (DiT: 250 steps).
//
// Variance: learned sigma uses the learned range, log σ² = frac·log β_t + (1 - frac)·log β̃_t
// with frac = (v + 1)/2 (β̃_t's log with the t = 0 entry replaced by t = 1); without learned
// sigma the samplers use the fixed "large" variance (β_t, with β̃_1 at t = 0).
#include <cstdint>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"
#include "models/diffusion/model_fn.h"

namespace loom::diffusion {

struct GaussianDiffusionConfig {
  int64_t num_timesteps = 1000;  // steps of the linear schedule the model is trained on
  bool learn_sigma = true;       // model outputs ε̂ and v (2C channels)
  int64_t respacing = 0;         // 0: every step; n: the n steps of space_timesteps(T, n)
};

class GaussianDiffusion {
 public:
  using Losses = diffusion::Losses;

  // Mean and log-variance of p(x_{t-1} | x_t) and the predicted x0 (all [B, C, ...], except the
  // fixed log-variance, which is [B, 1, ...]).
  struct Posterior {
    Tensor mean;
    Tensor log_variance;
    Tensor pred_x0;
  };

  explicit GaussianDiffusion(const GaussianDiffusionConfig& config = {});

  // The original step indices a `count`-step process keeps, sorted: `count` indices evenly
  // strided over [0, num_timesteps - 1] (stride (T-1)/(count-1), rounded half to even), the same
  // as the reference's space_timesteps(T, "count"). 1 <= count <= num_timesteps.
  static std::vector<int64_t> space_timesteps(int64_t num_timesteps, int64_t count);

  int64_t num_timesteps() const { return int64_t(betas_.size()); }  // of this (respaced) process
  bool learn_sigma() const { return learn_sigma_; }
  const std::vector<double>& betas() const { return betas_; }
  const std::vector<double>& alphas_cumprod() const { return alphas_cumprod_; }
  // Index i of this process -> the original step fed to the model (identity unless respaced).
  const std::vector<int64_t>& timestep_map() const { return timestep_map_; }

  // t ~ Uniform{0, ..., num_timesteps() - 1}, i64 [batch].
  Tensor sample_timesteps(int64_t batch, Generator& gen) const;

  // x_t = √ᾱ_t·x0 + √(1-ᾱ_t)·noise; x0 and noise [B, C, ...] of one shape and dtype, t [B].
  Tensor q_sample(const Tensor& x0, const Tensor& t, const Tensor& noise) const;

  // The DiT objective for x0 [B, C, ...], t [B], noise like x0: per sample
  // mse = mean((noise - ε̂)²) and, with learned sigma, vb = (in bits, the mean over C, ...)
  // KL(q(x_{t-1}|x_t,x0) ‖ p(x_{t-1}|x_t)) for t > 0 or the discretized-Gaussian decoder NLL of x0
  // for t = 0, computed from [ε̂.detach(), v] so that vb trains only v. loss = mean_B(mse + vb).
  Losses training_losses(const ModelFn& model, const Tensor& x0, const Tensor& t,
                         const Tensor& noise) const;

  // p(x_{t-1} | x_t) from a model output `out` ([B, 2C, ...] or [B, C, ...]) for x_t at steps t
  // [B] of this process (no clipping of pred_x0).
  Posterior p_mean_variance(const Tensor& out, const Tensor& x_t, const Tensor& t) const;

  // Ancestral sampling (p_sample_loop): x_T ~ N(0, I) of `shape` (f32), then
  // x_{t-1} = μ + σ·z for every step of this process, with no noise at the last step.
  Tensor sample_ddpm(const ModelFn& model, const Shape& shape, Generator& gen,
                     const ProgressFn& progress = {}) const;

  // DDIM sampling with noise scale eta in [0, 1] (0: deterministic, 1: DDPM-like) over every step
  // of this process.
  Tensor sample_ddim(const ModelFn& model, const Shape& shape, double eta, Generator& gen,
                     const ProgressFn& progress = {}) const;

 private:
  void set_betas(std::vector<double> betas);
  std::vector<int64_t> check_steps(const Tensor& t, int64_t batch, const char* op) const;
  Tensor model_t(const std::vector<int64_t>& steps) const;
  Tensor run_model(const ModelFn& model, const Tensor& x_t, const std::vector<int64_t>& steps,
                   const char* op) const;
  Posterior posterior(const Tensor& out, const Tensor& x_t,
                      const std::vector<int64_t>& steps) const;
  Tensor vb_terms(const Tensor& out, const Tensor& x0, const Tensor& x_t,
                  const std::vector<int64_t>& steps) const;

  bool learn_sigma_;
  std::vector<int64_t> timestep_map_;
  std::vector<double> betas_, alphas_cumprod_, alphas_cumprod_prev_;
  std::vector<double> sqrt_alphas_cumprod_, sqrt_one_minus_alphas_cumprod_;
  std::vector<double> sqrt_recip_alphas_cumprod_, sqrt_recipm1_alphas_cumprod_;
  std::vector<double> posterior_log_variance_clipped_, posterior_mean_coef1_, posterior_mean_coef2_;
  std::vector<double> log_betas_, fixed_large_log_variance_;
};

}  // namespace loom::diffusion
