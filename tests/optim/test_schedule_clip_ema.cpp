#include <cmath>

#include "optim/ema.h"
#include "optim/grad_clip.h"
#include "optim/schedule.h"
#include "testing.h"

namespace loom::optim {
using loom::testing::allclose;

TEST(Schedule, ConstantCosineWarmup) {
  ScheduleConfig c{.kind = "constant", .lr = 0.1, .total_steps = 10};
  EXPECT_DOUBLE_EQ(learning_rate_at(c, 7), 0.1);
  c.warmup_steps = 2;
  EXPECT_DOUBLE_EQ(learning_rate_at(c, 0), 0.05);
  EXPECT_DOUBLE_EQ(learning_rate_at(c, 2), 0.1);
  c.warmup_steps = 0;
  c.kind = "cosine";
  c.min_lr = 0.01;
  EXPECT_DOUBLE_EQ(learning_rate_at(c, 0), 0.1);
  EXPECT_NEAR(learning_rate_at(c, 5), 0.01 + 0.09 * 0.5, 1e-12);
  EXPECT_NEAR(learning_rate_at(c, 10), 0.01, 1e-12);
  EXPECT_NEAR(learning_rate_at(c, 99), 0.01, 1e-12);  // clamped past the end
  c.kind = "warmup_cosine";
  c.warmup_steps = 4;
  EXPECT_DOUBLE_EQ(learning_rate_at(c, 0), 0.025);
  EXPECT_DOUBLE_EQ(learning_rate_at(c, 3), 0.1);
  EXPECT_DOUBLE_EQ(learning_rate_at(c, 4), 0.1);
  EXPECT_NEAR(learning_rate_at(c, 7), 0.01 + 0.09 * 0.5, 1e-12);
  c.kind = "linear";
  EXPECT_THROW(learning_rate_at(c, 0), Error);
}

TEST(Schedule, WarmupStableDecay) {
  // 10 steps, 2 of warmup, the last 30% (3 steps) decaying linearly from 0.1 to 0.01.
  ScheduleConfig c{.kind = "wsd",
                   .lr = 0.1,
                   .min_lr = 0.01,
                   .warmup_steps = 2,
                   .total_steps = 10,
                   .decay_fraction = 0.3};
  EXPECT_DOUBLE_EQ(learning_rate_at(c, 0), 0.05);
  EXPECT_DOUBLE_EQ(learning_rate_at(c, 1), 0.1);
  for (int64_t s = 2; s <= 7; ++s) EXPECT_DOUBLE_EQ(learning_rate_at(c, s), 0.1) << s;
  EXPECT_NEAR(learning_rate_at(c, 8), 0.07, 1e-12);
  EXPECT_NEAR(learning_rate_at(c, 9), 0.04, 1e-12);
  EXPECT_NEAR(learning_rate_at(c, 10), 0.01, 1e-12);
  EXPECT_NEAR(learning_rate_at(c, 50), 0.01, 1e-12);  // clamped past the end
  c.decay_fraction = 0;                               // no decay: warmup then constant to the end
  EXPECT_DOUBLE_EQ(learning_rate_at(c, 9), 0.1);
  c.decay_fraction = 1;  // no warmup, decay over the whole run
  c.warmup_steps = 0;
  EXPECT_DOUBLE_EQ(learning_rate_at(c, 0), 0.1);
  EXPECT_NEAR(learning_rate_at(c, 5), 0.055, 1e-12);
  c.decay_fraction = 1.5;
  EXPECT_THROW(learning_rate_at(c, 0), Error);
}

TEST(GradClip, NormAndScaling) {
  Tensor a = zeros({2}).set_requires_grad(), b = zeros({1}).set_requires_grad();
  Tensor unused = zeros({3}).set_requires_grad();
  a.set_grad(from_vector<float>({3, 0}, {2}));
  b.set_grad(from_vector<float>({4}, {1}));
  EXPECT_NEAR(grad_norm({a, b, unused}), 5.0, 1e-12);
  EXPECT_NEAR(clip_grad_norm({a, b, unused}, 10.0), 5.0, 1e-12);
  EXPECT_TRUE(allclose(a.grad(), from_vector<float>({3, 0}, {2})));  // under the limit: unchanged
  EXPECT_NEAR(clip_grad_norm({a, b}, 1.0), 5.0, 1e-12);
  EXPECT_NEAR(grad_norm({a, b}), 1.0, 1e-5);
  EXPECT_TRUE(allclose(b.grad(), from_vector<float>({0.8f}, {1}), 1e-6));
  a.set_grad(from_vector<float>({NAN, 0}, {2}));
  EXPECT_TRUE(std::isnan(clip_grad_norm({a, b}, 1.0)));
}

TEST(Ema, TracksTheAverage) {
  Tensor p = from_vector<float>({1, 2}, {2}).set_requires_grad();
  Ema ema({p}, 0.5, /*warmup=*/false);
  EXPECT_TRUE(allclose(ema.averages()[0], p));
  copy_into(p, from_vector<float>({3, 6}, {2}));
  ema.update();
  EXPECT_TRUE(allclose(ema.averages()[0], from_vector<float>({2, 4}, {2})));
  EXPECT_THROW(Ema({p}, 1.5), Error);
}

TEST(Ema, WarmupFollowsTheParametersEarly) {
  Tensor p = zeros({1}).set_requires_grad();
  Ema ema({p}, 0.999);
  EXPECT_DOUBLE_EQ(ema.current_decay(), 0.1);  // (1 + 0) / (10 + 0)
  copy_into(p, ones({1}));
  ema.update();
  EXPECT_NEAR(ema.averages()[0].item(), 0.9, 1e-6);
  ema.set_num_updates(100000);
  EXPECT_DOUBLE_EQ(ema.current_decay(), 0.999);  // the warmup has ended
}

}  // namespace loom::optim
