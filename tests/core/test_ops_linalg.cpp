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

}  // namespace loom
