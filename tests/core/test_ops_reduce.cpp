#include "kernels/cpu/thread_pool.h"
#include "testing.h"

namespace loom {
using testing::allclose;
using testing::gradcheck;
using testing::uniform;

TEST(Reduce, Values) {
  const Tensor x = arange(0, 24, 1, DType::f64).reshape({2, 3, 4});
  EXPECT_EQ(sum(x).item(), 276.0);
  EXPECT_TRUE(allclose(sum(x, {0, 2}), from_vector<double>({60, 92, 124}, {3})));
  EXPECT_EQ(sum(x, {1}, true).shape(), (Shape{2, 1, 4}));
  EXPECT_TRUE(
      allclose(mean(x, {-1}), from_vector<double>({1.5, 5.5, 9.5, 13.5, 17.5, 21.5}, {2, 3})));
  EXPECT_TRUE(allclose(amax(x, {1}), from_vector<double>({8, 9, 10, 11, 20, 21, 22, 23}, {2, 4})));
  EXPECT_EQ(amin(x).item(), 0.0);
  EXPECT_EQ(argmax(from_vector<float>({1, 5, 5, 2}, {2, 2}), 1).to_vector<int64_t>(),
            (std::vector<int64_t>{1, 0}));
  EXPECT_NEAR(var(from_vector<double>({1, 2, 3, 4}, {4})).item(), 5.0 / 3, 1e-12);
  EXPECT_NEAR(var(from_vector<double>({1, 2, 3, 4}, {4}), {}, false, 0).item(), 1.25, 1e-12);
  EXPECT_NEAR(logsumexp(from_vector<double>({1000, 1000}, {2}), {0}).item(), 1000 + std::log(2.0),
              1e-9);
  EXPECT_NEAR(norm(from_vector<double>({3, 4}, {2})).item(), 5.0, 1e-12);
  EXPECT_NEAR(norm(from_vector<double>({3, -4}, {2}), 1).item(), 7.0, 1e-12);
}

TEST(Reduce, Gradients) {
  const Tensor x = uniform({3, 1, 4}, -1, 1, 3);
  EXPECT_TRUE(gradcheck([](auto& v) { return sum(v[0]); }, {x}));
  EXPECT_TRUE(gradcheck([](auto& v) { return sum(v[0], {0, 2}, true); }, {x}));
  EXPECT_TRUE(gradcheck([](auto& v) { return mean(v[0].transpose(0, 2), {1}); }, {x}));
  EXPECT_TRUE(gradcheck([](auto& v) { return amax(v[0], {-1}); }, {x}));
  EXPECT_TRUE(gradcheck([](auto& v) { return amin(v[0], {0}); }, {x}));
  EXPECT_TRUE(gradcheck([](auto& v) { return var(v[0], {0, 2}); }, {x}));
  EXPECT_TRUE(gradcheck([](auto& v) { return logsumexp(v[0], {2}); }, {x}));
  EXPECT_TRUE(gradcheck([](auto& v) { return norm(v[0], 2, {0}); }, {x}));
  EXPECT_TRUE(gradcheck([](auto& v) { return norm(v[0], 3, {2}); }, {x}));
}

TEST(Reduce, MaxGradientSplitsBetweenTies) {
  Tensor x = from_vector<double>({2, 2, 1}, {3}).set_requires_grad();
  amax(x).backward();
  EXPECT_TRUE(allclose(x.grad(), from_vector<double>({0.5, 0.5, 0}, {3})));
}

TEST(Reduce, DeterministicForAnyThreadCount) {
  Generator g(3);
  const Tensor x = randn({64, 50000}, g);
  const auto a = sum(x, {1}).to_vector<float>();
  kernels::cpu::set_num_threads(1);
  const auto b = sum(x, {1}).to_vector<float>();
  kernels::cpu::set_num_threads(2);
  EXPECT_EQ(a, b);
}

TEST(Reduce, Errors) {
  EXPECT_THROW((void)sum(zeros({2, 3}), {2}), Error);
  EXPECT_THROW((void)sum(zeros({2, 3}), {1, -1}), Error);
  EXPECT_THROW((void)amax(zeros({0, 3}), {0}), Error);
  EXPECT_THROW((void)var(zeros({1})), Error);
}

}  // namespace loom

namespace loom {
TEST(Reduce, IntegerSumsAndMaxima) {
  const Tensor x = from_vector<int64_t>({3, -1, 7, 2}, {2, 2});
  EXPECT_EQ(sum(x).item(), 11.0);
  EXPECT_EQ(sum(x).dtype(), DType::i64);
  EXPECT_EQ(amax(x, {1}).to_vector<int64_t>(), (std::vector<int64_t>{3, 7}));
  EXPECT_EQ(amin(from_vector<int32_t>({4, 9}, {2})).item(), 4.0);
}
}  // namespace loom
