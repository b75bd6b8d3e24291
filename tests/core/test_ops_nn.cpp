#include <cmath>
#include <limits>

#include "kernels/cpu/thread_pool.h"
#include "testing.h"

namespace loom {
using testing::allclose;
using testing::gradcheck;
using testing::uniform;

namespace {

using Inputs = std::vector<Tensor>;

// Runs f and checks it throws loom::Error whose message contains `needle`.
using loom::testing::expect_error;

// Host softmax of each length-n row of a row-major [rows, n] buffer.
std::vector<double> host_softmax(const std::vector<double>& x, int64_t n) {
  std::vector<double> y(x.size());
  for (size_t r = 0; r < x.size() / size_t(n); ++r) {
    double total = 0;
    for (int64_t i = 0; i < n; ++i) total += std::exp(x[r * n + i]);
    for (int64_t i = 0; i < n; ++i) y[r * n + i] = std::exp(x[r * n + i]) / total;
  }
  return y;
}

Tensor causal_mask(int64_t t) {
  std::vector<uint8_t> m(size_t(t * t));
  for (int64_t i = 0; i < t; ++i)
    for (int64_t j = 0; j < t; ++j) m[size_t(i * t + j)] = j <= i;
  return from_vector(m, {t, t}, DType::boolean);
}

}  // namespace

// ---- softmax / log_softmax ----------------------------------------------------------------------

TEST(Softmax, RowsSumToOneAndMatchExpOverSum) {
  const std::vector<float> v = {0.5f,  -1.0f, 2.0f, 0.0f, 3.0f, 3.0f,
                                -2.0f, 1.0f,  0.1f, 0.2f, 0.3f, 0.4f};
  const Tensor x = from_vector(v, {3, 4});
  const Tensor y = softmax(x);
  const std::vector<double> expected = host_softmax(std::vector<double>(v.begin(), v.end()), 4);
  EXPECT_TRUE(allclose(y, from_vector(expected, {3, 4}).to(DType::f32), 1e-7, 1e-6));
  EXPECT_TRUE(allclose(sum(y, {-1}), ones({3}), 1e-6));
}

TEST(Softmax, LargeLogitsStayFinite) {
  const Tensor y = softmax(from_vector<double>({1000, 1001, 1002}, {3}));
  const Tensor ref = from_vector(host_softmax({0, 1, 2}, 3), {3});
  EXPECT_TRUE(allclose(y, ref, 1e-12));
  const Tensor ly = log_softmax(from_vector<float>({1000, 1001, 1002}, {3}));
  const double lse = std::log(std::exp(0.0) + std::exp(1.0) + std::exp(2.0));
  EXPECT_TRUE(
      allclose(ly, from_vector<float>({float(-lse), float(1 - lse), float(2 - lse)}, {3}), 1e-5));
}

TEST(Softmax, NegativeInfinityGetsZeroProbability) {
  const double inf = std::numeric_limits<double>::infinity();
  const Tensor y = softmax(from_vector<double>({0.0, -inf, 0.0}, {3}));
  EXPECT_TRUE(allclose(y, from_vector<double>({0.5, 0.0, 0.5}, {3}), 1e-15));
}

TEST(Softmax, AllNegativeInfinityRowIsNaN) {
  const double inf = std::numeric_limits<double>::infinity();
  const auto y = softmax(from_vector<double>({-inf, -inf, 1.0, 2.0}, {2, 2})).to_vector<double>();
  EXPECT_TRUE(std::isnan(y[0]) && std::isnan(y[1]));
  EXPECT_NEAR(y[2] + y[3], 1.0, 1e-15);
}

TEST(Softmax, MiddleDimMatchesHostReference) {
  const Tensor x = uniform({2, 3, 4}, -2, 2, 5);
  const Tensor y = softmax(x, 1);
  ASSERT_EQ(y.shape(), (Shape{2, 3, 4}));
  // Move dim 1 last on the host, normalize, move it back.
  const auto xv = x.permute({0, 2, 1}).contiguous().to_vector<double>();
  const Tensor ref = from_vector(host_softmax(xv, 3), {2, 4, 3}).permute({0, 2, 1});
  EXPECT_TRUE(allclose(y, ref, 1e-12));
  EXPECT_TRUE(allclose(sum(y, {1}), ones({2, 4}, DType::f64), 1e-12));
}

TEST(Softmax, LogSoftmaxEqualsXMinusLogSumExp) {
  const Tensor x = uniform({4, 6}, -3, 3, 8);
  const auto xv = x.to_vector<double>();
  std::vector<double> ref(xv.size());
  for (int r = 0; r < 4; ++r) {
    double total = 0;
    for (int i = 0; i < 6; ++i) total += std::exp(xv[r * 6 + i]);
    for (int i = 0; i < 6; ++i) ref[r * 6 + i] = xv[r * 6 + i] - std::log(total);
  }
  EXPECT_TRUE(allclose(log_softmax(x, -1), from_vector(ref, {4, 6}), 1e-12));
  EXPECT_TRUE(allclose(log_softmax(x, 0), log(softmax(x, 0)), 1e-12));
}

TEST(Softmax, GradcheckLastDimWithSizeOneDim) {
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return softmax(in[0], -1); },
                        {uniform({3, 1, 5}, -2, 2, 11)}));
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return log_softmax(in[0], -1); },
                        {uniform({3, 1, 5}, -2, 2, 12)}));
}

TEST(Softmax, GradcheckOverSizeOneDim) {
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return softmax(in[0], 1); },
                        {uniform({3, 1, 5}, -2, 2, 13)}));
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return log_softmax(in[0], 1); },
                        {uniform({3, 1, 5}, -2, 2, 14)}));
}

TEST(Softmax, GradcheckMiddleDim) {
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return softmax(in[0], 1); },
                        {uniform({2, 3, 4}, -2, 2, 15)}));
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return log_softmax(in[0], -2); },
                        {uniform({2, 3, 4}, -2, 2, 16)}));
}

TEST(Softmax, GradcheckNonContiguousInput) {
  // [4, 3, 2] transposed to a strided [2, 3, 4] view.
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return softmax(in[0].transpose(0, 2), -1); },
                        {uniform({4, 3, 2}, -2, 2, 17)}));
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return log_softmax(in[0].transpose(0, 2), 0); },
                        {uniform({4, 3, 2}, -2, 2, 18)}));
}

TEST(Softmax, ZeroDimInputIsOne) {
  EXPECT_DOUBLE_EQ(softmax(scalar(3.0, DType::f64)).item(), 1.0);
  EXPECT_DOUBLE_EQ(log_softmax(scalar(3.0, DType::f64)).item(), 0.0);
}

TEST(Softmax, Errors) {
  expect_error([] { softmax(ones({2, 3}, DType::i64)); }, "[softmax]");
  expect_error([] { log_softmax(ones({2, 3}, DType::i32)); }, "[log_softmax]");
  expect_error([] { softmax(ones({2, 3}), 2); }, "softmax");
  expect_error([] { log_softmax(ones({2, 3}), -3); }, "log_softmax");
}

TEST(NnKernels, ResultsDoNotDependOnThreadCount) {
  // Shapes large enough that every row kernel and the embedding scatter split into many chunks.
  const Tensor x = uniform({700, 300}, -3, 3, 131, DType::f32);
  const Tensor w = uniform({300}, 0.5, 1.5, 132, DType::f32);
  Generator gen(4);
  const Tensor idx = randint(0, 50, {2000}, gen);
  auto run = [&] {
    Tensor table = uniform({50, 300}, -1, 1, 133, DType::f32).set_requires_grad();
    sum(embedding(idx, table) * 0.5).backward();
    return std::vector<Tensor>{softmax(x, 0), log_softmax(x), layer_norm(x, w, w), rms_norm(x, w),
                               table.grad()};
  };
  const int prev = kernels::cpu::num_threads();
  kernels::cpu::set_num_threads(1);
  const std::vector<Tensor> one = run();
  kernels::cpu::set_num_threads(4);
  const std::vector<Tensor> four = run();
  kernels::cpu::set_num_threads(prev);
  for (size_t i = 0; i < one.size(); ++i) {
    EXPECT_TRUE(allclose(one[i], four[i], 0, 0)) << "output " << i;
  }
  EXPECT_TRUE(allclose(softmax(x), exp(log_softmax(x)), 1e-6, 1e-5));
}

// ---- layer_norm / rms_norm ----------------------------------------------------------------------

TEST(LayerNorm, OutputHasZeroMeanAndUnitVariance) {
  const Tensor x = uniform({5, 16}, -3, 7, 21, DType::f32);
  const Tensor y = layer_norm(x, Tensor(), Tensor(), 1e-12);
  EXPECT_TRUE(allclose(mean(y, {-1}), zeros({5}), 1e-6));
  EXPECT_TRUE(allclose(var(y, {-1}, false, 0), ones({5}), 1e-5));
}

TEST(LayerNorm, AffineMatchesComposite) {
  const Tensor x = uniform({2, 3, 8}, -2, 2, 22, DType::f32);
  const Tensor w = uniform({8}, 0.5, 1.5, 23, DType::f32);
  const Tensor b = uniform({8}, -1, 1, 24, DType::f32);
  const Tensor mu = mean(x, {-1}, true);
  const Tensor v = var(x, {-1}, true, 0);
  const Tensor ref = (x - mu) * rsqrt(v + 1e-5) * w + b;
  EXPECT_TRUE(allclose(layer_norm(x, w, b), ref, 1e-5));
  EXPECT_TRUE(allclose(layer_norm(x, w), (x - mu) * rsqrt(v + 1e-5) * w, 1e-5));
}

TEST(LayerNorm, HandComputedRow) {
  // Row [1, 2, 3, 6]: mean 3, biased variance (4 + 1 + 0 + 9) / 4 = 3.5.
  const Tensor y = layer_norm(from_vector<double>({1, 2, 3, 6}, {1, 4}), Tensor(), Tensor(), 0.0);
  const double s = std::sqrt(3.5);
  EXPECT_TRUE(allclose(y, from_vector<double>({-2 / s, -1 / s, 0, 3 / s}, {1, 4}), 1e-14));
}

TEST(LayerNorm, GradcheckWithoutAffine) {
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return layer_norm(in[0]); },
                        {uniform({2, 3, 7}, -2, 2, 31)}));
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return layer_norm(in[0]); },
                        {uniform({3, 1, 5}, -2, 2, 32)}));
}

TEST(LayerNorm, GradcheckWithAffineOnLeadingDims) {
  EXPECT_TRUE(gradcheck(
      [](const Inputs& in) { return layer_norm(in[0], in[1], in[2]); },
      {uniform({2, 3, 7}, -2, 2, 33), uniform({7}, 0.5, 1.5, 34), uniform({7}, -1, 1, 35)}));
}

TEST(LayerNorm, GradcheckWeightOnlyAndBiasOnly) {
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return layer_norm(in[0], in[1]); },
                        {uniform({2, 3, 7}, -2, 2, 36), uniform({7}, 0.5, 1.5, 37)}));
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return layer_norm(in[0], Tensor(), in[1]); },
                        {uniform({2, 3, 7}, -2, 2, 38), uniform({7}, -1, 1, 39)}));
}

TEST(LayerNorm, GradcheckNonContiguousInput) {
  // [2, 7, 3] transposed to a strided [2, 3, 7] view: the normalized dim is not unit-stride.
  EXPECT_TRUE(gradcheck(
      [](const Inputs& in) { return layer_norm(in[0].transpose(1, 2), in[1], in[2]); },
      {uniform({2, 7, 3}, -2, 2, 40), uniform({7}, 0.5, 1.5, 41), uniform({7}, -1, 1, 42)}));
}

TEST(LayerNorm, SingleColumnGivesBiasAndZeroGradient) {
  EXPECT_TRUE(
      gradcheck([](const Inputs& in) { return layer_norm(in[0], in[1], in[2]); },
                {uniform({4, 1}, -2, 2, 43), uniform({1}, 0.5, 1.5, 44), uniform({1}, -1, 1, 45)}));
  const Tensor b = from_vector<float>({0.25f}, {1});
  EXPECT_TRUE(allclose(layer_norm(uniform({3, 1}, -1, 1, 46, DType::f32), ones({1}), b),
                       full({3, 1}, 0.25)));
}

TEST(LayerNorm, OnlyParametersRequireGrad) {
  const Tensor x = uniform({2, 3, 4}, -1, 1, 47);
  Tensor w = ones({4}, DType::f64).set_requires_grad();
  Tensor b = zeros({4}, DType::f64).set_requires_grad();
  sum(layer_norm(x, w, b)).backward();
  // d/dw sum(xhat * w + b) is the column sum of xhat; d/db is the number of rows (6).
  const Tensor xhat = layer_norm(x);
  EXPECT_TRUE(allclose(w.grad(), sum(xhat, {0, 1}), 1e-12));
  EXPECT_TRUE(allclose(b.grad(), full({4}, 6.0, DType::f64), 1e-12));
}

TEST(LayerNorm, Errors) {
  expect_error([] { layer_norm(ones({2, 4}), ones({3})); }, "[layer_norm]");
  expect_error([] { layer_norm(ones({2, 4}), ones({4}), ones({4, 1})); }, "[layer_norm]");
  expect_error([] { layer_norm(ones({2, 4}), ones({4}, DType::f64)); }, "[layer_norm]");
  expect_error([] { layer_norm(ones({2, 4}, DType::i64)); }, "[layer_norm]");
  expect_error([] { layer_norm(ones({2, 0})); }, "[layer_norm]");
  expect_error([] { layer_norm(scalar(1.0)); }, "[layer_norm]");
}

TEST(RmsNorm, MatchesComposite) {
  const Tensor x = uniform({3, 2, 6}, -2, 2, 51, DType::f32);
  const Tensor w = uniform({6}, 0.5, 1.5, 52, DType::f32);
  const Tensor r = rsqrt(mean(square(x), {-1}, true) + 1e-6);
  EXPECT_TRUE(allclose(rms_norm(x), x * r, 1e-5));
  EXPECT_TRUE(allclose(rms_norm(x, w), x * r * w, 1e-5));
}

TEST(RmsNorm, HandComputedRow) {
  // Row [3, 4]: mean of squares 12.5.
  const Tensor y = rms_norm(from_vector<double>({3, 4}, {2}), Tensor(), 0.0);
  const double s = std::sqrt(12.5);
  EXPECT_TRUE(allclose(y, from_vector<double>({3 / s, 4 / s}, {2}), 1e-14));
}

TEST(RmsNorm, Gradcheck) {
  EXPECT_TRUE(
      gradcheck([](const Inputs& in) { return rms_norm(in[0]); }, {uniform({2, 3, 7}, -2, 2, 53)}));
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return rms_norm(in[0], in[1]); },
                        {uniform({2, 3, 7}, -2, 2, 54), uniform({7}, 0.5, 1.5, 55)}));
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return rms_norm(in[0], in[1]); },
                        {uniform({3, 1, 5}, -2, 2, 56), uniform({5}, 0.5, 1.5, 57)}));
}

TEST(RmsNorm, GradcheckNonContiguousInput) {
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return rms_norm(in[0].transpose(0, 1), in[1]); },
                        {uniform({5, 3}, -2, 2, 58), uniform({5}, 0.5, 1.5, 59)}));
}

TEST(RmsNorm, Errors) {
  expect_error([] { rms_norm(ones({2, 4}), ones({5})); }, "[rms_norm]");
  expect_error([] { rms_norm(ones({2, 4}), ones({4}, DType::f64)); }, "[rms_norm]");
  expect_error([] { rms_norm(ones({2, 4}), Tensor(), -1.0); }, "[rms_norm]");
}

// ---- embedding / one_hot ------------------------------------------------------------------------

TEST(Embedding, PicksRows) {
  const Tensor table = arange(0, 15).reshape({5, 3});
  for (DType idx_dtype : {DType::i64, DType::i32}) {
    const Tensor idx = from_vector<int64_t>({4, 0, 2, 2}, {2, 2}).to(idx_dtype);
    const Tensor out = embedding(idx, table);
    ASSERT_EQ(out.shape(), (Shape{2, 2, 3}));
    EXPECT_TRUE(
        allclose(out, from_vector<float>({12, 13, 14, 0, 1, 2, 6, 7, 8, 6, 7, 8}, {2, 2, 3})));
  }
}

TEST(Embedding, GradientCountsRepeatedRows) {
  Tensor table = uniform({4, 2}, -1, 1, 61).set_requires_grad();
  const Tensor idx = from_vector<int64_t>({3, 1, 3, 3, 0}, {5});
  sum(embedding(idx, table)).backward();
  EXPECT_TRUE(allclose(table.grad(), from_vector<double>({1, 1, 1, 1, 0, 0, 3, 3}, {4, 2})));
}

TEST(Embedding, Gradcheck) {
  const Tensor idx = from_vector<int64_t>({2, 0, 2, 1, 2, 4}, {2, 3});
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return embedding(in[1], in[0]); },
                        {uniform({5, 3}, -1, 1, 62), idx}));
  // A strided table view (the transpose of a [3, 5] tensor).
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return embedding(in[1], in[0].t()); },
                        {uniform({3, 5}, -1, 1, 63), idx}));
}

TEST(Embedding, Errors) {
  const Tensor table = zeros({5, 3});
  expect_error([&] { embedding(from_vector<int64_t>({1, 5}, {2}), table); }, "[embedding]");
  expect_error([&] { embedding(from_vector<int64_t>({-1}, {1}), table); }, "[embedding]");
  expect_error([&] { embedding(from_vector<float>({1}, {1}), table); }, "[embedding]");
  expect_error([&] { embedding(from_vector<int64_t>({1}, {1}), zeros({5})); }, "[embedding]");
  expect_error(
      [&] {
        embedding(from_vector<int64_t>({1}, {1}), zeros({5, 3}, DType::i64));
      },
      "[embedding]");
}

TEST(OneHot, Values) {
  const Tensor out = one_hot(from_vector<int32_t>({2, 0, 1}, {3}), 3);
  EXPECT_EQ(out.dtype(), DType::f32);
  EXPECT_TRUE(allclose(out, from_vector<float>({0, 0, 1, 1, 0, 0, 0, 1, 0}, {3, 3})));
  const Tensor out2 = one_hot(from_vector<int64_t>({1, 3}, {2, 1}), 4, DType::f64);
  ASSERT_EQ(out2.shape(), (Shape{2, 1, 4}));
  EXPECT_TRUE(allclose(out2, from_vector<double>({0, 1, 0, 0, 0, 0, 0, 1}, {2, 1, 4})));
}

TEST(OneHot, Errors) {
  expect_error([] { one_hot(from_vector<int64_t>({3}, {1}), 3); }, "[one_hot]");
  expect_error([] { one_hot(from_vector<int64_t>({-1}, {1}), 3); }, "[one_hot]");
  expect_error([] { one_hot(from_vector<float>({1}, {1}), 3); }, "[one_hot]");
  expect_error([] { one_hot(from_vector<int64_t>({0}, {1}), 0); }, "[one_hot]");
}

// ---- dropout ------------------------------------------------------------------------------------

TEST(Dropout, IdentityWhenNotTrainingOrZeroP) {
  Generator gen(1);
  const Tensor x = uniform({10}, -1, 1, 71, DType::f32);
  EXPECT_TRUE(dropout(x, 0.5, false, gen).same(x));
  EXPECT_TRUE(dropout(x, 0.0, true, gen).same(x));
  EXPECT_EQ(gen.offset(), 0u);
}

TEST(Dropout, DropsExpectedFractionAndScalesSurvivors) {
  Generator gen(7, 3);
  const double p = 0.3;
  const Tensor x = uniform({200, 500}, 1, 2, 72, DType::f32);
  const Tensor y = dropout(x, p, true, gen);
  const auto xv = x.to_vector<float>(), yv = y.to_vector<float>();
  int64_t dropped = 0;
  for (size_t i = 0; i < xv.size(); ++i) {
    if (yv[i] == 0) {
      ++dropped;
    } else {
      ASSERT_NEAR(yv[i], xv[i] / (1 - p), 1e-5) << "element " << i;
    }
  }
  // 100000 Bernoulli(0.3) draws: the standard deviation of the fraction is 0.0015.
  EXPECT_NEAR(double(dropped) / double(xv.size()), p, 0.01);
}

TEST(Dropout, SameGeneratorStateGivesSameMask) {
  const Tensor x = ones({64});
  Generator a(5, 1), b(5, 1);
  const Tensor ya = dropout(x, 0.5, true, a);
  EXPECT_TRUE(allclose(ya, dropout(x, 0.5, true, b), 0));
  EXPECT_FALSE(allclose(ya, dropout(x, 0.5, true, a), 0));  // the offset moved on
}

TEST(Dropout, GradientIsMaskOverKeepProbability) {
  Generator gen(9);
  const double p = 0.25;
  Tensor x = ones({1000}, DType::f64).set_requires_grad();
  const Tensor w = uniform({1000}, 0.5, 1.5, 73);
  const Tensor y = dropout(x, p, true, gen);
  sum(y * w).backward();
  const auto yv = y.to_vector<double>(), wv = w.to_vector<double>();
  const auto gv = x.grad().to_vector<double>();
  for (size_t i = 0; i < yv.size(); ++i) {
    const double expected = yv[i] != 0 ? wv[i] / (1 - p) : 0.0;
    ASSERT_NEAR(gv[i], expected, 1e-12) << "element " << i;
  }
}

TEST(Dropout, PEqualOneZeroes) {
  Generator gen(1);
  EXPECT_TRUE(allclose(dropout(ones({4, 4}), 1.0, true, gen), zeros({4, 4}), 0));
}

TEST(Dropout, Errors) {
  Generator gen(1);
  expect_error([&] { dropout(ones({2}), 1.5, true, gen); }, "[dropout]");
  expect_error([&] { dropout(ones({2}), -0.1, true, gen); }, "[dropout]");
  expect_error([&] { dropout(ones({2}, DType::i64), 0.5, true, gen); }, "[dropout]");
}

// ---- losses -------------------------------------------------------------------------------------

TEST(CrossEntropy, EqualsMeanNegativeLogSoftmaxOfTargets) {
  const Tensor logits = uniform({3, 4}, -2, 2, 81);
  const Tensor targets = from_vector<int64_t>({1, 0, 3}, {3});
  const auto ls = log_softmax(logits).to_vector<double>();
  const double expected = -(ls[0 * 4 + 1] + ls[1 * 4 + 0] + ls[2 * 4 + 3]) / 3;
  EXPECT_NEAR(cross_entropy(logits, targets).item(), expected, 1e-12);
  EXPECT_NEAR(cross_entropy(logits, targets.to(DType::i32)).item(), expected, 1e-12);
}

TEST(CrossEntropy, HandComputedUniformLogits) {
  // Equal logits over K classes: the loss is log K whatever the target.
  const Tensor logits = full({2, 5}, 0.3);
  EXPECT_NEAR(cross_entropy(logits, from_vector<int64_t>({4, 2}, {2})).item(), std::log(5.0), 1e-6);
}

TEST(CrossEntropy, IgnoreIndexIsExcludedFromSumAndMean) {
  const Tensor logits = uniform({4, 3}, -2, 2, 82);
  const auto ls = log_softmax(logits).to_vector<double>();
  const double expected = -(ls[0 * 3 + 2] + ls[2 * 3 + 1]) / 2;
  EXPECT_NEAR(cross_entropy(logits, from_vector<int64_t>({2, -100, 1, -100}, {4})).item(), expected,
              1e-12);
  // A custom ignore_index; -100 is then an ordinary (out-of-range) target.
  EXPECT_NEAR(cross_entropy(logits, from_vector<int64_t>({2, 7, 1, 7}, {4}), 7).item(), expected,
              1e-12);
}

TEST(CrossEntropy, IgnoredRowsGetNoGradient) {
  Tensor logits = uniform({3, 4}, -2, 2, 83).set_requires_grad();
  cross_entropy(logits, from_vector<int64_t>({1, -100, 2}, {3})).backward();
  const Tensor g = logits.grad();
  EXPECT_TRUE(allclose(g.select(0, 1), zeros({4}, DType::f64), 0));
  // Each kept row's gradient is (softmax - one_hot) / 2.
  const Tensor s = softmax(logits.detach());
  const Tensor oh = one_hot(from_vector<int64_t>({1, 0, 2}, {3}), 4, DType::f64);
  EXPECT_TRUE(allclose(g.select(0, 0), ((s - oh) / 2.0).select(0, 0), 1e-12));
  EXPECT_TRUE(allclose(g.select(0, 2), ((s - oh) / 2.0).select(0, 2), 1e-12));
}

TEST(CrossEntropy, Gradcheck) {
  const Tensor targets = from_vector<int64_t>({1, -100, 4, 0}, {4});
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return cross_entropy(in[0], in[1]); },
                        {uniform({4, 5}, -2, 2, 84), targets}));
  // Leading dims [B, T, K] with [B, T] targets, and a strided logits view.
  const Tensor t2 = from_vector<int64_t>({0, 2, 1, 1, 0, 2}, {2, 3});
  EXPECT_TRUE(
      gradcheck([](const Inputs& in) { return cross_entropy(in[0].transpose(1, 2), in[1]); },
                {uniform({2, 3, 3}, -2, 2, 85), t2}));
}

TEST(CrossEntropy, AllIgnoredIsNaN) {
  EXPECT_TRUE(
      std::isnan(cross_entropy(zeros({2, 3}), from_vector<int64_t>({-100, -100}, {2})).item()));
}

TEST(CrossEntropy, Errors) {
  const Tensor logits = zeros({3, 4});
  expect_error(
      [&] {
        cross_entropy(logits, from_vector<float>({0, 1, 2}, {3}));
      },
      "[cross_entropy]");
  expect_error(
      [&] {
        cross_entropy(logits, from_vector<int64_t>({0, 1}, {2}));
      },
      "[cross_entropy]");
  expect_error(
      [&] {
        cross_entropy(logits, from_vector<int64_t>({0, 4, 1}, {3}));
      },
      "[cross_entropy]");
  expect_error(
      [&] {
        cross_entropy(logits, from_vector<int64_t>({0, -1, 1}, {3}));
      },
      "[cross_entropy]");
  expect_error(
      [&] {
        cross_entropy(zeros({3, 4}, DType::i64), from_vector<int64_t>({0, 1, 2}, {3}));
      },
      "[cross_entropy]");
}

TEST(MseLoss, HandComputed) {
  const Tensor a = from_vector<float>({1, 2, 3, 4}, {2, 2});
  const Tensor b = from_vector<float>({1, 0, 4, 1}, {2, 2});
  EXPECT_NEAR(mse_loss(a, b).item(), (0 + 4 + 1 + 9) / 4.0, 1e-6);
}

TEST(MseLoss, Gradcheck) {
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return mse_loss(in[0].transpose(0, 1), in[1]); },
                        {uniform({3, 2}, -1, 1, 91), uniform({2, 3}, -1, 1, 92)}));
}

TEST(MseLoss, Errors) {
  expect_error([] { mse_loss(ones({2, 3}), ones({3, 2})); }, "[mse_loss]");
  expect_error([] { mse_loss(ones({2, 3}), ones({3})); }, "[mse_loss]");
  expect_error([] { mse_loss(ones({2}), ones({2}, DType::f64)); }, "[mse_loss]");
}

// ---- attention ----------------------------------------------------------------------------------

namespace {

// Naive host attention over [B, Tq, D] x [B, Tk, D] x [B, Tk, Dv] with an optional [Tq, Tk] mask.
std::vector<double> host_attention(const std::vector<double>& q, const std::vector<double>& k,
                                   const std::vector<double>& v, const std::vector<uint8_t>* mask,
                                   int64_t b, int64_t tq, int64_t tk, int64_t d, int64_t dv,
                                   double scale) {
  std::vector<double> out(size_t(b * tq * dv), 0.0);
  for (int64_t n = 0; n < b; ++n)
    for (int64_t i = 0; i < tq; ++i) {
      std::vector<double> s(static_cast<size_t>(tk));
      double m = -std::numeric_limits<double>::infinity();
      for (int64_t j = 0; j < tk; ++j) {
        double dot = 0;
        for (int64_t c = 0; c < d; ++c) dot += q[(n * tq + i) * d + c] * k[(n * tk + j) * d + c];
        s[j] =
            (mask && !(*mask)[i * tk + j]) ? -std::numeric_limits<double>::infinity() : dot * scale;
        m = std::max(m, s[j]);
      }
      double total = 0;
      for (int64_t j = 0; j < tk; ++j) total += (s[j] = std::exp(s[j] - m));
      for (int64_t j = 0; j < tk; ++j)
        for (int64_t c = 0; c < dv; ++c)
          out[(n * tq + i) * dv + c] += s[j] / total * v[(n * tk + j) * dv + c];
    }
  return out;
}

}  // namespace

TEST(Attention, MatchesHostReference) {
  const Tensor q = uniform({2, 3, 4}, -1, 1, 101), k = uniform({2, 5, 4}, -1, 1, 102);
  const Tensor v = uniform({2, 5, 2}, -1, 1, 103);
  const auto ref = host_attention(q.to_vector<double>(), k.to_vector<double>(),
                                  v.to_vector<double>(), nullptr, 2, 3, 5, 4, 2, 0.5);
  EXPECT_TRUE(allclose(scaled_dot_product_attention(q, k, v), from_vector(ref, {2, 3, 2}), 1e-12));
  const auto ref2 = host_attention(q.to_vector<double>(), k.to_vector<double>(),
                                   v.to_vector<double>(), nullptr, 2, 3, 5, 4, 2, 0.3);
  EXPECT_TRUE(allclose(scaled_dot_product_attention(q, k, v, Tensor(), 0.3),
                       from_vector(ref2, {2, 3, 2}), 1e-12));
}

TEST(Attention, MaskedMatchesHostReference) {
  const Tensor q = uniform({2, 4, 3}, -1, 1, 104), k = uniform({2, 4, 3}, -1, 1, 105);
  const Tensor v = uniform({2, 4, 3}, -1, 1, 106);
  std::vector<uint8_t> m(16);
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) m[size_t(i * 4 + j)] = j <= i;
  const auto ref = host_attention(q.to_vector<double>(), k.to_vector<double>(),
                                  v.to_vector<double>(), &m, 2, 4, 4, 3, 3, 1 / std::sqrt(3.0));
  const Tensor out = scaled_dot_product_attention(q, k, v, causal_mask(4));
  EXPECT_TRUE(allclose(out, from_vector(ref, {2, 4, 3}), 1e-12));
  // The first query sees only the first key.
  EXPECT_TRUE(allclose(out.select(1, 0), v.select(1, 0), 1e-12));
}

TEST(Attention, GradcheckWithoutMask) {
  EXPECT_TRUE(
      gradcheck([](const Inputs& in) { return scaled_dot_product_attention(in[0], in[1], in[2]); },
                {uniform({2, 2, 3, 4}, -1, 1, 111), uniform({2, 2, 3, 4}, -1, 1, 112),
                 uniform({2, 2, 3, 4}, -1, 1, 113)}));
}

TEST(Attention, GradcheckWithMask) {
  EXPECT_TRUE(gradcheck(
      [](const Inputs& in) {
        return scaled_dot_product_attention(in[0], in[1], in[2], causal_mask(3));
      },
      {uniform({2, 2, 3, 4}, -1, 1, 114), uniform({2, 2, 3, 4}, -1, 1, 115),
       uniform({2, 2, 3, 4}, -1, 1, 116)}));
}

TEST(Attention, GradcheckStridedInputsAndUnequalLengths) {
  // q is a [B, T, H, D] -> [B, H, T, D] transposed view, as attention layers produce it.
  EXPECT_TRUE(gradcheck(
      [](const Inputs& in) {
        return scaled_dot_product_attention(in[0].transpose(1, 2), in[1], in[2], Tensor(), 0.7);
      },
      {uniform({2, 3, 2, 4}, -1, 1, 117), uniform({2, 2, 5, 4}, -1, 1, 118),
       uniform({2, 2, 5, 1}, -1, 1, 119)}));
}

TEST(Attention, Errors) {
  const Tensor q = ones({2, 3, 4}), v = ones({2, 5, 4});
  const char* name = "[scaled_dot_product_attention]";
  expect_error([&] { scaled_dot_product_attention(q, ones({2, 5, 3}), v); }, name);
  expect_error([&] { scaled_dot_product_attention(q, ones({2, 5, 4}), ones({2, 4, 4})); }, name);
  expect_error([&] { scaled_dot_product_attention(q, ones({2, 5, 4}), v, ones({3, 5})); }, name);
  expect_error(
      [&] {
        scaled_dot_product_attention(q, ones({2, 5, 4}), v,
                                     from_vector<uint8_t>({1, 0}, {2}, DType::boolean));
      },
      name);
  const Tensor wide_mask = from_vector(std::vector<uint8_t>(30, 1), {2, 1, 3, 5}, DType::boolean);
  expect_error([&] { scaled_dot_product_attention(q, ones({2, 5, 4}), v, wide_mask); }, name);
  expect_error([&] { scaled_dot_product_attention(q, ones({2, 5, 4}, DType::f64), v); }, name);
  expect_error([&] { scaled_dot_product_attention(ones({4}), ones({4}), ones({4})); }, name);
}

}  // namespace loom
