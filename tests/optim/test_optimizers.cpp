// AdamW and SGD against plain-double transcriptions of PyTorch's update rules, plus behaviour
// (skipped parameters, identity, errors) and a least-squares fit that must converge.
#include <cmath>
#include <vector>

#include "optim/adamw.h"
#include "optim/sgd.h"
#include "testing.h"

namespace loom::optim {
namespace {

using testing::uniform;

// loss = sum(c * p^2), so grad = 2 c p: a gradient that changes with p, through real autograd.
const std::vector<double> kC = {0.5, -1.5, 2.0, 0.25};
const std::vector<double> kP0 = {1.0, -0.5, 0.3, 2.0};

void backward_quadratic(const Tensor& p) {
  const Tensor c = from_vector<double>(kC, {int64_t(kC.size())}, DType::f32);
  sum(c * p * p).backward();
}

std::vector<double> quadratic_grad(const std::vector<double>& p) {
  std::vector<double> g(p.size());
  for (size_t k = 0; k < p.size(); ++k) g[k] = 2 * kC[k] * p[k];
  return g;
}

void expect_near_vec(const Tensor& t, const std::vector<double>& ref, double tol, int step) {
  const auto got = t.to_vector<double>();
  ASSERT_EQ(got.size(), ref.size());
  for (size_t k = 0; k < ref.size(); ++k)
    EXPECT_NEAR(got[k], ref[k], tol * (1 + std::abs(ref[k]))) << "step " << step << " elem " << k;
}

TEST(AdamW, MatchesHandComputedUpdatesForThreeSteps) {
  const double lr = 0.1, b1 = 0.9, b2 = 0.99, eps = 1e-8, wd = 0.1;
  Tensor p = from_vector<double>(kP0, {4}, DType::f32).set_requires_grad();
  AdamW opt({p}, {.lr = lr, .beta1 = b1, .beta2 = b2, .eps = eps, .weight_decay = wd});

  std::vector<double> rp = kP0, m(4, 0), v(4, 0);
  for (int t = 1; t <= 3; ++t) {
    const std::vector<double> g = quadratic_grad(rp);
    for (size_t k = 0; k < 4; ++k) {
      rp[k] -= lr * wd * rp[k];
      m[k] = b1 * m[k] + (1 - b1) * g[k];
      v[k] = b2 * v[k] + (1 - b2) * g[k] * g[k];
      const double m_hat = m[k] / (1 - std::pow(b1, t));
      const double v_hat = v[k] / (1 - std::pow(b2, t));
      rp[k] -= lr * m_hat / (std::sqrt(v_hat) + eps);
    }
    opt.zero_grad();
    backward_quadratic(p);
    opt.step();
    expect_near_vec(p, rp, 2e-6, t);
    expect_near_vec(opt.state(0).exp_avg, m, 2e-6, t);
    expect_near_vec(opt.state(0).exp_avg_sq, v, 2e-6, t);
    EXPECT_EQ(opt.state(0).step, t);
  }
}

TEST(AdamW, EpsIsAddedAfterTheSquareRoot) {
  // A tiny gradient makes sqrt(v_hat) comparable to eps: eps outside the root gives
  // g / (|g| + eps) = 0.5, inside the root g / sqrt(g^2 + eps) would give ~0.0316.
  Tensor p = from_vector<float>({0}, {1}).set_requires_grad();
  AdamW opt({p}, {.lr = 1, .eps = 1e-3, .weight_decay = 0});
  p.set_grad(from_vector<float>({1e-3f}, {1}));
  opt.step();
  EXPECT_NEAR(p.item(), -0.5, 1e-5);
}

TEST(AdamW, WeightDecayIsDecoupledAndAppliedBeforeTheUpdate) {
  // p = 2, g = 1, lr = 0.1, wd = 0.5. Step 1 moves by lr * m_hat / sqrt(v_hat) = 0.1.
  //   decoupled, decay first:  2 * (1 - 0.05) - 0.1 = 1.8     (PyTorch)
  //   decoupled, decay after:  (2 - 0.1) * (1 - 0.05) = 1.805
  //   L2 added to the gradient: m_hat / sqrt(v_hat) is still 1, so 2 - 0.1 = 1.9
  Tensor p = from_vector<float>({2}, {1}).set_requires_grad();
  AdamW opt({p}, {.lr = 0.1, .weight_decay = 0.5});
  p.set_grad(from_vector<float>({1}, {1}));
  opt.step();
  EXPECT_NEAR(p.item(), 1.8, 1e-6);
}

TEST(AdamW, SkipsParametersWithoutGradientAndKeepsIdentity) {
  Tensor a = from_vector<float>({1, 2}, {2}).set_requires_grad();
  Tensor b = from_vector<float>({3, 4}, {2}).set_requires_grad();
  const float* a_data = a.data<float>();
  AdamW opt({a, b}, {.lr = 0.1});
  sum(a * a).backward();  // b gets no gradient
  opt.step();
  EXPECT_EQ(a.data<float>(), a_data);
  EXPECT_TRUE(opt.params()[0].same(a));
  EXPECT_TRUE(a.requires_grad());
  EXPECT_NE(a.to_vector<float>(), (std::vector<float>{1, 2}));
  EXPECT_EQ(b.to_vector<float>(), (std::vector<float>{3, 4}));
  EXPECT_EQ(opt.state(0).step, 1);
  EXPECT_EQ(opt.state(1).step, 0);
  EXPECT_FALSE(opt.state(1).exp_avg.defined());
  const Tensor grad_before = a.grad();
  opt.zero_grad();
  EXPECT_TRUE(a.grad().same(grad_before));  // zeroed in place, not replaced
  EXPECT_EQ(a.grad().to_vector<float>(), (std::vector<float>{0, 0}));
  EXPECT_FALSE(b.grad().defined());
}

TEST(AdamW, RejectsBadConfigurationsAndParameters) {
  Tensor p = zeros({2}).set_requires_grad();
  EXPECT_THROW(AdamW({p}, {.lr = -1}), Error);
  EXPECT_THROW(AdamW({p}, {.beta1 = 1.0}), Error);
  EXPECT_THROW(AdamW({p}, {.beta2 = -0.1}), Error);
  EXPECT_THROW(AdamW({p}, {.eps = -1}), Error);
  EXPECT_THROW(AdamW({p}, {.weight_decay = -0.1}), Error);
  EXPECT_THROW(AdamW({zeros({2}, DType::f64).set_requires_grad()}), Error);
  EXPECT_THROW(AdamW({Tensor()}), Error);
  try {
    AdamW opt({p, zeros({2, 3}).set_name("blocks.0.w").t()});
    FAIL() << "expected loom::Error";
  } catch (const Error& e) {
    // A transposed view is neither a leaf nor contiguous; either way the message names it.
    const std::string msg = e.what();
    EXPECT_NE(msg.find("[adamw]"), std::string::npos) << msg;
    EXPECT_NE(msg.find("#1"), std::string::npos) << msg;
  }
  AdamW opt({p});
  EXPECT_THROW(opt.set_lr(-0.5), Error);
  opt.set_lr(0.25);
  EXPECT_EQ(opt.lr(), 0.25);
}

TEST(AdamW, RestoredStateContinuesExactly) {
  Tensor a = from_vector<double>(kP0, {4}, DType::f32).set_requires_grad();
  Tensor b = from_vector<double>(kP0, {4}, DType::f32).set_requires_grad();
  AdamW first({a}, {.lr = 0.05}), second({b}, {.lr = 0.05});
  for (int s = 0; s < 2; ++s) {
    first.zero_grad();
    backward_quadratic(a);
    first.step();
  }
  // What a checkpoint round trip does: values and state copied into a fresh optimizer.
  copy_into(b, a);
  second.state(0) = {.step = first.state(0).step,
                     .exp_avg = first.state(0).exp_avg.clone(),
                     .exp_avg_sq = first.state(0).exp_avg_sq.clone()};
  for (auto* opt : {&first, &second}) {
    opt->zero_grad();
    backward_quadratic(opt->params()[0]);
    opt->step();
  }
  EXPECT_EQ(a.to_vector<float>(), b.to_vector<float>());
  EXPECT_EQ(second.state(0).step, 3);

  second.state(0).exp_avg = zeros({3});
  second.zero_grad();
  backward_quadratic(b);
  EXPECT_THROW(second.step(), Error);
}

// Plain-double transcription of torch.optim.SGD for the reference.
std::vector<double> sgd_reference(const SgdConfig& c, int steps) {
  std::vector<double> p = kP0, buf(p.size(), 0);
  for (int t = 1; t <= steps; ++t) {
    std::vector<double> g = quadratic_grad(p);
    for (size_t k = 0; k < p.size(); ++k) {
      double d = g[k] + c.weight_decay * p[k];
      if (c.momentum != 0) {
        buf[k] = t == 1 ? d : c.momentum * buf[k] + (1 - c.dampening) * d;
        d = c.nesterov ? d + c.momentum * buf[k] : buf[k];
      }
      p[k] -= c.lr * d;
    }
  }
  return p;
}

void check_sgd(const SgdConfig& c) {
  Tensor p = from_vector<double>(kP0, {4}, DType::f32).set_requires_grad();
  Sgd opt({p}, c);
  for (int t = 1; t <= 4; ++t) {
    opt.zero_grad();
    backward_quadratic(p);
    opt.step();
    expect_near_vec(p, sgd_reference(c, t), 1e-6, t);
  }
}

TEST(Sgd, PlainStepMatchesReference) {
  check_sgd({.lr = 0.1});
}
TEST(Sgd, MomentumMatchesReference) {
  check_sgd({.lr = 0.1, .momentum = 0.9});
}
TEST(Sgd, MomentumWithDampeningAndDecayMatchesReference) {
  check_sgd({.lr = 0.05, .momentum = 0.8, .dampening = 0.3, .weight_decay = 0.1});
}
TEST(Sgd, NesterovMatchesReference) {
  check_sgd({.lr = 0.1, .momentum = 0.9, .weight_decay = 0.01, .nesterov = true});
}

TEST(Sgd, NesterovDiffersFromPlainMomentum) {
  // Guards the reference itself: with these settings the two rules must disagree.
  const auto a = sgd_reference({.lr = 0.1, .momentum = 0.9}, 2);
  const auto b = sgd_reference({.lr = 0.1, .momentum = 0.9, .nesterov = true}, 2);
  EXPECT_GT(std::abs(a[0] - b[0]), 1e-3);
}

TEST(Sgd, RestoredMomentumContinuesExactly) {
  const SgdConfig c{.lr = 0.1, .momentum = 0.9, .dampening = 0.2};
  Tensor a = from_vector<double>(kP0, {4}, DType::f32).set_requires_grad();
  Tensor b = from_vector<double>(kP0, {4}, DType::f32).set_requires_grad();
  Sgd first({a}, c), second({b}, c);
  for (int s = 0; s < 2; ++s) {
    first.zero_grad();
    backward_quadratic(a);
    first.step();
  }
  copy_into(b, a);
  second.set_momentum_buffer(0, first.momentum_buffer(0).to(DType::f64));
  EXPECT_FALSE(second.momentum_buffer(0).same(first.momentum_buffer(0)));
  for (auto* opt : {&first, &second}) {
    opt->zero_grad();
    backward_quadratic(opt->params()[0]);
    opt->step();
  }
  EXPECT_EQ(a.to_vector<float>(), b.to_vector<float>());
  EXPECT_THROW(second.set_momentum_buffer(0, zeros({2, 2})), Error);
  EXPECT_THROW(second.set_momentum_buffer(5, zeros({4})), Error);
}

TEST(Sgd, RejectsBadConfigurations) {
  Tensor p = zeros({2}).set_requires_grad();
  EXPECT_THROW(Sgd({p}, {.lr = -1}), Error);
  EXPECT_THROW(Sgd({p}, {.momentum = -0.5}), Error);
  EXPECT_THROW(Sgd({p}, {.nesterov = true}), Error);
  EXPECT_THROW(Sgd({p}, {.momentum = 0.9, .dampening = 0.1, .nesterov = true}), Error);
}

// min_w mean((A w - y)^2) with y = A w_true: both optimizers must drive the loss near zero.
double fit_least_squares(Optimizer& opt, const Tensor& w, int steps) {
  const Tensor a = uniform({64, 8}, -1, 1, 3, DType::f32);
  const Tensor w_true = uniform({8, 1}, -2, 2, 4, DType::f32);
  Tensor y;
  {
    NoGradGuard g;
    y = matmul(a, w_true);
  }
  double loss = 0;
  for (int s = 0; s < steps; ++s) {
    opt.zero_grad();
    Tensor l = mean(square(matmul(a, w) - y));
    loss = l.item();
    l.backward();
    opt.step();
  }
  return loss;
}

TEST(Training, AdamWFitsLeastSquares) {
  Tensor w = zeros({8, 1}).set_requires_grad();
  AdamW opt({w}, {.lr = 0.05, .weight_decay = 0});
  const double first = fit_least_squares(opt, w, 1);
  const double last = fit_least_squares(opt, w, 600);
  EXPECT_GT(first, 0.5);
  EXPECT_LT(last, 1e-6);
}

TEST(Training, SgdMomentumFitsLeastSquares) {
  Tensor w = zeros({8, 1}).set_requires_grad();
  Sgd opt({w}, {.lr = 0.05, .momentum = 0.9, .nesterov = true});
  const double first = fit_least_squares(opt, w, 1);
  const double last = fit_least_squares(opt, w, 400);
  EXPECT_GT(first, 0.5);
  EXPECT_LT(last, 1e-6);
}

}  // namespace
}  // namespace loom::optim
