#include "kernels/cpu/thread_pool.h"
#include "testing.h"

namespace loom {
using testing::allclose;
using testing::gradcheck;
using testing::uniform;

// Naive [M, K] x [K, N] for reference.
std::vector<double> naive_mm(const std::vector<double>& a, const std::vector<double>& b, int64_t m,
                             int64_t k, int64_t n) {
  std::vector<double> c(size_t(m * n), 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j)
      for (int64_t p = 0; p < k; ++p)
        c[size_t(i * n + j)] += a[size_t(i * k + p)] * b[size_t(p * n + j)];
  return c;
}

TEST(Matmul, MatchesNaive) {
  const Tensor a = uniform({5, 7}, -1, 1, 1), b = uniform({7, 3}, -1, 1, 2);
  const auto ref = naive_mm(a.to_vector<double>(), b.to_vector<double>(), 5, 7, 3);
  EXPECT_TRUE(allclose(matmul(a, b), from_vector(ref, {5, 3}), 1e-12));
  // Transposed operands reach the GEMM as transposes.
  EXPECT_TRUE(allclose(matmul(a.t().contiguous().t(), b.t().contiguous().t()),
                       from_vector(ref, {5, 3}), 1e-12));
  EXPECT_TRUE(allclose(matmul(a.to(DType::f32), b.to(DType::f32)), from_vector(ref, {5, 3}), 1e-5));
}

TEST(Matmul, ShapesAndBroadcasting) {
  EXPECT_EQ(matmul(zeros({2, 3, 4}), zeros({4, 5})).shape(), (Shape{2, 3, 5}));
  EXPECT_EQ(matmul(zeros({2, 1, 3, 4}), zeros({6, 4, 5})).shape(), (Shape{2, 6, 3, 5}));
  EXPECT_EQ(matmul(zeros({4}), zeros({4, 5})).shape(), (Shape{5}));
  EXPECT_EQ(matmul(zeros({3, 4}), zeros({4})).shape(), (Shape{3}));
  EXPECT_EQ(matmul(zeros({4}), zeros({4})).shape(), (Shape{}));
  EXPECT_EQ(matmul(zeros({3, 0}), zeros({0, 2})).shape(), (Shape{3, 2}));
  EXPECT_EQ(sum(matmul(ones({3, 0}), ones({0, 2}))).item(), 0.0);
}

TEST(Matmul, Gradients) {
  EXPECT_TRUE(gradcheck([](auto& v) { return matmul(v[0], v[1]); },
                        {uniform({3, 4}, -1, 1, 1), uniform({4, 2}, -1, 1, 2)}));
  EXPECT_TRUE(gradcheck([](auto& v) { return matmul(v[0], v[1].transpose(-1, -2)); },
                        {uniform({2, 1, 3, 4}, -1, 1, 3), uniform({3, 5, 4}, -1, 1, 4)}));
  EXPECT_TRUE(gradcheck([](auto& v) { return matmul(v[0], v[1]); },
                        {uniform({4}, -1, 1, 5), uniform({2, 4, 3}, -1, 1, 6)}));
  EXPECT_TRUE(
      gradcheck([](auto& v) { return linear(v[0], v[1], v[2]); },
                {uniform({2, 3, 4}, -1, 1, 7), uniform({5, 4}, -1, 1, 8), uniform({5}, -1, 1, 9)}));
}

TEST(Matmul, Errors) {
  try {
    (void)matmul(zeros({2, 3}), zeros({4, 5}));
    FAIL();
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("[matmul]"), std::string::npos);
    EXPECT_NE(m.find("[2, 3]"), std::string::npos);
    EXPECT_NE(m.find("[4, 5]"), std::string::npos);
  }
  EXPECT_THROW((void)matmul(zeros({2, 3}), zeros({3, 2}, DType::f64)), Error);
  EXPECT_THROW((void)matmul(zeros({2, 2, 3}), zeros({3, 3, 2})), Error);
  EXPECT_THROW((void)linear(zeros({2, 3}), zeros({4, 2})), Error);
}

// CPU GEMMs large enough to be cut into blocks over the pool (kernels/cpu/gemm.h) give the same
// bits for any thread count, split by rows (tall C), by columns (wide C), with transposed
// operands, and as a batch of small products run side by side.
TEST(Matmul, SameBitsForAnyThreadCount) {
  const int before = kernels::cpu::num_threads();
  const std::vector<std::pair<Tensor, Tensor>> cases = {
      {testing::uniform({1001, 300}, -1, 1, 1), testing::uniform({300, 77}, -1, 1, 2)},
      {testing::uniform({77, 300}, -1, 1, 3), testing::uniform({300, 1001}, -1, 1, 4)},
      {testing::uniform({300, 1001}, -1, 1, 5).t(), testing::uniform({77, 300}, -1, 1, 6).t()},
      {testing::uniform({64, 49, 32}, -1, 1, 7), testing::uniform({64, 32, 49}, -1, 1, 8)}};
  for (size_t i = 0; i < cases.size(); ++i) {
    kernels::cpu::set_num_threads(1);
    const Tensor one = matmul(cases[i].first, cases[i].second);
    for (int threads : {2, 3}) {
      kernels::cpu::set_num_threads(threads);
      EXPECT_TRUE(testing::allclose(matmul(cases[i].first, cases[i].second), one, 0, 0))
          << "case " << i << ", " << threads << " threads";
    }
  }
  kernels::cpu::set_num_threads(before);
}

}  // namespace loom
