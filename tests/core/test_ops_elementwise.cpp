#include "testing.h"

namespace loom {
using testing::allclose;
using testing::gradcheck;
using testing::uniform;

using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

TEST(Elementwise, BinaryGradientsWithBroadcasting) {
  const Tensor a = uniform({3, 1, 4}, -1, 1, 1), b = uniform({2, 1}, 0.5, 1.5, 2);
  EXPECT_TRUE(gradcheck([](auto& x) { return add(x[0], x[1]); }, {a, b}));
  EXPECT_TRUE(gradcheck([](auto& x) { return sub(x[0], x[1]); }, {a, b}));
  EXPECT_TRUE(gradcheck([](auto& x) { return mul(x[0], x[1]); }, {a, b}));
  EXPECT_TRUE(gradcheck([](auto& x) { return div(x[0], x[1]); }, {a, b}));
  EXPECT_TRUE(gradcheck([](auto& x) { return maximum(x[0], x[1]); }, {a, b}));
  EXPECT_TRUE(gradcheck([](auto& x) { return minimum(x[0], x[1]); }, {a, b}));
  const Tensor pa = uniform({3, 4}, 0.5, 2, 3), pb = uniform({4}, -1, 2, 4);
  EXPECT_TRUE(gradcheck([](auto& x) { return pow(x[0], x[1]); }, {pa, pb}));
}

TEST(Elementwise, BinaryOnNonContiguousViews) {
  const Tensor a = uniform({4, 3}, -1, 1, 5), b = uniform({3, 4}, -1, 1, 6);
  EXPECT_TRUE(gradcheck([](auto& x) { return mul(x[0].t(), x[1]); }, {a, b}));
  EXPECT_TRUE(gradcheck(
      [](auto& x) { return add(x[0].slice(0, 0, 4, 2), x[1].t().narrow(0, 1, 2)); }, {a, b}));
}

TEST(Elementwise, UnaryGradients) {
  const Tensor x = uniform({2, 1, 5}, -2, 2, 7);
  const Tensor pos = uniform({2, 1, 5}, 0.2, 3, 8);
  const std::vector<std::pair<const char*, Fn>> on_reals = {
      {"neg", [](auto& v) { return neg(v[0]); }},
      {"abs", [](auto& v) { return abs(v[0]); }},
      {"exp", [](auto& v) { return exp(v[0]); }},
      {"square", [](auto& v) { return square(v[0]); }},
      {"tanh", [](auto& v) { return tanh(v[0]); }},
      {"sigmoid", [](auto& v) { return sigmoid(v[0]); }},
      {"relu", [](auto& v) { return relu(v[0]); }},
      {"silu", [](auto& v) { return silu(v[0]); }},
      {"gelu_tanh", [](auto& v) { return gelu_tanh(v[0]); }},
      {"sin", [](auto& v) { return sin(v[0]); }},
      {"cos", [](auto& v) { return cos(v[0]); }},
      {"clamp", [](auto& v) { return clamp(v[0], -1.0, 0.5); }},
      {"pow_scalar", [](auto& v) { return pow(v[0], 3.0); }},
      {"on_transposed", [](auto& v) { return tanh(v[0].transpose(0, 2)); }},
  };
  for (const auto& [name, f] : on_reals) EXPECT_TRUE(gradcheck(f, {x})) << name;
  const std::vector<std::pair<const char*, Fn>> on_positive = {
      {"log", [](auto& v) { return log(v[0]); }},
      {"sqrt", [](auto& v) { return sqrt(v[0]); }},
      {"rsqrt", [](auto& v) { return rsqrt(v[0]); }},
      {"pow_frac", [](auto& v) { return pow(v[0], 1.7); }},
  };
  for (const auto& [name, f] : on_positive) EXPECT_TRUE(gradcheck(f, {pos})) << name;
}

TEST(Elementwise, Values) {
  const Tensor x = from_vector<double>({-1, 0, 2}, {3});
  EXPECT_TRUE(allclose(relu(x), from_vector<double>({0, 0, 2}, {3})));
  EXPECT_TRUE(allclose(clamp(x, -0.5, 1), from_vector<double>({-0.5, 0, 1}, {3})));
  EXPECT_NEAR(gelu_tanh(from_vector<double>({1.0}, {1})).item(), 0.8411919906082768, 1e-12);
  EXPECT_NEAR(silu(from_vector<double>({1.0}, {1})).item(), 1 / (1 + std::exp(-1.0)), 1e-12);
  EXPECT_TRUE(allclose(2.0 - x, from_vector<double>({3, 2, 0}, {3})));
  const Tensor i = from_vector<int64_t>({1, 2, 3}, {3});
  EXPECT_EQ((i * i + i).to_vector<int64_t>(), (std::vector<int64_t>{2, 6, 12}));
}

TEST(Elementwise, ComparisonsAndWhere) {
  const Tensor a = from_vector<float>({1, 2, 3}, {3}), b = from_vector<float>({2, 2, 2}, {3});
  EXPECT_EQ(lt(a, b).to_vector<int64_t>(), (std::vector<int64_t>{1, 0, 0}));
  EXPECT_EQ(le(a, b).to_vector<int64_t>(), (std::vector<int64_t>{1, 1, 0}));
  EXPECT_EQ(eq(a, b).to_vector<int64_t>(), (std::vector<int64_t>{0, 1, 0}));
  EXPECT_EQ(ne(a, b).to_vector<int64_t>(), (std::vector<int64_t>{1, 0, 1}));
  EXPECT_EQ(gt(a, b).to_vector<int64_t>(), (std::vector<int64_t>{0, 0, 1}));
  EXPECT_EQ(ge(a, b).to_vector<int64_t>(), (std::vector<int64_t>{0, 1, 1}));
  EXPECT_EQ(logical_not(lt(a, b)).to_vector<int64_t>(), (std::vector<int64_t>{0, 1, 1}));
  EXPECT_EQ(lt(a, b).dtype(), DType::boolean);
  const Tensor cond = from_vector<uint8_t>({1, 0, 1}, {3}, DType::boolean);
  EXPECT_TRUE(gradcheck([&](auto& x) { return where(cond, x[0], x[1]); },
                        {uniform({2, 3}, -1, 1, 1), uniform({1}, -1, 1, 2)}));
}

// Mixed floating operands promote to the wider dtype, and the gradient of the narrower one comes
// back in its own dtype.
TEST(Elementwise, MixedFloatsPromote) {
  const Tensor a = full({2}, 1.5).set_requires_grad(), b = full({2}, 2.0, DType::f64);
  const Tensor y = mul(a, b);
  EXPECT_EQ(y.dtype(), DType::f64);
  EXPECT_EQ(y.to_vector<double>(), (std::vector<double>{3.0, 3.0}));
  sum(y).backward();
  EXPECT_EQ(a.grad().dtype(), DType::f32);
  EXPECT_EQ(a.grad().to_vector<float>(), (std::vector<float>{2.0f, 2.0f}));
}

TEST(Elementwise, ErrorsNameOpAndShapes) {
  try {
    (void)add(zeros({2, 3}), zeros({4}));
    FAIL();
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("[add]"), std::string::npos) << m;
    EXPECT_NE(m.find("[2, 3]"), std::string::npos) << m;
  }
  EXPECT_THROW((void)mul(zeros({2}), zeros({2}, DType::i64)), Error);
  EXPECT_THROW((void)exp(zeros({2}, DType::i64)), Error);
  EXPECT_THROW((void)exp(zeros({2}, DType::bf16)), Error);
  EXPECT_THROW((void)where(zeros({2}), zeros({2}), zeros({2})), Error);
  EXPECT_THROW((void)clamp(zeros({2}), 1, 0), Error);
}

}  // namespace loom
