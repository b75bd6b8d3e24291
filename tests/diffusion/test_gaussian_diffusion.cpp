// GaussianDiffusion: the linear schedule and respacing (ALGORITHMS.md §10 DiT oracles 4 and 6), the
// forward process, the training objective against closed forms written out here on the host, the
// gradient routing of the vb term, and the samplers against analytic ε-predictors.
#include "models/diffusion/gaussian_diffusion.h"

#include <cmath>
#include <cstdlib>
#include <map>
#include <numbers>

#include "core/safetensors.h"

#include "testing.h"

namespace loom::diffusion {
namespace {

using loom::testing::allclose;
using loom::testing::gradcheck;
using loom::testing::uniform;

using loom::testing::expect_error;

// Per-sample values as a [B, 1, 1, 1] tensor of `dtype`.
Tensor per_sample(const std::vector<double>& v, DType dtype) {
  return from_vector(v, {int64_t(v.size()), 1, 1, 1}, dtype);
}

// The model input t_model back to original step indices (they must be whole numbers).
std::vector<int64_t> model_steps(const Tensor& t_model) {
  EXPECT_EQ(t_model.dtype(), DType::f32);
  std::vector<int64_t> steps;
  for (float v : t_model.to_vector<float>()) {
    EXPECT_EQ(v, std::round(v));
    steps.push_back(int64_t(v));
  }
  return steps;
}

// The exact ε-predictor when all data sit at x_star [1, C, ...]: x_t = √ᾱ x* + √(1-ᾱ) ε, so
// ε = (x_t - √ᾱ x*) / √(1-ᾱ). `ac` is the ORIGINAL schedule (the model sees original steps). With
// learn_sigma the v channels are -1, i.e. σ² = β̃_t, the true posterior variance.
ModelFn dirac_model(const std::vector<double>& ac, const Tensor& x_star, bool learn_sigma) {
  return [=](const Tensor& x, const Tensor& t) {
    std::vector<double> a, r;
    for (int64_t s : model_steps(t)) {
      a.push_back(std::sqrt(ac[size_t(s)]));
      r.push_back(1.0 / std::sqrt(1.0 - ac[size_t(s)]));
    }
    const Tensor eps = (x - per_sample(a, x.dtype()) * x_star) * per_sample(r, x.dtype());
    return learn_sigma ? cat({eps, full_like(eps, -1.0)}, 1) : eps;
  };
}

// The exact ε-predictor for data ~ N(mu, s²) per element: x_t ~ N(√ᾱ mu, ᾱ s² + 1 - ᾱ) and
// E[ε | x_t] = √(1-ᾱ) (x_t - √ᾱ mu) / (ᾱ s² + 1 - ᾱ).
ModelFn gaussian_data_model(const std::vector<double>& ac, double mu, double s, bool learn_sigma) {
  return [=](const Tensor& x, const Tensor& t) {
    std::vector<double> a, k;
    for (int64_t step : model_steps(t)) {
      const double abar = ac[size_t(step)];
      a.push_back(std::sqrt(abar) * mu);
      k.push_back(std::sqrt(1.0 - abar) / (abar * s * s + 1.0 - abar));
    }
    const Tensor eps = (x - per_sample(a, x.dtype())) * per_sample(k, x.dtype());
    return learn_sigma ? cat({eps, full_like(eps, -1.0)}, 1) : eps;
  };
}

// A model that ignores its input and returns `out` (a leaf the test can read gradients from).
ModelFn constant_model(const Tensor& out) {
  return [out](const Tensor&, const Tensor&) { return out; };
}

double mean_of(const Tensor& x) {
  return mean(x.to(DType::f64)).item();
}
double std_of(const Tensor& x) {
  return std::sqrt(var(x.to(DType::f64), {}, false, 0).item());
}

// ---- schedule and respacing ---------------------------------------------------------------------

TEST(GaussianDiffusionSchedule, LinearBetasAndAlphasCumprod) {
  const GaussianDiffusion d;
  ASSERT_EQ(d.num_timesteps(), 1000);
  EXPECT_TRUE(d.learn_sigma());
  const auto& b = d.betas();
  const auto& ac = d.alphas_cumprod();
  EXPECT_DOUBLE_EQ(b.front(), 1e-4);
  EXPECT_DOUBLE_EQ(b.back(), 0.02);
  EXPECT_NEAR(b[500], 1e-4 + 500 * (0.02 - 1e-4) / 999, 1e-17);
  EXPECT_NEAR(ac.back(), 4.0358e-5, 5e-9);
  double prod = 1.0;
  for (size_t i = 0; i < b.size(); ++i) {
    prod *= 1.0 - b[i];
    ASSERT_NEAR(ac[i], prod, 1e-15 * prod) << i;
  }
  for (int64_t i = 0; i < 1000; ++i) EXPECT_EQ(d.timestep_map()[size_t(i)], i);
}

TEST(GaussianDiffusionSchedule, ShorterScheduleScalesEndpoints) {
  const GaussianDiffusion d({.num_timesteps = 100});
  EXPECT_DOUBLE_EQ(d.betas().front(), 1e-3);
  EXPECT_DOUBLE_EQ(d.betas().back(), 0.2);
}

TEST(GaussianDiffusionSchedule, SpaceTimesteps250) {
  const std::vector<int64_t> s = GaussianDiffusion::space_timesteps(1000, 250);
  ASSERT_EQ(s.size(), 250u);
  EXPECT_EQ(s.front(), 0);
  EXPECT_EQ(s.back(), 999);
  // Stride 999/249 ≈ 4.012: gaps of 4, with a 5 each time the accumulated excess rounds over.
  EXPECT_EQ(std::vector<int64_t>(s.begin(), s.begin() + 4), (std::vector<int64_t>{0, 4, 8, 12}));
  int fives = 0;
  for (size_t i = 1; i < s.size(); ++i) {
    const int64_t gap = s[i] - s[i - 1];
    ASSERT_TRUE(gap == 4 || gap == 5) << i << ": " << gap;
    fives += gap == 5;
  }
  EXPECT_EQ(fives, 999 - 4 * 249);
}

TEST(GaussianDiffusionSchedule, SpaceTimestepsSmallCases) {
  using V = std::vector<int64_t>;
  EXPECT_EQ(GaussianDiffusion::space_timesteps(1000, 10),
            (V{0, 111, 222, 333, 444, 555, 666, 777, 888, 999}));
  EXPECT_EQ(GaussianDiffusion::space_timesteps(5, 5), (V{0, 1, 2, 3, 4}));
  EXPECT_EQ(GaussianDiffusion::space_timesteps(100, 1), (V{0}));
  // Halves round to even, as Python's round: stride 2.5 picks round(2.5) = 2, stride 1.5 picks 2.
  EXPECT_EQ(GaussianDiffusion::space_timesteps(6, 3), (V{0, 2, 5}));
  EXPECT_EQ(GaussianDiffusion::space_timesteps(4, 3), (V{0, 2, 3}));
  expect_error([] { GaussianDiffusion::space_timesteps(10, 11); }, "cannot divide 10 steps");
  expect_error([] { GaussianDiffusion::space_timesteps(10, 0); }, "cannot divide");
}

TEST(GaussianDiffusionSchedule, RespacedKeepsOriginalAlphasCumprod) {
  const GaussianDiffusion full;
  const GaussianDiffusion d({.respacing = 250});
  ASSERT_EQ(d.num_timesteps(), 250);
  const std::vector<int64_t> kept = GaussianDiffusion::space_timesteps(1000, 250);
  EXPECT_EQ(d.timestep_map(), kept);
  for (size_t i = 0; i < kept.size(); ++i) {
    const double orig = full.alphas_cumprod()[size_t(kept[i])];
    ASSERT_NEAR(d.alphas_cumprod()[i], orig, 1e-12 * orig) << i;
    const double prev = i == 0 ? 1.0 : full.alphas_cumprod()[size_t(kept[i - 1])];
    ASSERT_NEAR(d.betas()[i], 1.0 - orig / prev, 1e-15) << i;
  }
  // Respacing to every step is the full process (betas re-derived from ᾱ, up to rounding).
  const GaussianDiffusion same({.respacing = 1000});
  for (size_t i = 0; i < 1000; ++i) ASSERT_NEAR(same.betas()[i], full.betas()[i], 1e-15) << i;
}

TEST(GaussianDiffusionSchedule, BadConfigsThrow) {
  expect_error([] { GaussianDiffusion({.num_timesteps = 1}); }, "num_timesteps must be >= 2");
  expect_error([] { GaussianDiffusion({.num_timesteps = 10}); }, "too small");
  expect_error([] { GaussianDiffusion({.respacing = 1}); }, "respacing");
  expect_error([] { GaussianDiffusion({.respacing = 1001}); }, "respacing");
}

// ---- forward process ----------------------------------------------------------------------------

TEST(GaussianDiffusionQSample, MatchesFormulaPerSample) {
  const GaussianDiffusion d;
  const Tensor x0 = uniform({3, 2, 2, 2}, -1, 1, 1);
  const Tensor noise = uniform({3, 2, 2, 2}, -2, 2, 2);
  const std::vector<int64_t> steps = {0, 417, 999};
  const Tensor xt = d.q_sample(x0, from_vector(steps, {3}), noise);
  const auto vx = x0.to_vector<double>(), vn = noise.to_vector<double>();
  std::vector<double> expected(vx.size());
  for (size_t i = 0; i < vx.size(); ++i) {
    const double ac = d.alphas_cumprod()[size_t(steps[i / 8])];
    expected[i] = std::sqrt(ac) * vx[i] + std::sqrt(1 - ac) * vn[i];
  }
  EXPECT_TRUE(allclose(xt, from_vector(expected, {3, 2, 2, 2}), 1e-14, 1e-14));
}

TEST(GaussianDiffusionQSample, Statistics) {
  const GaussianDiffusion d;
  Generator gen(3, 0);
  const int64_t B = 4096;
  const Tensor x0 = full({B, 1, 2, 2}, 0.8);
  const Tensor t = full({B}, 300, DType::i64);
  const Tensor xt = d.q_sample(x0, t, randn({B, 1, 2, 2}, gen));
  const double ac = d.alphas_cumprod()[300];
  // 16384 draws: the standard error of the mean is ~0.006·√(1-ᾱ).
  EXPECT_NEAR(mean_of(xt), std::sqrt(ac) * 0.8, 0.03);
  EXPECT_NEAR(std_of(xt), std::sqrt(1 - ac), 0.02);
}

TEST(GaussianDiffusionQSample, RejectsMisuse) {
  const GaussianDiffusion d;
  const Tensor x = zeros({2, 1, 2, 2});
  expect_error([&] { d.q_sample(x, from_vector<int64_t>({0, 1000}, {2}), x); }, "step 1000");
  expect_error([&] { d.q_sample(x, from_vector<int64_t>({-1, 0}, {2}), x); }, "step -1");
  expect_error([&] { d.q_sample(x, from_vector<float>({0, 1}, {2}), x); }, "integer");
  expect_error([&] { d.q_sample(x, from_vector<int64_t>({0}, {1}), x); }, "t must be [2]");
  expect_error(
      [&] {
        d.q_sample(x, from_vector<int64_t>({0, 1}, {2}), zeros({2, 1, 2, 3}));
      },
      "noise");
  expect_error(
      [&] {
        d.q_sample(zeros({2}), from_vector<int64_t>({0, 1}, {2}), zeros({2}));
      },
      "[B, C, ...]");
}

// ---- training objective -------------------------------------------------------------------------

// x0, noise [B, C, H, W] f64 at steps t; the model's ε̂ = noise + delta and v given.
struct LossCase {
  Tensor x0, noise, delta, v;
  std::vector<int64_t> steps;
};

LossCase make_case(const std::vector<int64_t>& steps, double delta_scale, uint64_t seed) {
  const int64_t B = int64_t(steps.size());
  return {uniform({B, 2, 3, 3}, -1, 1, seed), uniform({B, 2, 3, 3}, -2, 2, seed + 1),
          uniform({B, 2, 3, 3}, -delta_scale, delta_scale, seed + 2),
          uniform({B, 2, 3, 3}, -1, 1, seed + 3), steps};
}

// Per-sample vb (bits) written out from §1.9 on the host: KL between the true posterior and the
// model's for t > 0, the discretized-Gaussian decoder NLL for t = 0.
std::vector<double> host_vb(const GaussianDiffusion& d, const LossCase& c) {
  const auto& b = d.betas();
  const auto& ac = d.alphas_cumprod();
  const auto x0 = c.x0.to_vector<double>(), n = c.noise.to_vector<double>();
  const auto dl = c.delta.to_vector<double>(), v = c.v.to_vector<double>();
  const size_t per = x0.size() / c.steps.size();
  auto beta_tilde = [&](size_t t) { return b[t] * (1 - ac[t - 1]) / (1 - ac[t]); };
  auto cdf = [](double x) {
    return 0.5 * (1 + std::tanh(std::sqrt(2 / std::numbers::pi) * (x + 0.044715 * x * x * x)));
  };
  std::vector<double> out;
  for (size_t s = 0; s < c.steps.size(); ++s) {
    const size_t t = size_t(c.steps[s]);
    const double a = ac[t], a_prev = t == 0 ? 1.0 : ac[t - 1];
    const double c1 = b[t] * std::sqrt(a_prev) / (1 - a);
    const double c2 = (1 - a_prev) * std::sqrt(1 - b[t]) / (1 - a);
    const double min_log = std::log(beta_tilde(t == 0 ? 1 : t));
    double total = 0;
    for (size_t k = s * per; k < (s + 1) * per; ++k) {
      const double xt = std::sqrt(a) * x0[k] + std::sqrt(1 - a) * n[k];
      const double eps_hat = n[k] + dl[k];
      const double pred_x0 = xt / std::sqrt(a) - std::sqrt(1 / a - 1) * eps_hat;
      const double mean = c1 * pred_x0 + c2 * xt;
      const double frac = (v[k] + 1) / 2;
      const double lv = frac * std::log(b[t]) + (1 - frac) * min_log;
      if (t > 0) {
        const double true_mean = c1 * x0[k] + c2 * xt;
        total += 0.5 * (-1 + lv - min_log + std::exp(min_log - lv) +
                        (true_mean - mean) * (true_mean - mean) * std::exp(-lv));
      } else {
        const double inv_std = std::exp(-0.5 * lv), cx = x0[k] - mean;
        const double plus = cdf(inv_std * (cx + 1 / 255.0)),
                     minus = cdf(inv_std * (cx - 1 / 255.0));
        const double p = x0[k] < -0.999 ? plus : x0[k] > 0.999 ? 1 - minus : plus - minus;
        total -= std::log(std::max(p, 1e-12));
      }
    }
    out.push_back(total / double(per) / std::log(2.0));
  }
  return out;
}

Tensor model_output(const LossCase& c) {
  return cat({c.noise + c.delta, c.v}, 1);
}

TEST(GaussianDiffusionLosses, TrueEpsGivesZeroMseAndTrueVarianceGivesZeroKl) {
  const GaussianDiffusion d;
  LossCase c = make_case({1, 10, 500, 999}, 0.0, 11);
  c.v = full_like(c.v, -1.0);  // frac = 0: log σ² = log β̃_t, the true posterior variance
  const Losses l =
      d.training_losses(constant_model(model_output(c)), c.x0, from_vector(c.steps, {4}), c.noise);
  EXPECT_EQ(l.mse.item(), 0.0);
  EXPECT_NEAR(l.vb.item(), 0.0, 1e-12);
  EXPECT_NEAR(l.loss.item(), 0.0, 1e-12);
  // f32, the usual training dtype: still exact for the MSE.
  const Losses l32 =
      d.training_losses(constant_model(model_output(c).to(DType::f32)), c.x0.to(DType::f32),
                        from_vector(c.steps, {4}), c.noise.to(DType::f32));
  EXPECT_EQ(l32.mse.item(), 0.0);
  EXPECT_NEAR(l32.vb.item(), 0.0, 1e-5);
}

TEST(GaussianDiffusionLosses, KlMatchesClosedFormForAnyVarianceAndMeanError) {
  const GaussianDiffusion d;
  const LossCase c = make_case({1, 37, 400, 998}, 0.3, 21);
  const Losses l =
      d.training_losses(constant_model(model_output(c)), c.x0, from_vector(c.steps, {4}), c.noise);
  const std::vector<double> vb = host_vb(d, c);
  const double vb_mean = (vb[0] + vb[1] + vb[2] + vb[3]) / 4;
  const double mse = mean(square(c.delta)).item();
  EXPECT_GT(vb_mean, 1e-3);
  EXPECT_NEAR(l.vb.item(), vb_mean, 1e-12 * (1 + vb_mean));
  EXPECT_NEAR(l.mse.item(), mse, 1e-14);
  EXPECT_NEAR(l.loss.item(), mse + vb_mean, 1e-12 * (1 + vb_mean));
}

TEST(GaussianDiffusionLosses, DecoderNllAtStepZeroMatchesDiscretizedGaussian) {
  const GaussianDiffusion d;
  LossCase c = make_case({0, 0, 0}, 1.0, 31);
  // Put data in both edge bins and next to them: the edges integrate to ±∞.
  std::vector<double> x0 = c.x0.to_vector<double>();
  x0[0] = -1.0, x0[1] = 1.0, x0[2] = -0.9995, x0[3] = 0.9995, x0[4] = 0.998, x0[5] = -0.998;
  c.x0 = from_vector(x0, c.x0.shape());
  const Losses l =
      d.training_losses(constant_model(model_output(c)), c.x0, from_vector(c.steps, {3}), c.noise);
  const std::vector<double> vb = host_vb(d, c);
  const double expected = (vb[0] + vb[1] + vb[2]) / 3;
  EXPECT_GT(expected, 0.5);
  EXPECT_NEAR(l.vb.item(), expected, 1e-10 * expected);
}

TEST(GaussianDiffusionLosses, MixedBatchPicksKlOrNllPerSample) {
  const GaussianDiffusion d;
  const LossCase c = make_case({0, 5, 0, 700}, 0.5, 41);
  const Losses l =
      d.training_losses(constant_model(model_output(c)), c.x0, from_vector(c.steps, {4}), c.noise);
  const std::vector<double> vb = host_vb(d, c);
  EXPECT_NEAR(l.vb.item(), (vb[0] + vb[1] + vb[2] + vb[3]) / 4, 1e-10);
}

TEST(GaussianDiffusionLosses, ModelSeesXtAndOriginalStep) {
  const GaussianDiffusion d({.respacing = 50});
  const LossCase c = make_case({0, 3, 49}, 0.1, 51);
  const Tensor t = from_vector(c.steps, {3});
  Tensor seen_x, seen_t;
  const ModelFn model = [&](const Tensor& x, const Tensor& tm) {
    seen_x = x, seen_t = tm;
    return model_output(c);
  };
  d.training_losses(model, c.x0, t, c.noise);
  EXPECT_TRUE(allclose(seen_x, d.q_sample(c.x0, t, c.noise), 0, 0));
  const auto& map = d.timestep_map();
  EXPECT_EQ(seen_t.to_vector<float>(),
            (std::vector<float>{float(map[0]), float(map[3]), float(map[49])}));
  EXPECT_EQ(map[49], 999);
}

TEST(GaussianDiffusionLosses, VbSendsNoGradientToEpsChannels) {
  const GaussianDiffusion d;
  const LossCase c = make_case({0, 2, 300, 999}, 0.5, 61);
  const Tensor out = model_output(c).detach().set_requires_grad(true);
  const Losses l = d.training_losses(constant_model(out), c.x0, from_vector(c.steps, {4}), c.noise);
  l.vb.backward(Tensor(), true);
  const Tensor g_vb = out.grad();
  ASSERT_TRUE(g_vb.defined());
  EXPECT_EQ(amax(abs(g_vb.narrow(1, 0, 2))).item(), 0.0);
  EXPECT_GT(amax(abs(g_vb.narrow(1, 2, 2))).item(), 1e-4);
  // The whole loss: the ε channels get exactly the MSE gradient 2(ε̂ - ε)/(B·C·H·W).
  out.zero_grad();
  l.loss.backward();
  const Tensor g = out.grad();
  EXPECT_TRUE(allclose(g.narrow(1, 0, 2), c.delta * (2.0 / double(c.delta.numel())), 1e-15, 1e-12));
  // loss = mean(mse) + mean(vb), so the v channels get exactly vb's gradient.
  EXPECT_TRUE(allclose(g.narrow(1, 2, 2), g_vb.narrow(1, 2, 2), 1e-15, 1e-12));
}

TEST(GaussianDiffusionLosses, VarianceGradientMatchesFiniteDifferences) {
  const GaussianDiffusion d;
  const LossCase c = make_case({0, 1, 250, 999}, 0.5, 71);
  const Tensor eps_hat = c.noise + c.delta;
  const Tensor t = from_vector(c.steps, {4});
  EXPECT_TRUE(gradcheck(
      [&](const std::vector<Tensor>& in) {
        return d.training_losses(constant_model(cat({eps_hat, in[0]}, 1)), c.x0, t, c.noise).loss;
      },
      {c.v}, 1e-6, 1e-8, 1e-5));
}

TEST(GaussianDiffusionLosses, FixedSigmaIsPlainEpsMse) {
  const GaussianDiffusion d({.learn_sigma = false});
  const LossCase c = make_case({0, 500}, 0.7, 81);
  const Tensor out = (c.noise + c.delta).detach().set_requires_grad(true);
  const Losses l = d.training_losses(constant_model(out), c.x0, from_vector(c.steps, {2}), c.noise);
  EXPECT_NEAR(l.loss.item(), mean(square(c.delta)).item(), 1e-15);
  EXPECT_EQ(l.mse.item(), l.loss.item());
  EXPECT_EQ(l.vb.item(), 0.0);
  l.loss.backward();
  EXPECT_TRUE(allclose(out.grad(), c.delta * (2.0 / double(c.delta.numel())), 1e-15, 1e-12));
}

TEST(GaussianDiffusionLosses, RejectsWrongModelOutput) {
  const GaussianDiffusion learned, fixed({.learn_sigma = false});
  const LossCase c = make_case({0, 5}, 0.1, 91);
  const Tensor t = from_vector(c.steps, {2});
  expect_error([&] { learned.training_losses(constant_model(c.noise), c.x0, t, c.noise); },
               "model output must be [2, 4, 3, 3]");
  expect_error([&] { fixed.training_losses(constant_model(model_output(c)), c.x0, t, c.noise); },
               "model output must be [2, 2, 3, 3]");
  // A model answering in another floating dtype (bf16 under autocast) is converted, not refused.
  const Losses narrowed =
      learned.training_losses(constant_model(model_output(c).to(DType::f32)), c.x0, t, c.noise);
  const Losses exact = learned.training_losses(constant_model(model_output(c)), c.x0, t, c.noise);
  EXPECT_EQ(narrowed.loss.dtype(), DType::f64);
  EXPECT_NEAR(narrowed.loss.item(), exact.loss.item(), 1e-5 * std::abs(exact.loss.item()));
  expect_error([&] { learned.training_losses(ModelFn(), c.x0, t, c.noise); }, "empty model");
}

TEST(GaussianDiffusionLosses, SampleTimestepsCoversRange) {
  const GaussianDiffusion d({.num_timesteps = 50});
  Generator gen(5, 1);
  const Tensor t = d.sample_timesteps(5000, gen);
  EXPECT_EQ(t.dtype(), DType::i64);
  const auto v = t.to_vector<int64_t>();
  std::vector<int> count(50);
  for (int64_t s : v) {
    ASSERT_TRUE(s >= 0 && s < 50) << s;
    ++count[size_t(s)];
  }
  for (int n : count) EXPECT_GT(n, 50);  // expected 100 each
}

TEST(GaussianDiffusionPosterior, LearnedRangeAndFixedLargeVariance) {
  const GaussianDiffusion learned, fixed({.learn_sigma = false});
  const auto& b = learned.betas();
  const auto& ac = learned.alphas_cumprod();
  const std::vector<int64_t> steps = {0, 1, 600};
  const Tensor t = from_vector(steps, {3});
  const Tensor x_t = uniform({3, 1, 2, 2}, -2, 2, 111);
  const Tensor eps = uniform({3, 1, 2, 2}, -1, 1, 112);
  const Tensor v = uniform({3, 1, 2, 2}, -1.5, 1.5, 113);  // frac may leave [0, 1]: not clamped
  const auto vx = x_t.to_vector<double>(), ve = eps.to_vector<double>(), vv = v.to_vector<double>();
  auto beta_tilde = [&](size_t i) { return b[i] * (1 - ac[i - 1]) / (1 - ac[i]); };
  std::vector<double> mean_ref, pred_ref, lv_learned, lv_fixed;
  for (size_t k = 0; k < vx.size(); ++k) {
    const size_t i = size_t(steps[k / 4]);
    const double a = ac[i], a_prev = i == 0 ? 1.0 : ac[i - 1];
    const double pred = vx[k] / std::sqrt(a) - std::sqrt(1 / a - 1) * ve[k];
    pred_ref.push_back(pred);
    mean_ref.push_back(b[i] * std::sqrt(a_prev) / (1 - a) * pred +
                       (1 - a_prev) * std::sqrt(1 - b[i]) / (1 - a) * vx[k]);
    const double frac = (vv[k] + 1) / 2;
    lv_learned.push_back(frac * std::log(b[i]) + (1 - frac) * std::log(beta_tilde(i == 0 ? 1 : i)));
    if (k % 4 == 0) lv_fixed.push_back(i == 0 ? std::log(beta_tilde(1)) : std::log(b[i]));
  }
  const GaussianDiffusion::Posterior pl = learned.p_mean_variance(cat({eps, v}, 1), x_t, t);
  EXPECT_TRUE(allclose(pl.pred_x0, from_vector(pred_ref, {3, 1, 2, 2}), 1e-13, 1e-12));
  EXPECT_TRUE(allclose(pl.mean, from_vector(mean_ref, {3, 1, 2, 2}), 1e-13, 1e-12));
  EXPECT_TRUE(allclose(pl.log_variance, from_vector(lv_learned, {3, 1, 2, 2}), 1e-13, 1e-13));
  const GaussianDiffusion::Posterior pf = fixed.p_mean_variance(eps, x_t, t);
  EXPECT_TRUE(allclose(pf.mean, from_vector(mean_ref, {3, 1, 2, 2}), 1e-13, 1e-12));
  EXPECT_TRUE(allclose(pf.log_variance, from_vector(lv_fixed, {3, 1, 1, 1}), 1e-13, 1e-13));
  expect_error([&] { learned.p_mean_variance(eps, x_t, t); }, "model output must be");
}

// ---- samplers -----------------------------------------------------------------------------------

TEST(GaussianDiffusionSampling, DdimReturnsDiracPoint) {
  const GaussianDiffusion full;
  const Tensor x_star = uniform({1, 2, 3, 3}, -1, 1, 101, DType::f32);
  const Tensor expected = x_star.expand({3, 2, 3, 3});
  for (int64_t respacing : {0, 50}) {
    const GaussianDiffusion d({.respacing = respacing});
    Generator gen(7, 0);
    const ModelFn model = dirac_model(full.alphas_cumprod(), x_star, true);
    EXPECT_TRUE(allclose(d.sample_ddim(model, {3, 2, 3, 3}, 0.0, gen), expected, 1e-4, 1e-4))
        << respacing;
    EXPECT_TRUE(allclose(d.sample_ddim(model, {3, 2, 3, 3}, 1.0, gen), expected, 1e-4, 1e-4))
        << respacing;
  }
}

TEST(GaussianDiffusionSampling, DdpmReturnsDiracPoint) {
  const GaussianDiffusion full;
  const Tensor x_star = uniform({1, 2, 3, 3}, -1, 1, 102, DType::f32);
  for (int64_t respacing : {0, 25}) {
    for (bool learn_sigma : {true, false}) {
      const GaussianDiffusion d({.learn_sigma = learn_sigma, .respacing = respacing});
      Generator gen(8, 0);
      const Tensor x =
          d.sample_ddpm(dirac_model(full.alphas_cumprod(), x_star, learn_sigma), {2, 2, 3, 3}, gen);
      EXPECT_TRUE(allclose(x, x_star.expand({2, 2, 3, 3}), 1e-3, 1e-3))
          << respacing << " " << learn_sigma;
    }
  }
}

TEST(GaussianDiffusionSampling, DdpmAndDdimMatchGaussianData) {
  // Data ~ N(0.3, 0.5²) per element with the exact ε-predictor: samples must have that mean and
  // standard deviation (4096 elements: standard errors ~0.008 and ~0.006).
  const GaussianDiffusion full;
  const double mu = 0.3, s = 0.5;
  const Shape shape{16, 1, 16, 16};
  {
    Generator gen(10, 0);
    const Tensor x =
        full.sample_ddpm(gaussian_data_model(full.alphas_cumprod(), mu, s, true), shape, gen);
    EXPECT_NEAR(mean_of(x), mu, 0.035);
    EXPECT_NEAR(std_of(x), s, 0.025);
  }
  {
    const GaussianDiffusion d({.learn_sigma = false, .respacing = 250});
    Generator gen(11, 0);
    const Tensor x =
        d.sample_ddim(gaussian_data_model(full.alphas_cumprod(), mu, s, false), shape, 0.0, gen);
    EXPECT_NEAR(mean_of(x), mu, 0.035);
    EXPECT_NEAR(std_of(x), s, 0.025);
  }
  {
    // η = 1: stochastic DDIM also keeps the data distribution.
    Generator gen(12, 0);
    const Tensor x =
        full.sample_ddim(gaussian_data_model(full.alphas_cumprod(), mu, s, true), shape, 1.0, gen);
    EXPECT_NEAR(mean_of(x), mu, 0.035);
    EXPECT_NEAR(std_of(x), s, 0.025);
  }
  {
    // The same model fed the respaced index instead of the original step (a broken timestep
    // map) misses the distribution: the checks above have the power to see it.
    const GaussianDiffusion d({.learn_sigma = false, .respacing = 250});
    const ModelFn exact = gaussian_data_model(full.alphas_cumprod(), mu, s, false);
    const ModelFn wrong = [&](const Tensor& x, const Tensor& t) {
      std::vector<float> idx;
      for (float v : t.to_vector<float>()) idx.push_back(float(std::lround(v) / 4));
      return exact(x, from_vector(idx, {t.size(0)}));
    };
    Generator gen(11, 0);
    const Tensor x = d.sample_ddim(wrong, shape, 0.0, gen);
    EXPECT_GT(std::abs(std_of(x) - s) + std::abs(mean_of(x) - mu), 0.1);
  }
}

TEST(GaussianDiffusionSampling, DeterminismProgressAndNoGraph) {
  const GaussianDiffusion full, d({.respacing = 20});
  const Tensor x_star = zeros({1, 1, 2, 2});
  const Tensor w = ones({1}).set_requires_grad(true);
  std::vector<float> seen_t;
  const ModelFn base = dirac_model(full.alphas_cumprod(), x_star, true);
  const ModelFn model = [&](const Tensor& x, const Tensor& t) {
    EXPECT_FALSE(grad_enabled());
    seen_t.push_back(t.to_vector<float>()[0]);
    return base(x, t) * w;
  };
  std::vector<std::pair<int64_t, int64_t>> calls;
  const ProgressFn progress = [&](int64_t step, int64_t total) { calls.emplace_back(step, total); };
  Generator g1(12, 0), g2(12, 0);
  const Tensor a = d.sample_ddpm(model, {2, 1, 2, 2}, g1, progress);
  EXPECT_FALSE(a.requires_grad());
  ASSERT_EQ(calls.size(), 20u);
  for (int64_t i = 0; i < 20; ++i) EXPECT_EQ(calls[size_t(i)], std::make_pair(i + 1, int64_t(20)));
  ASSERT_EQ(seen_t.size(), 20u);
  for (size_t i = 0; i < 20; ++i) EXPECT_EQ(seen_t[i], float(d.timestep_map()[19 - i]));
  EXPECT_TRUE(allclose(d.sample_ddpm(model, {2, 1, 2, 2}, g2), a, 0, 0));
}

TEST(GaussianDiffusionSampling, RejectsMisuse) {
  const GaussianDiffusion full, d({.respacing = 10});
  Generator gen(13, 0);
  const ModelFn model = dirac_model(full.alphas_cumprod(), zeros({1, 1, 2, 2}), true);
  expect_error([&] { d.sample_ddim(model, {1, 1, 2, 2}, -0.1, gen); }, "eta");
  expect_error([&] { d.sample_ddim(model, {1, 1, 2, 2}, 1.5, gen); }, "eta");
  expect_error([&] { d.sample_ddpm(model, {4}, gen); }, "shape");
  expect_error(
      [&] {
        d.sample_ddpm(constant_model(zeros({1, 1, 2, 2})), {1, 1, 2, 2}, gen);
      },
      "model output");
}

// ---- reference parity (tests/golden/gen_diffusion_fixture.py, torch f64) ------------------------

std::map<std::string, Tensor> load_fixture(const std::string& name) {
  const char* root = std::getenv("LOOM_SOURCE_DIR");
  const SafetensorsFile f = load_safetensors(std::string(root ? root : ".") +
                                             "/tests/golden/fixtures/" + name + ".safetensors");
  return {f.tensors.begin(), f.tensors.end()};
}

TEST(GaussianDiffusionParity, TrainingLossesAndGradient) {
  auto f = load_fixture("diffusion_losses");
  const GaussianDiffusion d;
  const Tensor out = f.at("out").clone().detach().set_requires_grad(true);
  const Losses l = d.training_losses(constant_model(out), f.at("x0"), f.at("t"), f.at("noise"));
  EXPECT_NEAR(l.loss.item(), f.at("loss").item(), 1e-12);
  EXPECT_NEAR(l.mse.item(), f.at("mse").item(), 1e-12);
  EXPECT_NEAR(l.vb.item(), f.at("vb").item(), 1e-12);
  l.loss.backward();
  EXPECT_TRUE(allclose(out.grad(), f.at("grad.out"), 1e-12, 1e-9));
  // Per sample, through the host closed form of this file (the fixture includes t = 0 and edges).
  const int64_t B = f.at("t").size(0);
  const LossCase c{f.at("x0"), f.at("noise"), f.at("out").narrow(1, 0, 2) - f.at("noise"),
                   f.at("out").narrow(1, 2, 2), f.at("t").to_vector<int64_t>()};
  EXPECT_TRUE(allclose(from_vector(host_vb(d, c), {B}), f.at("vb_per_sample"), 1e-11, 1e-10));
}

TEST(GaussianDiffusionParity, RespacedPosterior) {
  auto f = load_fixture("diffusion_respaced");
  const GaussianDiffusion d({.respacing = 250});
  EXPECT_EQ(d.timestep_map(), f.at("timesteps").to_vector<int64_t>());
  EXPECT_TRUE(allclose(from_vector(d.alphas_cumprod(), {250}), f.at("alphas_cumprod"), 0, 1e-13));
  const GaussianDiffusion::Posterior p = d.p_mean_variance(f.at("out"), f.at("x_t"), f.at("t"));
  EXPECT_TRUE(allclose(p.mean, f.at("mean"), 1e-12, 1e-10));
  EXPECT_TRUE(allclose(p.log_variance, f.at("log_variance"), 1e-12, 1e-12));
  EXPECT_TRUE(allclose(p.pred_x0, f.at("pred_x0"), 1e-12, 1e-10));
  Tensor seen;
  const ModelFn model = [&](const Tensor&, const Tensor& t) {
    seen = t;
    return f.at("out");
  };
  d.training_losses(model, f.at("x_t"), f.at("t"), f.at("x_t"));
  EXPECT_TRUE(allclose(seen.to(DType::f64), f.at("t_model"), 0, 0));
}

}  // namespace
}  // namespace loom::diffusion
