#include "models/diffusion/gaussian_diffusion.h"

#include <cmath>
#include <limits>
#include <numbers>
#include <utility>

#include "core/ops/elementwise.h"
#include "core/ops/index.h"
#include "core/ops/reduce.h"

namespace loom::diffusion {

namespace {

// numpy.linspace in float64: start + i·step, with the last entry set to stop exactly, so the
// schedule matches the reference bit for bit.
std::vector<double> linspace_f64(double start, double stop, int64_t n) {
  std::vector<double> v(static_cast<size_t>(n));
  const double step = (stop - start) / double(n - 1);
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = double(i) * step + start;
  v.back() = stop;
  return v;
}

std::vector<double> cumprod_one_minus(const std::vector<double>& betas) {
  std::vector<double> out(betas.size());
  double acc = 1.0;
  for (size_t i = 0; i < betas.size(); ++i) out[i] = acc *= 1.0 - betas[i];
  return out;
}

// The dims after the batch dim, for per-sample means.
Dims sample_dims(const Tensor& x) {
  Dims d;
  for (int64_t i = 1; i < x.dim(); ++i) d.push_back(i);
  return d;
}

// table[steps[b]] as a [B, 1, ...] tensor broadcastable against `like`.
Tensor gather_coef(const std::vector<double>& table, const std::vector<int64_t>& steps,
                   const Tensor& like) {
  std::vector<double> v(steps.size());
  for (size_t b = 0; b < steps.size(); ++b) v[b] = table[size_t(steps[b])];
  Shape shape(size_t(like.dim()), 1);
  shape[0] = int64_t(steps.size());
  return from_vector(v, shape, like.dtype()).to(like.device());
}

Tensor normal_kl(const Tensor& mean1, const Tensor& logvar1, const Tensor& mean2,
                 const Tensor& logvar2) {
  return 0.5 * (logvar2 - logvar1 + exp(logvar1 - logvar2) +
                square(mean1 - mean2) * exp(neg(logvar2)) - 1.0);
}

// The tanh approximation of the standard normal CDF the reference uses (not erf).
Tensor approx_standard_normal_cdf(const Tensor& x) {
  const double c = std::sqrt(2.0 / std::numbers::pi);
  return 0.5 * (1.0 + tanh(c * (x + 0.044715 * x * x * x)));
}

// log p(x) of data quantized to 256 bins over [-1, 1] under N(means, exp(log_scales)²); the edge
// bins extend to ±∞. Probabilities are floored at 1e-12 so the log stays finite.
Tensor discretized_gaussian_log_likelihood(const Tensor& x, const Tensor& means,
                                           const Tensor& log_scales) {
  const double inf = std::numeric_limits<double>::infinity();
  const Tensor centered = x - means;
  const Tensor inv_stdv = exp(neg(log_scales));
  const Tensor cdf_plus = approx_standard_normal_cdf(inv_stdv * (centered + 1.0 / 255.0));
  const Tensor cdf_min = approx_standard_normal_cdf(inv_stdv * (centered - 1.0 / 255.0));
  const Tensor log_cdf_plus = log(clamp(cdf_plus, 1e-12, inf));
  const Tensor log_one_minus_cdf_min = log(clamp(1.0 - cdf_min, 1e-12, inf));
  const Tensor log_cdf_delta = log(clamp(cdf_plus - cdf_min, 1e-12, inf));
  return where(lt(x, -0.999), log_cdf_plus,
               where(gt(x, 0.999), log_one_minus_cdf_min, log_cdf_delta));
}

}  // namespace

GaussianDiffusion::GaussianDiffusion(const GaussianDiffusionConfig& config)
    : learn_sigma_(config.learn_sigma) {
  const int64_t T = config.num_timesteps;
  LOOM_CHECK(T >= 2, "[diffusion] num_timesteps must be >= 2, got ", T);
  // The reference scales the endpoints by 1000/T so that shorter schedules reach similar ᾱ_T.
  const double scale = 1000.0 / double(T);
  const double beta_end = scale * 0.02;
  LOOM_CHECK(beta_end <= 1.0, "[diffusion] num_timesteps ", T,
             " too small for the linear schedule (beta_end = ", beta_end, " > 1)");
  std::vector<double> betas = linspace_f64(scale * 1e-4, beta_end, T);

  if (config.respacing == 0) {
    timestep_map_.resize(size_t(T));
    for (int64_t i = 0; i < T; ++i) timestep_map_[size_t(i)] = i;
    set_betas(std::move(betas));
    return;
  }
  LOOM_CHECK(config.respacing >= 2 && config.respacing <= T,
             "[diffusion] respacing must be 0 or in [2, ", T, "], got ", config.respacing);
  const std::vector<double> base_ac = cumprod_one_minus(betas);
  std::vector<double> new_betas;
  double last = 1.0;
  for (int64_t t : space_timesteps(T, config.respacing)) {
    new_betas.push_back(1.0 - base_ac[size_t(t)] / last);
    last = base_ac[size_t(t)];
    timestep_map_.push_back(t);
  }
  set_betas(std::move(new_betas));
}

std::vector<int64_t> GaussianDiffusion::space_timesteps(int64_t num_timesteps, int64_t count) {
  LOOM_CHECK(count >= 1 && count <= num_timesteps, "[diffusion] cannot divide ", num_timesteps,
             " steps into ", count);
  // Accumulating the stride (rather than i·stride) and rounding half to even (nearbyint in the
  // default rounding mode, like Python's round) reproduce the reference's picks exactly.
  const double stride = count <= 1 ? 1.0 : double(num_timesteps - 1) / double(count - 1);
  std::vector<int64_t> steps;
  double cur = 0.0;
  for (int64_t k = 0; k < count; ++k) {
    const auto s = int64_t(std::nearbyint(cur));
    if (steps.empty() || steps.back() != s) steps.push_back(s);
    cur += stride;
  }
  LOOM_ASSERT(steps.back() < num_timesteps);
  return steps;
}

void GaussianDiffusion::set_betas(std::vector<double> betas) {
  const size_t n = betas.size();
  for (double b : betas)
    LOOM_CHECK(b > 0.0 && b <= 1.0, "[diffusion] betas must lie in (0, 1], got ", b);
  betas_ = std::move(betas);
  alphas_cumprod_ = cumprod_one_minus(betas_);
  alphas_cumprod_prev_.assign(n, 1.0);
  for (size_t i = 1; i < n; ++i) alphas_cumprod_prev_[i] = alphas_cumprod_[i - 1];

  auto resize = [n](auto&... vs) { (vs.resize(n), ...); };
  resize(sqrt_alphas_cumprod_, sqrt_one_minus_alphas_cumprod_, sqrt_recip_alphas_cumprod_,
         sqrt_recipm1_alphas_cumprod_, posterior_log_variance_clipped_, posterior_mean_coef1_,
         posterior_mean_coef2_, log_betas_, fixed_large_log_variance_);
  std::vector<double> posterior_variance(n);
  for (size_t i = 0; i < n; ++i) {
    const double ac = alphas_cumprod_[i], ac_prev = alphas_cumprod_prev_[i], b = betas_[i];
    sqrt_alphas_cumprod_[i] = std::sqrt(ac);
    sqrt_one_minus_alphas_cumprod_[i] = std::sqrt(1.0 - ac);
    sqrt_recip_alphas_cumprod_[i] = std::sqrt(1.0 / ac);
    sqrt_recipm1_alphas_cumprod_[i] = std::sqrt(1.0 / ac - 1.0);
    posterior_variance[i] = b * (1.0 - ac_prev) / (1.0 - ac);
    posterior_mean_coef1_[i] = b * std::sqrt(ac_prev) / (1.0 - ac);
    posterior_mean_coef2_[i] = (1.0 - ac_prev) * std::sqrt(1.0 - b) / (1.0 - ac);
    log_betas_[i] = std::log(b);
  }
  // β̃_0 = 0, so its log is replaced by that of β̃_1 (the reference's "clipped" log-variance);
  // the fixed large variance takes β̃_1 at t = 0 for the same reason.
  for (size_t i = 0; i < n; ++i) {
    posterior_log_variance_clipped_[i] = std::log(posterior_variance[i == 0 ? 1 : i]);
    fixed_large_log_variance_[i] = i == 0 ? std::log(posterior_variance[1]) : log_betas_[i];
  }
}

Tensor GaussianDiffusion::sample_timesteps(int64_t batch, Generator& gen) const {
  LOOM_CHECK(batch >= 1, "[diffusion] sample_timesteps: batch must be >= 1, got ", batch);
  return randint(0, num_timesteps(), {batch}, gen, DType::i64);
}

std::vector<int64_t> GaussianDiffusion::check_steps(const Tensor& t, int64_t batch,
                                                    const char* op) const {
  LOOM_CHECK(t.dtype() == DType::i64 || t.dtype() == DType::i32, "[diffusion] ", op,
             ": t must be an integer tensor, got ", dtype_name(t.dtype()));
  LOOM_CHECK(t.dim() == 1 && t.size(0) == batch, "[diffusion] ", op, ": t must be [", batch,
             "], got ", shape_str(t.shape()));
  std::vector<int64_t> steps = t.to_vector<int64_t>();
  for (int64_t s : steps)
    LOOM_CHECK(s >= 0 && s < num_timesteps(), "[diffusion] ", op, ": step ", s, " outside [0, ",
               num_timesteps(), ")");
  return steps;
}

namespace {

void check_data(const Tensor& x, const char* what, const char* op) {
  LOOM_CHECK(x.dim() >= 2, "[diffusion] ", op, ": ", what, " must be [B, C, ...], got ",
             shape_str(x.shape()));
  LOOM_CHECK(x.dtype() == DType::f32 || x.dtype() == DType::f64, "[diffusion] ", op, ": ", what,
             " must be f32 or f64, got ", dtype_name(x.dtype()));
}

void check_sample_shape(const Shape& shape, const char* op) {
  LOOM_CHECK(shape.size() >= 2 && numel_of(shape) > 0, "[diffusion] ", op,
             ": shape must be a non-empty [B, C, ...], got ", shape_str(shape));
}

}  // namespace

Tensor GaussianDiffusion::model_t(const std::vector<int64_t>& steps) const {
  std::vector<float> v(steps.size());
  for (size_t b = 0; b < steps.size(); ++b) v[b] = float(timestep_map_[size_t(steps[b])]);
  return from_vector(v, {int64_t(steps.size())});
}

Tensor GaussianDiffusion::run_model(const ModelFn& model, const Tensor& x_t,
                                    const std::vector<int64_t>& steps, const char* op) const {
  LOOM_CHECK(bool(model), "[diffusion] ", op, ": empty model function");
  Tensor out = model(x_t, model_t(steps).to(x_t.device()));
  // Under autocast the model answers in bf16; the loss and the sampler work in x_t's dtype.
  if (out.defined() && is_floating(out.dtype())) out = out.to(x_t.dtype());
  Shape expected = x_t.shape();
  if (learn_sigma_) expected[1] *= 2;
  LOOM_CHECK(out.defined() && out.shape() == expected, "[diffusion] ", op,
             ": model output must be ", shape_str(expected),
             learn_sigma_ ? " (eps and v, learn_sigma)" : " (eps)", ", got ",
             out.defined() ? shape_str(out.shape()) : std::string("an undefined tensor"));
  return out;
}

Tensor GaussianDiffusion::q_sample(const Tensor& x0, const Tensor& t, const Tensor& noise) const {
  check_data(x0, "x0", "q_sample");
  LOOM_CHECK(noise.shape() == x0.shape() && noise.dtype() == x0.dtype(),
             "[diffusion] q_sample: noise ", shape_str(noise.shape()), " ",
             dtype_name(noise.dtype()), " must match x0 ", shape_str(x0.shape()), " ",
             dtype_name(x0.dtype()));
  const std::vector<int64_t> steps = check_steps(t, x0.size(0), "q_sample");
  return gather_coef(sqrt_alphas_cumprod_, steps, x0) * x0 +
         gather_coef(sqrt_one_minus_alphas_cumprod_, steps, x0) * noise;
}

GaussianDiffusion::Posterior GaussianDiffusion::posterior(const Tensor& out, const Tensor& x_t,
                                                          const std::vector<int64_t>& steps) const {
  const int64_t C = x_t.size(1);
  Tensor eps = out, log_variance;
  if (learn_sigma_) {
    const std::vector<Tensor> parts = split(out, {C, C}, 1);
    eps = parts[0];
    // v is deliberately not clamped: the reference lets frac leave [0, 1].
    const Tensor frac = (parts[1] + 1.0) * 0.5;
    log_variance = frac * gather_coef(log_betas_, steps, x_t) +
                   (1.0 - frac) * gather_coef(posterior_log_variance_clipped_, steps, x_t);
  } else {
    log_variance = gather_coef(fixed_large_log_variance_, steps, x_t);
  }
  const Tensor pred_x0 = gather_coef(sqrt_recip_alphas_cumprod_, steps, x_t) * x_t -
                         gather_coef(sqrt_recipm1_alphas_cumprod_, steps, x_t) * eps;
  const Tensor mean = gather_coef(posterior_mean_coef1_, steps, x_t) * pred_x0 +
                      gather_coef(posterior_mean_coef2_, steps, x_t) * x_t;
  return {mean, log_variance, pred_x0};
}

GaussianDiffusion::Posterior GaussianDiffusion::p_mean_variance(const Tensor& out,
                                                                const Tensor& x_t,
                                                                const Tensor& t) const {
  check_data(x_t, "x_t", "p_mean_variance");
  const std::vector<int64_t> steps = check_steps(t, x_t.size(0), "p_mean_variance");
  Shape expected = x_t.shape();
  if (learn_sigma_) expected[1] *= 2;
  LOOM_CHECK(out.shape() == expected && out.dtype() == x_t.dtype(),
             "[diffusion] p_mean_variance: model output must be ", shape_str(expected), " ",
             dtype_name(x_t.dtype()), ", got ", shape_str(out.shape()), " ",
             dtype_name(out.dtype()));
  return posterior(out, x_t, steps);
}

Tensor GaussianDiffusion::vb_terms(const Tensor& out, const Tensor& x0, const Tensor& x_t,
                                   const std::vector<int64_t>& steps) const {
  const Dims dims = sample_dims(x0);
  const double ln2 = std::log(2.0);
  const Posterior p = posterior(out, x_t, steps);
  bool any_zero = false, any_positive = false;
  std::vector<uint8_t> is_zero(steps.size());
  for (size_t b = 0; b < steps.size(); ++b) {
    is_zero[b] = steps[b] == 0;
    (is_zero[b] ? any_zero : any_positive) = true;
  }
  // Each branch is only evaluated when some sample needs it (t = 0 is 1 in T of the draws); the
  // selection by `where` gives the unpicked branch exactly zero gradient.
  Tensor kl, nll;
  if (any_positive) {
    const Tensor true_mean = gather_coef(posterior_mean_coef1_, steps, x0) * x0 +
                             gather_coef(posterior_mean_coef2_, steps, x0) * x_t;
    const Tensor true_log_variance = gather_coef(posterior_log_variance_clipped_, steps, x0);
    kl = mean(normal_kl(true_mean, true_log_variance, p.mean, p.log_variance), dims) / ln2;
  }
  if (any_zero)
    nll = neg(mean(discretized_gaussian_log_likelihood(x0, p.mean, 0.5 * p.log_variance), dims)) /
          ln2;
  if (!any_zero) return kl;
  if (!any_positive) return nll;
  return where(from_vector(is_zero, {int64_t(steps.size())}, DType::boolean).to(kl.device()), nll,
               kl);
}

Losses GaussianDiffusion::training_losses(const ModelFn& model, const Tensor& x0, const Tensor& t,
                                          const Tensor& noise) const {
  const Tensor x_t = q_sample(x0, t, noise);
  const std::vector<int64_t> steps = t.to_vector<int64_t>();
  const Tensor out = run_model(model, x_t, steps, "training_losses");
  const int64_t C = x0.size(1);
  const Dims dims = sample_dims(x0);
  const Tensor eps = learn_sigma_ ? out.narrow(1, 0, C) : out;
  const Tensor mse = mean(square(noise - eps), dims);
  if (!learn_sigma_) {
    const Tensor loss = mean(mse);
    return {loss, loss, zeros({}, x0.dtype(), x0.device())};
  }
  // The mean is detached so the bound trains only the variance channels; ε̂ is trained by the
  // MSE alone.
  const Tensor frozen = cat({eps.detach(), out.narrow(1, C, C)}, 1);
  const Tensor vb = vb_terms(frozen, x0, x_t, steps);
  return {mean(mse + vb), mean(mse), mean(vb)};
}

Tensor GaussianDiffusion::sample_ddpm(const ModelFn& model, const Shape& shape, Generator& gen,
                                      const ProgressFn& progress) const {
  check_sample_shape(shape, "sample_ddpm");
  NoGradGuard no_grad;
  const int64_t T = num_timesteps();
  Tensor x = randn(shape, gen);
  for (int64_t i = T - 1; i >= 0; --i) {
    const std::vector<int64_t> steps(size_t(shape[0]), i);
    const Posterior p = posterior(run_model(model, x, steps, "sample_ddpm"), x, steps);
    x = i > 0 ? p.mean + exp(0.5 * p.log_variance) * randn(shape, gen).to(x.device()) : p.mean;
    if (progress) progress(T - i, T);
  }
  return x;
}

Tensor GaussianDiffusion::sample_ddim(const ModelFn& model, const Shape& shape, double eta,
                                      Generator& gen, const ProgressFn& progress) const {
  check_sample_shape(shape, "sample_ddim");
  // Beyond 1 the deterministic part's coefficient √(1 - ᾱ_prev - σ²) can become imaginary.
  LOOM_CHECK(eta >= 0.0 && eta <= 1.0, "[diffusion] sample_ddim: eta must be in [0, 1], got ", eta);
  NoGradGuard no_grad;
  const int64_t T = num_timesteps();
  Tensor x = randn(shape, gen);
  for (int64_t i = T - 1; i >= 0; --i) {
    const std::vector<int64_t> steps(size_t(shape[0]), i);
    const Tensor pred_x0 = posterior(run_model(model, x, steps, "sample_ddim"), x, steps).pred_x0;
    const size_t k = size_t(i);
    // ε re-derived from pred_x0, as the reference does (it equals ε̂ without clipping).
    const Tensor eps =
        (sqrt_recip_alphas_cumprod_[k] * x - pred_x0) / sqrt_recipm1_alphas_cumprod_[k];
    const double ac = alphas_cumprod_[k], ac_prev = alphas_cumprod_prev_[k];
    const double sigma =
        eta * std::sqrt((1.0 - ac_prev) / (1.0 - ac)) * std::sqrt(1.0 - ac / ac_prev);
    x = std::sqrt(ac_prev) * pred_x0 + std::sqrt(1.0 - ac_prev - sigma * sigma) * eps;
    if (i > 0 && sigma > 0.0) x = x + sigma * randn(shape, gen).to(x.device());
    if (progress) progress(T - i, T);
  }
  return x;
}

}  // namespace loom::diffusion
