#include <set>

#include "kernels/philox.h"

#include "testing.h"

namespace loom {

TEST(Rng, SameSeedStreamOffsetGiveSameNumbers) {
  Generator a(7, 3), b(7, 3);
  EXPECT_EQ(rand({10}, a).to_vector<float>(), rand({10}, b).to_vector<float>());
  EXPECT_EQ(a.offset(), 3u);  // ceil(10 / 4) counters consumed
  Generator c(7, 4);
  EXPECT_NE(rand({10}, c).to_vector<float>(), rand({10}, b).to_vector<float>());
}

TEST(Rng, RestoringTheOffsetReplaysADraw) {
  Generator g(42);
  (void)randn({5}, g);
  const uint64_t off = g.offset();
  const auto first = randn({9}, g).to_vector<float>();
  g.set_offset(off);
  EXPECT_EQ(randn({9}, g).to_vector<float>(), first);
}

TEST(Rng, ElementDependsOnlyOnItsIndex) {
  // Drawing 8 values in one call equals the first 8 of a 12-value call from the same offset.
  Generator a(5), b(5);
  const auto small = rand({8}, a).to_vector<float>();
  const auto large = rand({12}, b).to_vector<float>();
  EXPECT_EQ(small, std::vector<float>(large.begin(), large.begin() + 8));
}

TEST(Rng, Moments) {
  Generator g(1);
  const Tensor u = rand({200000}, g, DType::f64);
  EXPECT_NEAR(mean(u).item(), 0.5, 0.005);
  EXPECT_NEAR(var(u).item(), 1.0 / 12, 0.002);
  EXPECT_GE(amin(u).item(), 0.0);
  EXPECT_LT(amax(u).item(), 1.0);
  const Tensor n = randn({200000}, g, DType::f64);
  EXPECT_NEAR(mean(n).item(), 0.0, 0.01);
  EXPECT_NEAR(var(n).item(), 1.0, 0.01);
  const Tensor b = bernoulli({100000}, 0.3, g);
  EXPECT_NEAR(mean(b.to(DType::f64)).item(), 0.3, 0.01);
}

TEST(Rng, RandintAndRandperm) {
  Generator g(9);
  const auto v = randint(-3, 4, {5000}, g).to_vector<int64_t>();
  std::set<int64_t> seen(v.begin(), v.end());
  EXPECT_EQ(seen, (std::set<int64_t>{-3, -2, -1, 0, 1, 2, 3}));
  const auto p = randperm(1000, g).to_vector<int64_t>();
  std::set<int64_t> ps(p.begin(), p.end());
  EXPECT_EQ(ps.size(), 1000u);
  EXPECT_EQ(*ps.begin(), 0);
  EXPECT_EQ(*ps.rbegin(), 999);
  EXPECT_NE(p[0] * 1000 + p[1], 1);  // not the identity
  EXPECT_THROW(randint(3, 3, {1}, g), Error);
  EXPECT_THROW(bernoulli({1}, 1.5, g), Error);
}

TEST(Rng, KnownAnswer) {
  // Philox4x32-10 with key 0 and counter 0: the published known-answer vector.
  const auto w = kernels::philox4x32(0, 0, 0);
  EXPECT_EQ(w[0], 0x6627e8d5u);
  EXPECT_EQ(w[1], 0xe169c58du);
  EXPECT_EQ(w[2], 0xbc57ac4cu);
  EXPECT_EQ(w[3], 0x9b00dbd8u);
}

}  // namespace loom
