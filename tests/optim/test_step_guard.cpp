// NaN/Inf protection: all_finite over gradients and scalars, and the StepGuard's skip counting and
// its error after N non-finite steps in a row.
#include <cmath>
#include <limits>

#include "optim/step_guard.h"
#include "testing.h"

namespace loom::optim {
namespace {

std::vector<Tensor> params_with_grads() {
  std::vector<Tensor> ps = {zeros({3, 4}).set_requires_grad(), zeros({5}).set_requires_grad(),
                            zeros({2}, DType::f64).set_requires_grad(),
                            zeros({2}).set_requires_grad()};
  for (size_t i = 0; i < 3; ++i)
    ps[i].set_grad(testing::uniform(ps[i].shape(), -1e30, 1e30, i, ps[i].dtype()));
  return ps;  // the last one has no gradient
}

TEST(AllFinite, FindsNanAndInfInAnyGradientOrScalar) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<Tensor> ps = params_with_grads();
  EXPECT_TRUE(all_finite(ps));
  EXPECT_TRUE(all_finite(ps, {1.5, -3e300}));
  EXPECT_FALSE(all_finite(ps, {1.5, std::nan("")}));
  EXPECT_FALSE(all_finite(ps, {-INFINITY}));
  for (float bad : {nan, inf, -inf}) {
    std::vector<Tensor> qs = params_with_grads();
    qs[0].grad().data<float>()[7] = bad;
    EXPECT_FALSE(all_finite(qs)) << bad;
  }
  ps[2].grad().data<double>()[1] = std::numeric_limits<double>::infinity();
  EXPECT_FALSE(all_finite(ps));
  // A non-contiguous gradient is scanned through its view.
  Tensor p = zeros({4, 3}).set_requires_grad();
  Tensor g = zeros({3, 4});
  g.data<float>()[11] = nan;
  p.set_grad(g.t());
  EXPECT_FALSE(all_finite({p}));
  // With a group of one the answer is the local one.
  parallel::LocalCommunicator local;
  EXPECT_FALSE(all_finite({p}, {}, &local));
  EXPECT_TRUE(all_finite(params_with_grads(), {0.0}, &local));
}

TEST(StepGuard, SkipsCountsAndStopsAfterNInARow) {
  StepGuard guard(3);
  EXPECT_TRUE(guard.admit(true, 1));
  EXPECT_FALSE(guard.admit(false, 2));
  EXPECT_FALSE(guard.admit(false, 3));
  EXPECT_EQ(guard.consecutive_skips(), 2);
  EXPECT_TRUE(guard.admit(true, 4));  // a finite step ends the run
  EXPECT_EQ(guard.consecutive_skips(), 0);
  EXPECT_EQ(guard.total_skips(), 2);
  EXPECT_FALSE(guard.admit(false, 5));
  EXPECT_FALSE(guard.admit(false, 6));
  testing::expect_error(
      [&] { guard.admit(false, 7); },
      {"[step_guard] 3 steps in a row", "steps 5 to 7", "stopping at step 7", "5 skipped in all"});
}

TEST(StepGuard, OneAllowsNoSkipAndZeroIsRejected) {
  StepGuard strict(1);
  testing::expect_error([&] { strict.admit(false, 12); }, "stopping at step 12");
  testing::expect_error([] { StepGuard(0); }, "max_consecutive_skips must be >= 1, got 0");
}

}  // namespace
}  // namespace loom::optim
