// Muon against the ALGORITHMS.md §10 oracles: the Newton–Schulz spectrum, the transpose symmetry,
// the update with beta = 0, the shape scales, Moonlight's RMS, the order of weight decay, the
// momentum/Nesterov recurrences, stacked and conv parameters, and a checkpoint resume.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <random>
#include <vector>

#include "optim/muon.h"
#include "optim/param_groups.h"
#include "testing.h"
#include "trainer/checkpoint/checkpoint.h"
#include "trainer/eval/frechet.h"
#include "trainer/training_state.h"

namespace loom::optim {
namespace {

using Matrix = std::vector<double>;  // row-major

Matrix gaussian(int64_t rows, int64_t cols, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  Matrix m(size_t(rows * cols));
  for (double& v : m) v = normal(rng);
  return m;
}

// k orthonormal columns of a rows x k matrix, by modified Gram–Schmidt on Gaussian columns
// (twice, so the columns are orthonormal to rounding).
Matrix orthonormal_columns(int64_t rows, int64_t k, uint64_t seed) {
  Matrix q = gaussian(rows, k, seed);
  for (int pass = 0; pass < 2; ++pass) {
    for (int64_t j = 0; j < k; ++j) {
      for (int64_t prev = 0; prev < j; ++prev) {
        double dot = 0;
        for (int64_t r = 0; r < rows; ++r) dot += q[r * k + j] * q[r * k + prev];
        for (int64_t r = 0; r < rows; ++r) q[r * k + j] -= dot * q[r * k + prev];
      }
      double norm = 0;
      for (int64_t r = 0; r < rows; ++r) norm += q[r * k + j] * q[r * k + j];
      norm = std::sqrt(norm);
      for (int64_t r = 0; r < rows; ++r) q[r * k + j] /= norm;
    }
  }
  return q;
}

// U diag(sigma) Vᵀ with random orthonormal U [rows, k], V [cols, k], k = min(rows, cols).
Tensor with_spectrum(int64_t rows, int64_t cols, const std::vector<double>& sigma, uint64_t seed) {
  const int64_t k = std::min(rows, cols);
  const Matrix u = orthonormal_columns(rows, k, seed), v = orthonormal_columns(cols, k, seed + 1);
  Matrix g(size_t(rows * cols), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      for (int64_t j = 0; j < k; ++j) g[r * cols + c] += u[r * k + j] * sigma[j] * v[c * k + j];
  return from_vector<double>(g, {rows, cols}, DType::f32);
}

std::vector<double> linear_spectrum(int64_t k, double lo, double hi) {
  std::vector<double> s(static_cast<size_t>(k));
  for (int64_t j = 0; j < k; ++j)
    s[j] = lo + (hi - lo) * double(j) / double(std::max<int64_t>(k - 1, 1));
  return s;
}

// Singular values (ascending) from the eigenvalues of the smaller Gram matrix, in double.
std::vector<double> singular_values(const Tensor& x) {
  const int64_t rows = x.size(0), cols = x.size(1), k = std::min(rows, cols);
  const auto a = x.to_vector<double>();
  Matrix gram(size_t(k * k), 0.0);
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = 0; j < k; ++j) {
      double s = 0;
      if (rows <= cols) {
        for (int64_t c = 0; c < cols; ++c) s += a[i * cols + c] * a[j * cols + c];
      } else {
        for (int64_t r = 0; r < rows; ++r) s += a[r * cols + i] * a[r * cols + j];
      }
      gram[i * k + j] = s;
    }
  std::vector<double> values, vectors;
  trainer::symmetric_eigen(gram, k, &values, &vectors);
  for (double& v : values) v = std::sqrt(std::max(v, 0.0));
  return values;
}

Tensor random_matrix(const Shape& shape, uint64_t seed) {
  return testing::uniform(shape, -1, 1, seed, DType::f32);
}

std::vector<float> floats(const Tensor& t) {
  return t.contiguous().to_vector<float>();
}

TEST(NewtonSchulz, SpectrumWithinTenfoldMapsIntoTheOracleBand) {
  struct Case {
    int64_t rows, cols;
    double scale;
  };
  for (const Case c : {Case{64, 64, 1.0}, Case{32, 96, 3.5}, Case{96, 32, 0.02}}) {
    SCOPED_TRACE(std::to_string(c.rows) + "x" + std::to_string(c.cols));
    std::vector<double> sigma = linear_spectrum(std::min(c.rows, c.cols), 0.1, 1.0);
    for (double& s : sigma) s *= c.scale;  // the Frobenius normalization removes any global scale
    const Tensor g = with_spectrum(c.rows, c.cols, sigma, 17 + uint64_t(c.rows));
    const std::vector<double> in = singular_values(g);
    EXPECT_NEAR(in.front(), 0.1 * c.scale, 1e-4 * c.scale);  // the construction is what we think
    EXPECT_NEAR(in.back(), 1.0 * c.scale, 1e-4 * c.scale);

    const std::vector<double> out = singular_values(newton_schulz(g));
    EXPECT_GE(out.front(), 0.67);
    EXPECT_LE(out.back(), 1.15);
    // Normalization alone keeps the tenfold spread, far outside the band: the iteration is what
    // brings the spectrum in.
    const std::vector<double> normalized = singular_values(newton_schulz(g, 0));
    EXPECT_LT(normalized.front(), 0.67);
    EXPECT_NEAR(normalized.back() / normalized.front(), 10.0, 1e-2);
  }
}

TEST(NewtonSchulz, DiagonalInputFollowsTheScalarQuinticMap) {
  // For diag(sigma) each singular value evolves on its own: sigma -> a s + b s^3 + c s^5 after
  // dividing by ||sigma||_F, five times.
  const std::vector<double> sigma = {1.0, 0.7, 0.4, 0.2, 0.05, 0.01};
  const int64_t n = int64_t(sigma.size());
  std::vector<double> d(size_t(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i) d[i * n + i] = sigma[i];
  const Tensor out = newton_schulz(from_vector<double>(d, {n, n}, DType::f32));
  double norm = 0;
  for (double s : sigma) norm += s * s;
  norm = std::sqrt(norm);
  const auto got = out.to_vector<double>();
  for (int64_t i = 0; i < n; ++i) {
    double s = sigma[i] / norm;
    for (int step = 0; step < 5; ++step)
      s = 3.4445 * s - 4.7750 * s * s * s + 2.0315 * s * s * s * s * s;
    EXPECT_NEAR(got[i * n + i], s, 2e-5) << "sigma " << sigma[i];
    for (int64_t j = 0; j < n; ++j)
      if (j != i) EXPECT_EQ(got[i * n + j], 0.0);
  }
}

TEST(NewtonSchulz, TransposeSymmetryIsBitwise) {
  const Tensor wide = random_matrix({24, 72}, 3);
  const Tensor tall = wide.t().contiguous();
  EXPECT_EQ(floats(newton_schulz(tall)), floats(newton_schulz(wide).t()));
  EXPECT_EQ(floats(newton_schulz(wide)), floats(newton_schulz(tall).t()));
  // A transposed view as input gives the same as its contiguous copy.
  EXPECT_EQ(floats(newton_schulz(wide.t())), floats(newton_schulz(tall)));
  EXPECT_EQ(newton_schulz(tall).shape(), (Shape{72, 24}));
}

TEST(NewtonSchulz, ZeroInputStaysZeroAndBadInputThrows) {
  EXPECT_EQ(floats(newton_schulz(zeros({3, 5}))), std::vector<float>(15, 0.0f));
  EXPECT_THROW(newton_schulz(zeros({4})), Error);
  EXPECT_THROW(newton_schulz(zeros({2, 2, 2})), Error);
  EXPECT_THROW(newton_schulz(zeros({2, 2}), -1), Error);
}

TEST(Muon, ScaleFactors) {
  const int64_t D = 16;
  EXPECT_DOUBLE_EQ(muon_scale_factor(MuonScale::rows_cols, 4 * D, D), 2.0);
  EXPECT_DOUBLE_EQ(muon_scale_factor(MuonScale::rows_cols, D, 4 * D), 1.0);
  EXPECT_DOUBLE_EQ(muon_scale_factor(MuonScale::rows_cols, D, D), 1.0);
  EXPECT_DOUBLE_EQ(muon_scale_factor(MuonScale::moonlight, D, 4 * D), 0.2 * 8);
  EXPECT_DOUBLE_EQ(muon_scale_factor(MuonScale::moonlight, 4 * D, D), 0.2 * 8);
  EXPECT_EQ(muon_scale_from_name("moonlight"), MuonScale::moonlight);
  EXPECT_EQ(std::string(muon_scale_name(MuonScale::rows_cols)), "rows_cols");
  EXPECT_THROW(muon_scale_from_name("spectral"), Error);
}

// One Muon step from p0 with gradient g; returns p0 - p1 (the applied update).
std::vector<double> applied_update(const Tensor& p0, const Tensor& g, const MuonConfig& cfg) {
  Tensor p = p0.clone().detach().set_requires_grad();
  Muon opt({p}, cfg);
  p.set_grad(g);
  opt.step();
  const auto before = p0.to_vector<double>(), after = p.to_vector<double>();
  std::vector<double> d(before.size());
  for (size_t k = 0; k < d.size(); ++k) d[k] = before[k] - after[k];
  return d;
}

TEST(Muon, WithoutMomentumTheUpdateIsNs5TimesScaleTimesLr) {
  const int64_t D = 8;
  const double lr = 0.05;
  for (const Shape& shape : {Shape{4 * D, D}, Shape{D, 4 * D}}) {
    SCOPED_TRACE(shape_str(shape));
    const Tensor p0 = random_matrix(shape, 5), g = random_matrix(shape, 6);
    const double scale = shape[0] > shape[1] ? 2.0 : 1.0;  // the §10 oracle values
    const auto d = applied_update(p0, g, {.lr = lr, .momentum = 0, .nesterov = true});
    const auto o = newton_schulz(g).to_vector<double>();
    for (size_t k = 0; k < d.size(); ++k) EXPECT_NEAR(d[k], lr * scale * o[k], 1e-6) << k;
    // Without Nesterov and beta = 0 the buffer is the gradient too.
    const auto plain = applied_update(p0, g, {.lr = lr, .momentum = 0, .nesterov = false});
    for (size_t k = 0; k < d.size(); ++k) EXPECT_EQ(plain[k], d[k]);
  }
}

TEST(Muon, MoonlightScaleGivesUpdateRmsOfAFifthOfLr) {
  const double lr = 0.01;
  for (const Shape& shape : {Shape{64, 16}, Shape{16, 64}, Shape{40, 40}}) {
    SCOPED_TRACE(shape_str(shape));
    const int64_t k = std::min(shape[0], shape[1]);
    const Tensor g = with_spectrum(shape[0], shape[1], linear_spectrum(k, 0.1, 1.0), 41);
    auto rms = [&](MuonScale scale) {
      const auto d = applied_update(zeros(shape), g, {.lr = lr, .momentum = 0, .scale = scale});
      double s = 0;
      for (double v : d) s += v * v;
      return std::sqrt(s / double(d.size()));
    };
    // NS5 singular values sit in [0.67, 1.15] rather than at 1, so the RMS is 0.2 lr within that.
    EXPECT_GT(rms(MuonScale::moonlight), 0.2 * lr * 0.67);
    EXPECT_LT(rms(MuonScale::moonlight), 0.2 * lr * 1.15);
    // The reference scale is not shape-independent: RMS ~ lr sqrt(max(1, r/c) / max(r, c)).
    const double ref = lr * std::sqrt(std::max(1.0, double(shape[0]) / double(shape[1])) /
                                      double(std::max(shape[0], shape[1])));
    EXPECT_GT(rms(MuonScale::rows_cols), ref * 0.67);
    EXPECT_LT(rms(MuonScale::rows_cols), ref * 1.15);
  }
}

TEST(Muon, WeightDecayIsAppliedBeforeTheUpdate) {
  const double lr = 0.5, wd = 1.0;  // decay factor 0.5: the two orders differ visibly
  const Tensor p0 = random_matrix({6, 10}, 8), g = random_matrix({6, 10}, 9);
  Tensor p = p0.clone().detach().set_requires_grad();
  Muon opt({p}, {.lr = lr, .momentum = 0, .weight_decay = wd});
  p.set_grad(g);
  opt.step();
  const auto o = newton_schulz(g).to_vector<double>(), w = p0.to_vector<double>();
  const auto got = p.to_vector<double>();
  double diff_after = 0;
  for (size_t k = 0; k < got.size(); ++k) {
    const double before = w[k] * (1 - lr * wd) - lr * o[k];
    const double after = (w[k] - lr * o[k]) * (1 - lr * wd);
    EXPECT_NEAR(got[k], before, 1e-6) << k;
    diff_after = std::max(diff_after, std::abs(got[k] - after));
  }
  EXPECT_GT(diff_after, 0.1);
}

TEST(Muon, MomentumIsAnEmaAndNesterovBlendsTheGradientIn) {
  const double beta = 0.9, lr = 0.1;
  const Shape shape{5, 7};
  const Tensor g1 = random_matrix(shape, 11), g2 = random_matrix(shape, 12);
  for (const bool nesterov : {true, false}) {
    SCOPED_TRACE(nesterov ? "nesterov" : "plain");
    Tensor p = zeros(shape).set_requires_grad();
    Muon opt({p}, {.lr = lr, .momentum = beta, .nesterov = nesterov});
    p.set_grad(g1);
    opt.step();
    const auto p1 = p.to_vector<double>();
    p.set_grad(g2);
    opt.step();
    const auto p2 = p.to_vector<double>();
    // m1 = (1-b) g1, m2 = b m1 + (1-b) g2; u = (1-b) g + b m (nesterov) or m.
    const auto a = g1.to_vector<double>(), b = g2.to_vector<double>();
    std::vector<double> m2(a.size()), u2(a.size());
    for (size_t k = 0; k < a.size(); ++k) {
      const double m1 = (1 - beta) * a[k];
      m2[k] = beta * m1 + (1 - beta) * b[k];
      u2[k] = nesterov ? (1 - beta) * b[k] + beta * m2[k] : m2[k];
    }
    const auto buf = opt.momentum_buffer(0).to_vector<double>();
    for (size_t k = 0; k < a.size(); ++k) EXPECT_NEAR(buf[k], m2[k], 1e-6);
    const auto o2 = newton_schulz(from_vector<double>(u2, shape, DType::f32)).to_vector<double>();
    for (size_t k = 0; k < a.size(); ++k) EXPECT_NEAR(p1[k] - p2[k], lr * o2[k], 1e-5) << k;
  }
}

TEST(Muon, StackedExpertsAreOrthogonalizedOneMatrixAtATime) {
  // [E, out, in]: each slice is updated exactly as a separate [out, in] parameter would be, with
  // its own scale (here sqrt(32 / 8) = 2).
  const int64_t E = 3, out = 32, in = 8;
  const Tensor p0 = random_matrix({E, out, in}, 21);
  const Tensor g = random_matrix({E, out, in}, 22);
  Tensor stacked = p0.clone().detach().set_requires_grad();
  std::vector<Tensor> slices;
  for (int64_t e = 0; e < E; ++e)
    slices.push_back(p0.select(0, e).contiguous().clone().detach().set_requires_grad());
  const MuonConfig cfg{.lr = 0.03, .momentum = 0.8, .weight_decay = 0.1};
  Muon a({stacked}, cfg), b(slices, cfg);
  for (int step = 0; step < 2; ++step) {
    const Tensor gs = g * double(step + 1);
    stacked.set_grad(gs);
    for (int64_t e = 0; e < E; ++e) slices[e].set_grad(gs.select(0, e).contiguous());
    a.step();
    b.step();
  }
  for (int64_t e = 0; e < E; ++e)
    EXPECT_EQ(floats(stacked.select(0, e)), floats(slices[e])) << "expert " << e;
  const auto d = applied_update(p0, g, {.lr = 0.1, .momentum = 0});
  const auto o0 = newton_schulz(g.select(0, 0)).to_vector<double>();
  for (size_t k = 0; k < o0.size(); ++k) EXPECT_NEAR(d[k], 0.1 * 2.0 * o0[k], 1e-6);
}

TEST(Muon, ConvWeightsAreFlattenedToOutByRest) {
  const Shape shape{6, 2, 3, 3};  // -> [6, 18]: wide, scale 1
  const Tensor p0 = random_matrix(shape, 31), g = random_matrix(shape, 32);
  const auto d = applied_update(p0, g, {.lr = 0.2, .momentum = 0});
  const auto o = newton_schulz(g.reshape({6, 18})).to_vector<double>();
  ASSERT_EQ(d.size(), o.size());
  for (size_t k = 0; k < d.size(); ++k) EXPECT_NEAR(d[k], 0.2 * o[k], 1e-6) << k;
}

TEST(Muon, SkipsParametersWithoutGradientAndRejectsBadInput) {
  Tensor a = random_matrix({4, 4}, 1).set_requires_grad();
  Tensor b = random_matrix({4, 4}, 2).set_requires_grad();
  const auto b0 = floats(b);
  Muon opt({a, b});
  a.set_grad(random_matrix({4, 4}, 3));
  opt.step();
  EXPECT_TRUE(opt.momentum_buffer(0).defined());
  EXPECT_FALSE(opt.momentum_buffer(1).defined());
  EXPECT_EQ(floats(b), b0);

  Tensor bias = zeros({4}).set_name("blocks.0.attn.qkv.bias").set_requires_grad();
  try {
    Muon bad({a, bias});
    FAIL() << "expected loom::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'blocks.0.attn.qkv.bias'"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(Muon({a}, {.momentum = 1.0}), Error);
  EXPECT_THROW(Muon({a}, {.lr = -1}), Error);
  EXPECT_THROW(Muon({a}, {.weight_decay = -1}), Error);
  EXPECT_THROW(Muon({a}, {.ns_steps = 0}), Error);
  EXPECT_THROW(opt.set_momentum_buffer(0, zeros({4, 5})), Error);
}

// Named parameters for a two-group optimizer: two matrices for Muon, the rest for AdamW.
std::vector<Tensor> make_params() {
  std::vector<Tensor> ps = {random_matrix({12, 4}, 51), random_matrix({12}, 52),
                            random_matrix({2, 8, 4}, 53), random_matrix({4, 1, 2, 2}, 54)};
  const char* names[] = {"blocks.0.attn.qkv.weight", "blocks.0.attn.qkv.bias",
                         "blocks.0.moe.experts.w_up", "x_embedder.proj.weight"};
  for (size_t i = 0; i < ps.size(); ++i) ps[i].set_name(names[i]).set_requires_grad();
  return ps;
}

std::vector<std::string> names_of(const std::vector<Tensor>& ps) {
  std::vector<std::string> out;
  for (const Tensor& p : ps) out.push_back(p.name());
  return out;
}

std::unique_ptr<MultiOptimizer> make_multi(const std::vector<Tensor>& ps) {
  std::vector<ParamGroupSpec> groups = {
      {.name = "muon",
       .patterns = {"blocks.*.weight", "blocks.*.experts.*"},
       .optimizer = "muon",
       .lr = 0.02,
       .weight_decay = 0.01},
      {.name = "adamw", .optimizer = "adamw", .lr = 1e-3, .weight_decay = 0.01}};
  return std::make_unique<MultiOptimizer>(ps, groups, 1e-3);
}

void step_with(MultiOptimizer& opt, const std::vector<Tensor>& ps, int step) {
  opt.zero_grad();
  for (size_t i = 0; i < ps.size(); ++i)
    ps[i].set_grad(random_matrix(ps[i].shape(), 1000 + uint64_t(step) * 10 + i));
  opt.set_lr(1e-3 * (1.0 - 0.1 * step));  // a schedule, so the group rates move too
  opt.step();
}

TEST(Muon, CheckpointResumeContinuesBitIdentically) {
  const std::vector<Tensor> ps = make_params();
  auto opt = make_multi(ps);
  for (int s = 0; s < 3; ++s) step_with(*opt, ps, s);

  trainer::CheckpointContents saved;
  trainer::save_optimizer_state(*opt, names_of(ps), trainer::ParamShards(), &saved);
  for (const Tensor& p : ps) saved.model.emplace_back(p.name(), p);
  std::vector<std::string> keys;
  for (const auto& [k, t] : saved.optimizer) keys.push_back(k);
  for (const char* k :
       {"muon_momentum.blocks.0.attn.qkv.weight", "muon_momentum.blocks.0.moe.experts.w_up",
        "exp_avg.blocks.0.attn.qkv.bias", "exp_avg_sq.x_embedder.proj.weight"})
    EXPECT_NE(std::find(keys.begin(), keys.end(), k), keys.end()) << k;
  EXPECT_EQ(saved.counters.at("optim.step.x_embedder.proj.weight"), 3);

  // Through the checkpoint files too, so the state survives serialization.
  const auto dir = std::filesystem::temp_directory_path() / "loom_test_muon_resume";
  std::filesystem::remove_all(dir);
  const std::string ckpt = trainer::save_checkpoint(dir.string(), saved, 1);
  const trainer::CheckpointContents loaded = trainer::load_checkpoint(ckpt);
  std::filesystem::remove_all(dir);

  // A fresh model from the saved weights, one optimizer restored and one left fresh.
  auto fresh_params = [&] {
    NoGradGuard no_grad;
    std::vector<Tensor> out = make_params();
    for (size_t i = 0; i < out.size(); ++i) copy_into(out[i], ps[i]);
    return out;
  };
  const std::vector<Tensor> resumed = fresh_params(), cold = fresh_params();
  auto resumed_opt = make_multi(resumed), cold_opt = make_multi(cold);
  trainer::load_optimizer_state(*resumed_opt, names_of(resumed), trainer::ParamShards(), loaded);

  for (int s = 3; s < 5; ++s) {
    step_with(*opt, ps, s);
    step_with(*resumed_opt, resumed, s);
    step_with(*cold_opt, cold, s);
  }
  bool cold_differs = false;
  for (size_t i = 0; i < ps.size(); ++i) {
    EXPECT_EQ(floats(resumed[i]), floats(ps[i])) << ps[i].name();
    cold_differs = cold_differs || floats(cold[i]) != floats(ps[i]);
  }
  EXPECT_TRUE(cold_differs) << "the restored state made no difference: the test checks nothing";
}

}  // namespace
}  // namespace loom::optim
