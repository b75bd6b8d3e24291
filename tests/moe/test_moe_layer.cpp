#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "models/moe/moe_layer.h"
#include "models/nn/nn.h"
#include "testing.h"

namespace loom {
using testing::allclose;
using testing::gradcheck;
using testing::uniform;

namespace {

using moe::MoEConfig;
using moe::MoELayer;

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// Expert e of the layer as a plain SwiGLU on all rows of x [N, D].
Tensor expert_dense(const MoELayer& m, int64_t e, const Tensor& x) {
  const auto& ex = m.experts();
  return linear(silu(linear(x, ex.w_gate().select(0, e))) * linear(x, ex.w_up().select(0, e)),
                ex.w_down().select(0, e));
}

struct Dense {
  Tensor y, aux, counts;
};

// ALGORITHMS.md §10 DiT-MoE oracle 3: every expert evaluated on every token, masked to the top-k
// by rank (number of strictly larger probabilities < k; ties are measure-zero with random
// inputs), weighted by the unrenormalized softmax probability, plus the shared expert. The
// balance loss is §2.3 written from the dense mask.
Dense dense_reference(const MoELayer& m, const Tensor& h) {
  const MoEConfig& c = m.config();
  const Tensor x = h.reshape({-1, c.d_model});
  const int64_t n = x.size(0);
  const Tensor logits = linear(x, m.router().weight());
  const Tensor ex = exp(logits - amax(logits, {-1}, true));
  const Tensor p = ex / sum(ex, {-1}, true);                               // [N, E]
  const Tensor larger = gt(p.unsqueeze(1), p.unsqueeze(2)).to(p.dtype());  // [N, e, j]: p_j > p_e
  const Tensor mask = lt(sum(larger, {2}), double(c.top_k));
  const Tensor gate = where(mask, p, zeros_like(p));
  Tensor y = m.shared() ? m.shared()->forward(x) : zeros_like(x);
  for (int64_t e = 0; e < c.n_experts; ++e) y = y + gate.narrow(1, e, 1) * expert_dense(m, e, x);
  const Tensor counts = sum(mask.to(p.dtype()), {0});
  const Tensor f = counts * (double(c.n_experts) / double(n * c.top_k));
  const Tensor aux = sum(mean(p, {0}) * f) * c.aux_loss_coef;
  return {y.reshape(h.shape()), aux, counts};
}

std::vector<Tensor> grads_of(const MoELayer& m, const Tensor& x) {
  std::vector<Tensor> g;
  for (const auto& [name, p] : m.named_parameters()) {
    EXPECT_TRUE(p.grad().defined()) << name << " got no gradient";
    g.push_back(p.grad().defined() ? p.grad().clone() : Tensor());
  }
  g.push_back(x.grad().clone());
  return g;
}

// Forward values, balance loss and the gradients (every parameter and the input) of
// sum(y * w) + 30 * aux match the dense reference.
void expect_matches_dense(MoELayer& m, const Tensor& h_in, double atol, double rtol) {
  const Tensor h = h_in.detach().clone();
  h.set_requires_grad(true);
  const Tensor w = uniform(h.shape(), -1, 1, 5, h.dtype());

  m.zero_grad();
  const MoELayer::Output out = m.forward(h);
  const Dense ref = dense_reference(m, h);
  ASSERT_TRUE(out.aux_loss.defined());
  EXPECT_TRUE(allclose(out.y, ref.y, atol, rtol));
  EXPECT_TRUE(allclose(out.aux_loss, ref.aux, atol, rtol));
  EXPECT_TRUE(allclose(out.expert_counts.to(DType::f64), ref.counts.to(DType::f64), 0, 0));

  (sum(out.y * w) + out.aux_loss * 30.0).backward();
  const std::vector<Tensor> sparse_grads = grads_of(m, h);
  m.zero_grad();
  h.zero_grad();
  (sum(ref.y * w) + ref.aux * 30.0).backward();
  const std::vector<Tensor> dense_grads = grads_of(m, h);
  const auto names = m.named_parameters();
  for (size_t i = 0; i < sparse_grads.size(); ++i) {
    const std::string what = i < names.size() ? names[i].first : "input";
    EXPECT_TRUE(allclose(sparse_grads[i], dense_grads[i], atol, rtol)) << what;
  }
}

// Finite-difference check of every parameter gradient of an f64 module for sum(f() * w).
::testing::AssertionResult check_parameter_grads(nn::Module& m, const std::function<Tensor()>& f,
                                                 double eps = 1e-6, double atol = 1e-6,
                                                 double rtol = 1e-4) {
  m.zero_grad();
  const Tensor out = f();
  const Tensor w = uniform(out.shape(), 0.5, 1.5, 98);
  sum(out * w).backward();
  NoGradGuard no_grad;
  for (const auto& [name, p] : m.named_parameters()) {
    if (!p.grad().defined()) return ::testing::AssertionFailure() << name << " got no gradient";
    const auto analytic = p.grad().to_vector<double>();
    double* d = p.data<double>();
    for (int64_t i = 0; i < p.numel(); ++i) {
      const double orig = d[i];
      d[i] = orig + eps;
      const double lp = sum(f() * w).item();
      d[i] = orig - eps;
      const double lm = sum(f() * w).item();
      d[i] = orig;
      const double numeric = (lp - lm) / (2 * eps);
      if (!(std::abs(numeric - analytic[size_t(i)]) <= atol + rtol * std::abs(numeric)))
        return ::testing::AssertionFailure() << name << " element " << i << ": analytic "
                                             << analytic[size_t(i)] << " vs numeric " << numeric;
    }
  }
  return ::testing::AssertionSuccess();
}

Tensor max_abs(const Tensor& t) {
  return amax(abs(t));
}

}  // namespace

// -- oracle 1: one expert, k = 1 ------------------------------------------------------------------

TEST(MoELayer, SingleExpertEqualsItsSwiGLU) {
  Generator gen(3);
  MoELayer m(MoEConfig{.d_model = 8, .n_experts = 1, .top_k = 1, .d_ff = 12}, gen);
  const Tensor h = uniform({2, 5, 8}, -1, 1, 11, DType::f32);
  const MoELayer::Output out = m.forward(h);
  EXPECT_EQ(out.y.shape(), h.shape());
  const Tensor x = h.reshape({10, 8});
  const auto& ex = m.experts();
  const Tensor wg = ex.w_gate().select(0, 0), wu = ex.w_up().select(0, 0);
  const Tensor manual =
      matmul(silu(matmul(x, wg.t())) * matmul(x, wu.t()), ex.w_down().select(0, 0).t());
  EXPECT_TRUE(allclose(out.y, manual.reshape(h.shape()), 1e-6, 1e-5));
  EXPECT_EQ(out.expert_counts.to_vector<int64_t>(), std::vector<int64_t>{10});
}

TEST(MoELayer, SingleExpertPlusSharedEqualsSum) {
  Generator gen(4);
  MoELayer m(MoEConfig{.d_model = 8, .n_experts = 1, .top_k = 1, .shared_hidden = 16}, gen);
  ASSERT_NE(m.shared(), nullptr);
  EXPECT_EQ(m.config().d_ff, 32);  // 0 resolves to 4 * d_model
  const Tensor h = uniform({10, 8}, -1, 1, 12, DType::f32);
  const Tensor expected = expert_dense(m, 0, h) + m.shared()->forward(h);
  EXPECT_TRUE(allclose(m.forward(h).y, expected, 1e-6, 1e-5));
}

// -- oracle 2: uniform router ---------------------------------------------------------------------

TEST(MoELayer, ZeroRouterGivesAuxEqualToAlpha) {
  for (const double alpha : {0.01, 0.05}) {
    Generator gen(5);
    MoELayer m(MoEConfig{.d_model = 8, .n_experts = 4, .top_k = 2, .aux_loss_coef = alpha}, gen);
    nn::init::zeros_(m.router().weight());
    const Tensor h = uniform({3, 7, 8}, -2, 2, 13, DType::f32);
    const MoELayer::Output out = m.forward(h);
    ASSERT_TRUE(out.aux_loss.defined());
    EXPECT_EQ(out.aux_loss.dim(), 0);
    EXPECT_NEAR(out.aux_loss.item(), alpha, 1e-7);
    // All probabilities tie at 1/4: top-k keeps the lower expert ids.
    EXPECT_EQ(out.expert_counts.to_vector<int64_t>(), (std::vector<int64_t>{21, 21, 0, 0}));
    // Unrenormalized weights: each token gets 1/4 of each of experts 0 and 1.
    const Tensor x = h.reshape({21, 8});
    const Tensor expected = (expert_dense(m, 0, x) + expert_dense(m, 1, x)) * 0.25;
    EXPECT_TRUE(allclose(out.y, expected.reshape(h.shape()), 1e-6, 1e-5));
  }
}

TEST(MoELayer, AuxLossOnlyInTrainingMode) {
  Generator gen(6);
  MoELayer m(MoEConfig{.d_model = 8, .n_experts = 4, .top_k = 2, .shared_hidden = 16}, gen);
  const Tensor h = uniform({2, 5, 8}, -1, 1, 14, DType::f32);
  const MoELayer::Output train_out = m.forward(h);
  m.eval();
  const MoELayer::Output eval_out = m.forward(h);
  EXPECT_TRUE(train_out.aux_loss.defined());
  EXPECT_FALSE(eval_out.aux_loss.defined());
  EXPECT_TRUE(allclose(eval_out.y, train_out.y, 0, 0));
  EXPECT_EQ(eval_out.expert_counts.to_vector<int64_t>(),
            train_out.expert_counts.to_vector<int64_t>());
}

// -- oracle 3: sparse dispatch == dense reference, values and gradients ---------------------------

TEST(MoELayer, SparseMatchesDenseReferenceWithGradients) {
  Generator gen(7);
  MoELayer m(MoEConfig{.d_model = 8, .n_experts = 4, .top_k = 2, .shared_hidden = 16}, gen);
  // Larger router weights than the init spread the probabilities, so selection matters.
  nn::init::uniform_(m.router().weight(), gen, -1, 1);
  const Tensor h = uniform({2, 5, 8}, -1, 1, 15, DType::f32);
  expect_matches_dense(m, h, 1e-5, 1e-4);
}

TEST(MoELayer, SparseMatchesDenseForOtherShapes) {
  struct Case {
    MoEConfig cfg;
    Shape shape;
  };
  const std::vector<Case> cases = {
      {{.d_model = 6, .n_experts = 4, .top_k = 1, .d_ff = 10}, {9, 6}},
      {{.d_model = 6, .n_experts = 3, .top_k = 3, .d_ff = 5, .shared_hidden = 4}, {2, 4, 6}},
      {{.d_model = 4, .n_experts = 8, .top_k = 2, .d_ff = 8, .aux_loss_coef = 0.1}, {1, 13, 4}},
  };
  uint64_t seed = 20;
  for (const Case& c : cases) {
    Generator gen(seed);
    MoELayer m(c.cfg, gen);
    nn::init::uniform_(m.router().weight(), gen, -1, 1);
    SCOPED_TRACE("E=" + std::to_string(c.cfg.n_experts) + " k=" + std::to_string(c.cfg.top_k));
    expect_matches_dense(m, uniform(c.shape, -1, 1, ++seed, DType::f32), 1e-5, 1e-4);
  }
}

TEST(MoELayer, UsedRoutingWeightsAreNotRenormalized) {
  // With one expert kept per token, the routed output is s_top * E(x) with s_top < 1.
  Generator gen(8);
  MoELayer m(MoEConfig{.d_model = 4, .n_experts = 2, .top_k = 1, .d_ff = 8}, gen);
  nn::init::zeros_(m.router().weight());
  const Tensor h = uniform({5, 4}, -1, 1, 16, DType::f32);
  const Tensor expected = expert_dense(m, 0, h) * 0.5;
  EXPECT_TRUE(allclose(m.forward(h).y, expected, 1e-6, 1e-5));
}

// -- finite differences
// -----------------------------------------------------------------------------

TEST(MoELayer, Gradcheck) {
  Generator gen(9);
  MoELayer m(MoEConfig{.d_model = 4, .n_experts = 4, .top_k = 2, .d_ff = 6, .shared_hidden = 4},
             gen);
  nn::init::uniform_(m.router().weight(), gen, -1, 1);
  m.to(DType::f64);
  // y and the balance loss together, so both are checked.
  const auto f = [&](const Tensor& h) {
    const MoELayer::Output out = m.forward(h);
    return cat({out.y.flatten(), out.aux_loss.reshape({1}) * 10.0});
  };
  const Tensor h = uniform({2, 3, 4}, -1, 1, 17);
  EXPECT_TRUE(gradcheck([&](const std::vector<Tensor>& in) { return f(in[0]); }, {h}));
  EXPECT_TRUE(check_parameter_grads(m, [&] { return f(h); }));
}

// -- counts, empty experts ------------------------------------------------------------------------

TEST(MoELayer, ExpertCountsSumToTokensTimesK) {
  Generator gen(10);
  MoELayer m(MoEConfig{.d_model = 8, .n_experts = 6, .top_k = 3}, gen);
  nn::init::uniform_(m.router().weight(), gen, -1, 1);
  const Tensor h = uniform({4, 9, 8}, -1, 1, 18, DType::f32);
  const MoELayer::Output out = m.forward(h);
  EXPECT_EQ(out.expert_counts.dtype(), DType::i64);
  EXPECT_EQ(out.expert_counts.shape(), (Shape{6}));
  int64_t total = 0;
  for (int64_t c : out.expert_counts.to_vector<int64_t>()) total += c;
  EXPECT_EQ(total, 36 * 3);
  // Per expert, the counts equal the histogram of the dense top-k mask.
  EXPECT_TRUE(allclose(out.expert_counts.to(DType::f64),
                       dense_reference(m, h).counts.to(DType::f64), 0, 0));
}

TEST(MoELayer, ExpertWithoutTokensGetsZeroGradient) {
  Generator gen(11);
  MoELayer m(MoEConfig{.d_model = 8, .n_experts = 4, .top_k = 2, .shared_hidden = 8}, gen);
  // Feature 0 is a constant 3, so router column 0 acts as a bias: expert 3 is never chosen.
  nn::init::uniform_(m.router().weight(), gen, -0.5, 0.5);
  {
    NoGradGuard no_grad;
    copy_into(m.router().weight().narrow(0, 3, 1).narrow(1, 0, 1), full({1, 1}, -20.0));
  }
  Tensor h = uniform({2, 5, 8}, -1, 1, 19, DType::f32);
  copy_into(h.narrow(2, 0, 1), full({2, 5, 1}, 3.0));
  const MoELayer::Output out = m.forward(h);
  EXPECT_EQ(out.expert_counts.to_vector<int64_t>()[3], 0);
  expect_matches_dense(m, h, 1e-5, 1e-4);

  m.zero_grad();
  sum(m.forward(h).y).backward();
  const auto& ex = m.experts();
  for (const Tensor& w : {ex.w_gate(), ex.w_up(), ex.w_down()}) {
    ASSERT_TRUE(w.grad().defined());
    EXPECT_EQ(max_abs(w.grad().select(0, 3)).item(), 0.0);
    EXPECT_GT(max_abs(w.grad().narrow(0, 0, 3)).item(), 0.0);
  }
  EXPECT_TRUE(std::isfinite(max_abs(m.router().weight().grad()).item()));
}

TEST(MoELayer, AllTokensToOneExpert) {
  Generator gen(12);
  MoELayer m(MoEConfig{.d_model = 4, .n_experts = 3, .top_k = 1, .d_ff = 8}, gen);
  nn::init::zeros_(m.router().weight());
  {
    NoGradGuard no_grad;
    copy_into(m.router().weight().narrow(0, 1, 1).narrow(1, 0, 1), full({1, 1}, 10.0));
  }
  Tensor h = uniform({6, 4}, -1, 1, 21, DType::f32);
  copy_into(h.narrow(1, 0, 1), full({6, 1}, 1.0));
  EXPECT_EQ(m.forward(h).expert_counts.to_vector<int64_t>(), (std::vector<int64_t>{0, 6, 0}));
  expect_matches_dense(m, h, 1e-5, 1e-4);
}

TEST(MoELayer, SortByExpertIsStable) {
  const Tensor idx = from_vector<int64_t>({2, 0, 0, 1, 2, 1}, {3, 2});
  const moe::ExpertDispatch d = moe::sort_by_expert(idx, 4);
  EXPECT_EQ(d.counts, (std::vector<int64_t>{2, 2, 2, 0}));
  // Assignment p = token * k + slot; within an expert, increasing p.
  EXPECT_EQ(d.order.to_vector<int64_t>(), (std::vector<int64_t>{1, 2, 3, 5, 0, 4}));
  EXPECT_EQ(d.token.to_vector<int64_t>(), (std::vector<int64_t>{0, 1, 1, 2, 0, 2}));
  EXPECT_TRUE(contains(error_of([&] { moe::sort_by_expert(idx, 2); }), "out of range"));
}

// -- parameters -----------------------------------------------------------------------------------

TEST(MoELayer, ParameterNamesShapesAndCount) {
  const int64_t d = 16, e = 8;
  Generator gen(13);
  MoELayer m(MoEConfig{.d_model = d, .n_experts = e, .top_k = 2, .shared_hidden = 2 * d}, gen);
  std::vector<std::string> names;
  std::vector<Shape> shapes;
  for (const auto& [name, p] : m.named_parameters()) {
    names.push_back(name);
    shapes.push_back(p.shape());
  }
  EXPECT_EQ(names, (std::vector<std::string>{"router.weight", "experts.w_gate", "experts.w_up",
                                             "experts.w_down", "shared.gate_proj.weight",
                                             "shared.up_proj.weight", "shared.down_proj.weight"}));
  EXPECT_EQ(shapes, (std::vector<Shape>{{e, d},
                                        {e, 4 * d, d},
                                        {e, 4 * d, d},
                                        {e, d, 4 * d},
                                        {2 * d, d},
                                        {2 * d, d},
                                        {d, 2 * d}}));
  // ALGORITHMS.md §2.4: router E·D, each routed expert 12D², shared (2D wide) 6D².
  EXPECT_EQ(m.num_parameters(), e * d + e * 12 * d * d + 6 * d * d);
  MoELayer no_shared(MoEConfig{.d_model = d, .n_experts = e, .top_k = 2}, gen);
  EXPECT_EQ(no_shared.num_parameters(), e * d + e * 12 * d * d);
  EXPECT_EQ(no_shared.shared(), nullptr);
}

TEST(MoELayer, InitBoundsPerSlice) {
  const int64_t d = 32, f = 96, e = 4;
  Generator gen(14);
  MoELayer m(MoEConfig{.d_model = d, .n_experts = e, .top_k = 1, .d_ff = f}, gen);
  const double router_bound = 1.0 / std::sqrt(double(d));
  const double expert_bound = std::sqrt(6.0 / double(d + f));  // fans of one [F, D] slice
  const double r = max_abs(m.router().weight()).item();
  EXPECT_LE(r, router_bound);
  EXPECT_GT(r, 0.9 * router_bound);
  const auto& ex = m.experts();
  for (const Tensor& w : {ex.w_gate(), ex.w_up(), ex.w_down()}) {
    for (int64_t i = 0; i < e; ++i) {
      const double a = max_abs(w.select(0, i)).item();
      EXPECT_LE(a, expert_bound);
      EXPECT_GT(a, 0.9 * expert_bound);
    }
    EXPECT_GT(max_abs(w.select(0, 0) - w.select(0, 1)).item(), 0.0);  // experts differ
  }
  // Same seed, same model.
  Generator gen2(14);
  MoELayer m2(MoEConfig{.d_model = d, .n_experts = e, .top_k = 1, .d_ff = f}, gen2);
  for (size_t i = 0; i < m.parameters().size(); ++i)
    EXPECT_TRUE(allclose(m.parameters()[i], m2.parameters()[i], 0, 0));
}

TEST(MoELayer, FlatAndBatchedInputsAgree) {
  Generator gen(15);
  MoELayer m(MoEConfig{.d_model = 8, .n_experts = 4, .top_k = 2, .shared_hidden = 8}, gen);
  nn::init::uniform_(m.router().weight(), gen, -1, 1);
  const Tensor h = uniform({3, 4, 8}, -1, 1, 22, DType::f32);
  const MoELayer::Output a = m.forward(h), b = m.forward(h.reshape({12, 8}));
  EXPECT_TRUE(allclose(a.y.reshape({12, 8}), b.y, 0, 0));
  EXPECT_TRUE(allclose(a.aux_loss, b.aux_loss, 0, 0));
  // A non-contiguous input gives the same result.
  const Tensor ht = h.transpose(0, 1).contiguous().transpose(0, 1);
  EXPECT_TRUE(allclose(m.forward(ht).y, a.y, 0, 0));
}

// -- errors ---------------------------------------------------------------------------------------

TEST(MoELayer, Errors) {
  Generator gen(16);
  MoELayer m(MoEConfig{.d_model = 8, .n_experts = 4, .top_k = 2}, gen);
  std::string msg = error_of([&] { m.forward(zeros({2, 5, 7})); });
  EXPECT_TRUE(contains(msg, "[MoELayer]") && contains(msg, "[2, 5, 7]")) << msg;
  EXPECT_TRUE(contains(error_of([&] { m.forward(zeros({8})); }), "[MoELayer]"));
  EXPECT_TRUE(contains(error_of([&] { m.forward(zeros({0, 8})); }), "no tokens"));
  msg = error_of([&] { m.forward(zeros({3, 8}, DType::f64)); });
  EXPECT_TRUE(contains(msg, "dtype")) << msg;
  msg = error_of([&] { MoELayer(MoEConfig{.d_model = 8, .n_experts = 4, .top_k = 5}, gen); });
  EXPECT_TRUE(contains(msg, "[MoELayer] top_k")) << msg;
  EXPECT_TRUE(contains(
      error_of([&] { MoELayer(MoEConfig{.d_model = 8, .n_experts = 4, .top_k = 0}, gen); }),
      "top_k"));
  EXPECT_TRUE(contains(
      error_of([&] { MoELayer(MoEConfig{.d_model = 0, .n_experts = 4, .top_k = 1}, gen); }),
      "d_model"));
  EXPECT_TRUE(contains(error_of([&] {
                         MoELayer(MoEConfig{.d_model = 8, .n_experts = 4, .top_k = 1, .d_ff = -1},
                                  gen);
                       }),
                       "d_ff"));
}

}  // namespace loom
