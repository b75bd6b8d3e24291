// The owner plan of the sharded optimizer: units (whole parameters, or one matrix of a 3-D stack
// under the Newton–Schulz cost), their costs, and the deterministic greedy balance.
#include <algorithm>
#include <numeric>

#include "optim/muon.h"
#include "optim/shard_plan.h"
#include "testing.h"

namespace loom::optim {
namespace {

TEST(ShardPlan, NewtonSchulzFlopsUseTheWideOrientation) {
  // Per step 4 r^2 c + 2 r^3 with r = min, c = max.
  EXPECT_EQ(newton_schulz_flops(8, 32, 1), 4 * 8 * 8 * 32 + 2 * 8 * 8 * 8);
  EXPECT_EQ(newton_schulz_flops(32, 8, 5), newton_schulz_flops(8, 32, 5));
  EXPECT_EQ(newton_schulz_flops(768, 3072, 5),
            5 * (4LL * 768 * 768 * 3072 + 2LL * 768 * 768 * 768));
}

TEST(ShardPlan, UnitsAreWholeParametersOrSingleStackedMatrices) {
  const std::vector<Shape> shapes = {{24, 8}, {3, 16, 8}, {8, 1, 2, 2}, {8}, {}};
  const std::vector<ShardUnit> by_numel = shard_units(shapes, ShardCost::numel);
  ASSERT_EQ(by_numel.size(), 5u);
  for (size_t i = 0; i < shapes.size(); ++i) {
    EXPECT_TRUE(by_numel[i].whole);
    EXPECT_EQ(by_numel[i].param, i);
    EXPECT_EQ(by_numel[i].numel, numel_of(shapes[i]));
    EXPECT_EQ(by_numel[i].cost, numel_of(shapes[i]));
  }

  const std::vector<Shape> mats = {{24, 8}, {3, 16, 8}, {8, 1, 2, 2}};
  const std::vector<ShardUnit> by_flops = shard_units(mats, ShardCost::newton_schulz);
  ASSERT_EQ(by_flops.size(), 5u);  // the stack gives three
  EXPECT_EQ(by_flops[0].cost, newton_schulz_flops(24, 8, 5));
  for (int j = 0; j < 3; ++j) {
    const ShardUnit& u = by_flops[size_t(1 + j)];
    EXPECT_EQ(u.param, 1u);
    EXPECT_FALSE(u.whole);
    EXPECT_EQ(u.begin, j);
    EXPECT_EQ(u.length, 1);
    EXPECT_EQ(u.numel, 16 * 8);
    EXPECT_EQ(u.cost, newton_schulz_flops(16, 8, 5));
  }
  EXPECT_EQ(by_flops[4].cost, newton_schulz_flops(8, 4, 5));  // conv: [out, in * kh * kw]
  testing::expect_error([] { shard_units({{8}}, ShardCost::newton_schulz); },
                        {"[shard_plan] parameter #0", "needs matrices"});
}

TEST(ShardPlan, GreedyBalanceIsLongestFirstToTheLeastLoaded) {
  // 5 -> r0, 4 -> r1, 3 -> r1 (4 < 5), 3 -> r0 (5 < 7), 3 -> r1 (7 < 8).
  EXPECT_EQ(balance_owners({3, 5, 3, 4, 3}, 2), (std::vector<int>{1, 0, 0, 1, 1}));
  // Ties go to the lower unit index and the lower rank.
  EXPECT_EQ(balance_owners({1, 1, 1, 1}, 3), (std::vector<int>{0, 1, 2, 0}));
  EXPECT_EQ(balance_owners({7, 2}, 4), (std::vector<int>{0, 1}));
  EXPECT_TRUE(balance_owners({}, 2).empty());
  testing::expect_error([] { balance_owners({1}, 0); }, "ranks must be >= 1");
  testing::expect_error([] { balance_owners({1, -2}, 2); }, "unit 1 has negative cost");
}

TEST(ShardPlan, BusiestRankIsWithinOneUnitOfTheMean) {
  // A DiT-like list: per block qkv, proj, fc1, fc2, adaLN, an 8-expert stack; then the rest.
  std::vector<Shape> shapes;
  for (int b = 0; b < 6; ++b)
    for (const Shape& s : std::vector<Shape>{
             {1152, 384}, {384, 384}, {1536, 384}, {384, 1536}, {2304, 384}, {8, 768, 384}})
      shapes.push_back(s);
  for (int ranks : {1, 2, 3, 4, 8}) {
    const ShardPlan plan = make_shard_plan(shapes, ShardCost::newton_schulz, ranks);
    const int64_t total = std::accumulate(plan.rank_cost.begin(), plan.rank_cost.end(), int64_t(0));
    int64_t biggest = 0, numel = 0;
    for (const ShardUnit& u : plan.units) {
      biggest = std::max(biggest, u.cost);
      numel += u.numel;
    }
    const int64_t busiest = *std::max_element(plan.rank_cost.begin(), plan.rank_cost.end());
    EXPECT_LE(busiest, total / ranks + biggest) << ranks << " ranks";
    EXPECT_EQ(std::accumulate(plan.rank_numel.begin(), plan.rank_numel.end(), int64_t(0)), numel);
    // The same inputs give the same plan (every rank computes it alone).
    EXPECT_EQ(make_shard_plan(shapes, ShardCost::newton_schulz, ranks).owner, plan.owner);
  }
}

}  // namespace
}  // namespace loom::optim
