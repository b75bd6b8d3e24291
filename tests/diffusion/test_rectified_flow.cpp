// RectifiedFlow: the interpolation and target (ALGORITHMS.md §10 DiT-MoE oracle 5), the loss on the
// first C channels only, the logit-normal time draw, and Euler sampling with exact velocity fields.
#include "models/diffusion/rectified_flow.h"

#include <cmath>

#include "testing.h"

namespace loom::diffusion {
namespace {

using loom::testing::allclose;
using loom::testing::uniform;

using loom::testing::expect_error;

Tensor per_sample(const std::vector<double>& v, DType dtype) {
  return from_vector(v, {int64_t(v.size()), 1, 1, 1}, dtype);
}

double mean_of(const Tensor& x) {
  return mean(x.to(DType::f64)).item();
}
double std_of(const Tensor& x) {
  return std::sqrt(var(x.to(DType::f64), {}, false, 0).item());
}

TEST(RectifiedFlow, InterpolationEndpointsAndMidpoint) {
  const RectifiedFlow rf;
  const Tensor x0 = uniform({3, 2, 2, 2}, -1, 1, 1);
  const Tensor noise = uniform({3, 2, 2, 2}, -2, 2, 2);
  const Tensor z = rf.interpolate(x0, from_vector<double>({0.0, 1.0, 0.25}, {3}), noise);
  EXPECT_TRUE(allclose(z.select(0, 0), x0.select(0, 0), 0, 0));
  EXPECT_TRUE(allclose(z.select(0, 1), noise.select(0, 1), 0, 0));
  EXPECT_TRUE(
      allclose(z.select(0, 2), x0.select(0, 2) * 0.75 + noise.select(0, 2) * 0.25, 1e-15, 0));
  // t in f32 (as drawn) with f64 data.
  const Tensor z32 = rf.interpolate(x0, from_vector<float>({0.0f, 1.0f, 0.25f}, {3}), noise);
  EXPECT_TRUE(allclose(z32, z, 0, 0));
}

TEST(RectifiedFlow, TargetIsNoiseMinusDataOnFirstChannels) {
  const RectifiedFlow rf;
  const Tensor x0 = uniform({2, 3, 2, 2}, -1, 1, 3);
  const Tensor noise = uniform({2, 3, 2, 2}, -2, 2, 4);
  const Tensor t = from_vector<double>({0.2, 0.9}, {2});
  const Tensor junk = uniform({2, 3, 2, 2}, -5, 5, 5);
  Tensor seen_z, seen_t;
  // The exact velocity in the first C channels, junk in the learned-sigma channels.
  const Tensor out = cat({noise - x0, junk}, 1).detach().set_requires_grad(true);
  const ModelFn model = [&](const Tensor& z, const Tensor& tm) {
    seen_z = z, seen_t = tm;
    return out;
  };
  const Losses l = rf.training_losses(model, x0, t, noise);
  EXPECT_EQ(l.loss.item(), 0.0);
  EXPECT_EQ(l.mse.item(), 0.0);
  EXPECT_EQ(l.vb.item(), 0.0);
  EXPECT_TRUE(allclose(seen_z, rf.interpolate(x0, t, noise), 0, 0));
  EXPECT_EQ(seen_t.dtype(), DType::f32);  // raw t, no ×1000
  EXPECT_EQ(seen_t.to_vector<float>(), (std::vector<float>{0.2f, 0.9f}));
  l.loss.backward();
  EXPECT_EQ(amax(abs(out.grad())).item(), 0.0);
}

TEST(RectifiedFlow, LossAndGradientForAnyPrediction) {
  const RectifiedFlow rf;
  const Tensor x0 = uniform({2, 2, 3, 3}, -1, 1, 6);
  const Tensor noise = uniform({2, 2, 3, 3}, -2, 2, 7);
  const Tensor v_hat = uniform({2, 2, 3, 3}, -2, 2, 8);
  const Tensor t = from_vector<double>({0.3, 0.6}, {2});
  for (bool learn_sigma : {false, true}) {
    const Tensor out =
        (learn_sigma ? cat({v_hat, uniform({2, 2, 3, 3}, -1, 1, 9)}, 1) : v_hat.clone())
            .detach()
            .set_requires_grad(true);
    const Losses l =
        rf.training_losses([&](const Tensor&, const Tensor&) { return out; }, x0, t, noise);
    const auto e = (noise - x0 - v_hat).to_vector<double>();
    double sq = 0;
    for (double d : e) sq += d * d;
    EXPECT_NEAR(l.loss.item(), sq / double(e.size()), 1e-14);
    l.loss.backward();
    const Tensor g = out.grad();
    EXPECT_TRUE(allclose(g.narrow(1, 0, 2), (v_hat - (noise - x0)) * (2.0 / double(e.size())),
                         1e-15, 1e-12));
    if (learn_sigma) EXPECT_EQ(amax(abs(g.narrow(1, 2, 2))).item(), 0.0);
  }
}

TEST(RectifiedFlow, DrawsLogitNormalTimeThenNoise) {
  const RectifiedFlow rf;
  const Tensor x0 = uniform({4, 1, 2, 2}, -1, 1, 10, DType::f32);
  Generator gen(21, 3), replay(21, 3);
  Tensor seen_t;
  const Tensor out = zeros({4, 1, 2, 2});
  const Losses l = rf.training_losses(
      [&](const Tensor&, const Tensor& t) {
        seen_t = t;
        return out;
      },
      x0, gen);
  const Tensor t = sigmoid(randn({4}, replay));
  const Tensor noise = randn({4, 1, 2, 2}, replay);
  EXPECT_TRUE(allclose(seen_t, t, 0, 0));
  EXPECT_EQ(gen.offset(), replay.offset());
  EXPECT_NEAR(l.loss.item(), mean_of(square(noise - x0)), 1e-6);

  // logit(t) ~ N(0, 1).
  Generator big(22, 0);
  const Tensor ts = rf.sample_t(20000, big).to(DType::f64);
  EXPECT_GT(amin(ts).item(), 0.0);
  EXPECT_LT(amax(ts).item(), 1.0);
  const Tensor logit = log(ts / (1.0 - ts));
  EXPECT_NEAR(mean_of(logit), 0.0, 0.03);
  EXPECT_NEAR(std_of(logit), 1.0, 0.03);
}

TEST(RectifiedFlow, EulerLandsOnDiracPoint) {
  // All data at x*: z_t = (1-t) x* + t ε, so the velocity ε - x* = (z - x*)/t exactly, and the last
  // Euler step (t = 1/steps, dt = 1/steps) removes all of z - x*.
  const RectifiedFlow rf;
  const Tensor x_star = uniform({1, 2, 3, 3}, -1, 1, 11, DType::f32);
  std::vector<float> seen_t;
  std::vector<int64_t> steps_seen;
  const ModelFn model = [&](const Tensor& z, const Tensor& t) {
    EXPECT_FALSE(grad_enabled());
    const auto tv = t.to_vector<float>();
    seen_t.push_back(tv[0]);
    std::vector<double> inv(tv.begin(), tv.end());
    for (double& v : inv) v = 1.0 / v;
    const Tensor v = (z - x_star) * per_sample(inv, z.dtype());
    return cat({v, full_like(v, 7.0)}, 1);  // junk sigma channels are ignored
  };
  Generator gen(23, 0);
  const Tensor x = rf.sample_euler(model, {3, 2, 3, 3}, 10, gen, [&](int64_t step, int64_t total) {
    EXPECT_EQ(total, 10);
    steps_seen.push_back(step);
  });
  EXPECT_TRUE(allclose(x, x_star.expand({3, 2, 3, 3}), 1e-5, 1e-5));
  ASSERT_EQ(seen_t.size(), 10u);
  for (size_t i = 0; i < 10; ++i) {
    EXPECT_FLOAT_EQ(seen_t[i], float(10 - int(i)) / 10.0f);
    EXPECT_EQ(steps_seen[i], int64_t(i + 1));
  }
}

TEST(RectifiedFlow, EulerMatchesGaussianData) {
  // Data ~ N(mu, s²) per element: z_t is Gaussian with Var = (1-t)² s² + t² and
  // Cov(ε - x0, z_t) = t - (1-t) s², so E[ε - x0 | z_t] = k_t (z_t - (1-t) mu) - mu.
  const RectifiedFlow rf;
  const double mu = -0.4, s = 0.6;
  const ModelFn model = [&](const Tensor& z, const Tensor& t) {
    const auto tv = t.to_vector<float>();
    std::vector<double> k, c;
    for (float tf : tv) {
      const double u = tf;
      k.push_back((u - (1 - u) * s * s) / ((1 - u) * (1 - u) * s * s + u * u));
      c.push_back((1 - u) * mu);
    }
    return (z - per_sample(c, z.dtype())) * per_sample(k, z.dtype()) - mu;
  };
  Generator gen(24, 0);
  const Tensor x = rf.sample_euler(model, {16, 1, 16, 16}, 200, gen);
  EXPECT_NEAR(mean_of(x), mu, 0.04);
  EXPECT_NEAR(std_of(x), s, 0.03);
}

TEST(RectifiedFlow, RejectsMisuse) {
  const RectifiedFlow rf;
  Generator gen(25, 0);
  const Tensor x0 = zeros({2, 2, 2, 2});
  const Tensor t = from_vector<float>({0.5f, 0.5f}, {2});
  const ModelFn three = [](const Tensor& z, const Tensor&) { return zeros({2, 3, 2, 2}); };
  expect_error([&] { rf.training_losses(three, x0, t, x0); }, "model output must be");
  expect_error([&] { rf.training_losses(ModelFn(), x0, t, x0); }, "empty model");
  expect_error([&] { rf.interpolate(x0, from_vector<float>({0.5f}, {1}), x0); }, "t must be");
  expect_error([&] { rf.interpolate(x0, t, zeros({2, 2, 2, 3})); }, "noise");
  expect_error([&] { rf.sample_euler(three, {2, 2, 2, 2}, 0, gen); }, "steps must be >= 1");
  expect_error([&] { rf.sample_euler(three, {2, 2, 2, 2}, 4, gen); }, "model output must be");
  expect_error([&] { rf.sample_euler(three, {2}, 4, gen); }, "shape");
}

}  // namespace
}  // namespace loom::diffusion
