#include "testing.h"
#include "trainer/eval/frechet.h"

namespace loom::trainer {

TEST(Frechet, EigenOfKnownMatrix) {
  std::vector<double> w, v;
  symmetric_eigen({2, 1, 1, 2}, 2, &w, &v);
  EXPECT_NEAR(w[0], 1.0, 1e-12);
  EXPECT_NEAR(w[1], 3.0, 1e-12);
  EXPECT_NEAR(std::abs(v[0 * 2 + 1]), std::sqrt(0.5), 1e-12);  // eigenvector of 3 is (1,1)/sqrt2
}

TEST(Frechet, IdenticalSetsGiveZeroAndShiftGivesSquaredDistance) {
  Generator g(4);
  const Tensor f = randn({500, 6}, g, DType::f64);
  const GaussianFit a = fit_gaussian(f);
  EXPECT_NEAR(frechet_distance(a, a), 0.0, 1e-8);
  const GaussianFit b = fit_gaussian(f + 2.0);
  EXPECT_NEAR(frechet_distance(a, b), 6 * 4.0, 1e-8);
}

TEST(Frechet, DiagonalGaussiansMatchClosedForm) {
  // For diagonal covariances d² = |mu1-mu2|² + sum (s1 + s2 - 2 sqrt(s1 s2)).
  GaussianFit a{{0, 0}, {4, 0, 0, 1}, 2}, b{{1, 0}, {1, 0, 0, 9}, 2};
  EXPECT_NEAR(frechet_distance(a, b), 1 + (4 + 1 - 4) + (1 + 9 - 6), 1e-10);
}

TEST(Frechet, Errors) {
  EXPECT_THROW(fit_gaussian(zeros({1, 3})), Error);
  GaussianFit a{{0}, {1}, 1}, b{{0, 0}, {1, 0, 0, 1}, 2};
  EXPECT_THROW(frechet_distance(a, b), Error);
}

}  // namespace loom::trainer
