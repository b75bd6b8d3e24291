#include "testing.h"

namespace loom {
using testing::allclose;
using testing::gradcheck;
using testing::uniform;

TEST(Autograd, GradAccumulatesAcrossBackwardCalls) {
  Tensor w = from_vector<float>({1, 2, 3}, {3}).set_requires_grad();
  sum(w * w).backward();
  sum(w * w).backward();
  EXPECT_TRUE(allclose(w.grad(), from_vector<float>({4, 8, 12}, {3})));
}

TEST(Autograd, SharedInputReceivesSummedGradient) {
  Tensor x = from_vector<double>({0.5, -1.0}, {2}).set_requires_grad();
  Tensor y = sum(x * x + exp(x) * x);
  y.backward();
  const auto g = x.grad().to_vector<double>();
  EXPECT_NEAR(g[0], 2 * 0.5 + std::exp(0.5) * 1.5, 1e-12);
  EXPECT_NEAR(g[1], -2.0 + std::exp(-1.0) * 0.0, 1e-12);
}

TEST(Autograd, SecondBackwardThroughFreedGraphThrows) {
  Tensor x = ones({2}).set_requires_grad();
  Tensor y = sum(exp(x));
  y.backward();
  try {
    y.backward();
    FAIL() << "expected loom::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("second time"), std::string::npos) << e.what();
  }
}

TEST(Autograd, RetainGraphAllowsSecondBackward) {
  Tensor x = ones({2}).set_requires_grad();
  Tensor y = sum(exp(x));
  y.backward(Tensor(), /*retain_graph=*/true);
  y.backward();
  EXPECT_TRUE(allclose(x.grad(), full({2}, 2 * std::exp(1.0)), 1e-5));
}

TEST(Autograd, NoGradRecordsNothing) {
  Tensor x = ones({2}).set_requires_grad();
  NoGradGuard g;
  Tensor y = x * 2.0;
  EXPECT_FALSE(y.requires_grad());
  EXPECT_TRUE(y.is_leaf());
}

TEST(Autograd, DetachStopsGradient) {
  Tensor x = full({1}, 3.0, DType::f64).set_requires_grad();
  Tensor y = sum(x * x.detach());
  y.backward();
  EXPECT_DOUBLE_EQ(x.grad().item(), 3.0);
}

TEST(Autograd, HookRunsOnceAfterAllContributions) {
  Tensor w = ones({2}).set_requires_grad();
  int calls = 0;
  double seen = 0;
  w.register_hook([&](Tensor& leaf) {
    ++calls;
    seen = sum(leaf.grad()).item();
  });
  sum(w * 2.0 + w * 3.0).backward();
  EXPECT_EQ(calls, 1);
  EXPECT_DOUBLE_EQ(seen, 10.0);
}

TEST(Autograd, SeedGradientForNonScalar) {
  Tensor x = from_vector<double>({1, 2}, {2}).set_requires_grad();
  Tensor y = x * 3.0;
  y.backward(from_vector<double>({1, 10}, {2}));
  EXPECT_TRUE(allclose(x.grad(), from_vector<double>({3, 30}, {2})));
}

TEST(Autograd, BackwardOnNonScalarWithoutSeedThrows) {
  Tensor x = ones({2}).set_requires_grad();
  EXPECT_THROW((x * 2.0).backward(), Error);
}

TEST(Autograd, BackwardWithoutGradThrows) {
  EXPECT_THROW(sum(ones({2})).backward(), Error);
}

TEST(Autograd, AccumulatesIntoPreallocatedGradInPlace) {
  Tensor w = ones({3}).set_requires_grad();
  Tensor flat = zeros({5});
  Tensor view = flat.narrow(0, 1, 3);
  w.set_grad(view);
  sum(w * 2.0).backward();
  EXPECT_TRUE(allclose(flat, from_vector<float>({0, 2, 2, 2, 0}, {5})));
}

TEST(Autograd, DeepChainDoesNotOverflowTheStack) {
  Tensor x = ones({1}).set_requires_grad();
  Tensor y = x;
  for (int i = 0; i < 20000; ++i) y = y * 1.0;
  sum(y).backward();
  EXPECT_FLOAT_EQ(float(x.grad().item()), 1.0f);
}

}  // namespace loom
