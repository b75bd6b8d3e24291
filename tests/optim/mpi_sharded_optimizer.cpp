// The owner-sharded optimizer under mpirun (2 and 4 ranks): distributed Muon, ZeRO-1 AdamW and a
// sharded Muon + AdamW MultiOptimizer each equal their single-rank optimizer bit for bit over five
// steps, on every rank; state gathered at one group size loads at another (sub-groups made by
// split, and the single-rank optimizer) and continues identically. Every rank computes the
// single-rank reference itself. Tests avoid early returns between collectives so that a failure
// on one rank cannot leave the others waiting.
#include <cmath>
#include <cstdio>
#include <limits>
#include <numeric>

#include "optim/sharded.h"
#include "optim/step_guard.h"
#include "mpi_harness.h"
#include "parallel/communicator.h"
#include "sharded_testing.h"

namespace loom::optim {
namespace {

using namespace sharded_testing;
using parallel::Communicator;
using parallel::ReduceOp;

// The world of the harness (mpi_harness.h), under the name the tests below use.
std::shared_ptr<Communicator>& g_world = loom::testing::mpi_world();

// Every rank's copy of every parameter is bitwise the same as rank 0's.
::testing::AssertionResult identical_on_every_rank(const std::vector<Tensor>& ps) {
  std::vector<Tensor> flat;
  for (const Tensor& p : ps) flat.push_back(p.reshape({-1}));
  const Tensor mine = cat(flat, 0);
  Tensor all = empty({g_world->size() * mine.numel()});
  g_world->all_gather(mine, all);
  for (int r = 0; r < g_world->size(); ++r)
    if (!bitwise_equal(all.narrow(0, r * mine.numel(), mine.numel()), mine))
      return ::testing::AssertionFailure() << "rank " << r << " has other parameter values";
  return ::testing::AssertionSuccess();
}

int64_t sum_over_ranks(int64_t v) {
  Tensor t = full({1}, double(v), DType::i64);
  g_world->all_reduce(t, ReduceOp::sum);
  return int64_t(t.item());
}

// Runs `steps` steps of a sharded and a single-rank optimizer built by the two factories over
// copies of the same parameters and expects equal parameters after every step.
template <class MakeSharded, class MakeSingle>
void expect_equal_to_single_rank(const std::vector<Tensor>& init, MakeSharded make_sharded,
                                 MakeSingle make_single, const std::string& skip = "") {
  const std::vector<Tensor> ps = copy_params(init), ref = copy_params(init);
  std::unique_ptr<Optimizer> sharded = make_sharded(ps), single = make_single(ref);
  for (int s = 0; s < 5; ++s) {
    step_with(*sharded, s, s == 2 ? skip : "");
    step_with(*single, s, s == 2 ? skip : "");
    EXPECT_TRUE(same_params(ps, ref)) << "step " << s + 1;
  }
  EXPECT_FALSE(same_params(ps, init)) << "nothing moved: the test checks nothing";
  EXPECT_TRUE(identical_on_every_rank(ps));
  // Each rank keeps only its shard; together they hold exactly the single-rank state.
  EXPECT_EQ(sum_over_ranks(sharded->state_bytes()), single->state_bytes());
  EXPECT_LT(sharded->state_bytes(), single->state_bytes());
}

TEST(Sharded, DistributedMuonEqualsSingleRankMuon) {
  const std::vector<Tensor> init = matrices(model_params());
  expect_equal_to_single_rank(
      init, [](const std::vector<Tensor>& ps) { return distributed_muon(ps, kMuon, g_world); },
      [](const std::vector<Tensor>& ps) { return std::make_unique<Muon>(ps, kMuon); },
      "blocks.0.moe.experts.w_up");
}

TEST(Sharded, Zero1AdamWEqualsSingleRankAdamW) {
  expect_equal_to_single_rank(
      model_params(),
      [](const std::vector<Tensor>& ps) { return zero1_adamw(ps, kAdamW, g_world); },
      [](const std::vector<Tensor>& ps) { return std::make_unique<AdamW>(ps, kAdamW); },
      "blocks.0.attn.qkv.bias");
}

TEST(Sharded, MuonAndAdamWGroupsEqualTheSingleRankMultiOptimizer) {
  expect_equal_to_single_rank(
      model_params(),
      [](const std::vector<Tensor>& ps) {
        return std::make_unique<MultiOptimizer>(ps, muon_adamw_groups(), 1e-3, g_world);
      },
      [](const std::vector<Tensor>& ps) {
        return std::make_unique<MultiOptimizer>(ps, muon_adamw_groups(), 1e-3);
      });
}

TEST(Sharded, ExpertMatricesAreSpreadOverTheRanks) {
  // Four expert matrices only: with the newton_schulz cost each is a unit of its own.
  const std::vector<Tensor> ps = {model_params()[7]};
  auto opt = distributed_muon(ps, kMuon, g_world);
  const ShardPlan& plan = opt->plan();
  ASSERT_EQ(plan.units.size(), 4u);
  for (int r = 0; r < g_world->size(); ++r)
    EXPECT_EQ(plan.rank_numel[size_t(r)], 4 * 16 * 8 / g_world->size()) << "rank " << r;
}

TEST(Sharded, RanksThatOwnNothingStillTakePart) {
  // Two parameters over up to four ranks: ranks 2 and 3 own nothing at np=4.
  const std::vector<Tensor> init = {model_params()[4], model_params()[2]};
  expect_equal_to_single_rank(
      init, [](const std::vector<Tensor>& ps) { return distributed_muon(ps, kMuon, g_world); },
      [](const std::vector<Tensor>& ps) { return std::make_unique<Muon>(ps, kMuon); });
}

// State gathered from a sharded optimizer over `from` loads into one over `to` (or the
// single-rank optimizer, to == nullptr), and both continue identically.
void expect_state_moves(const std::shared_ptr<Communicator>& from,
                        const std::shared_ptr<Communicator>& to) {
  auto make = [](const std::vector<Tensor>& ps, const std::shared_ptr<Communicator>& dp) {
    return std::make_unique<MultiOptimizer>(ps, muon_adamw_groups(), 1e-3, dp);
  };
  const std::vector<Tensor> init = model_params();
  const std::vector<Tensor> ps = copy_params(init), ref = copy_params(init);
  auto opt = make(ps, from);
  auto single = make(ref, nullptr);
  for (int s = 0; s < 3; ++s) {
    step_with(*opt, s);
    step_with(*single, s);
  }
  const StateDict saved = state_dict(*opt, names_of(ps));
  EXPECT_TRUE(same_state(saved, state_dict(*single, names_of(ref))));

  const std::vector<Tensor> resumed = copy_params(ps);
  auto next = make(resumed, to);
  load_state_dict(*next, names_of(resumed), saved);
  next->set_lr(opt->lr());
  for (int s = 3; s < 5; ++s) {
    step_with(*opt, s);
    step_with(*next, s);
    EXPECT_TRUE(same_params(resumed, ps)) << "step " << s + 1;
  }
  EXPECT_TRUE(same_state(state_dict(*next, names_of(resumed)), state_dict(*opt, names_of(ps))));
}

TEST(Sharded, StateSavedAtThisSizeLoadsInHalfTheRanks) {
  // np=4: groups {0, 2} and {1, 3} of two; np=2: groups of one.
  const int r = g_world->rank();
  const auto half = g_world->split(r % 2, r, "half");
  expect_state_moves(g_world, half);
}

TEST(Sharded, StateSavedAtThisSizeLoadsInTheSingleRankOptimizer) {
  expect_state_moves(g_world, nullptr);
}

TEST(Sharded, StateSavedInHalfTheRanksLoadsAtThisSize) {
  const int r = g_world->rank();
  const auto half = g_world->split(r % 2, r, "half");
  expect_state_moves(half, g_world);
}

TEST(Sharded, DifferentParametersOnSomeRankThrowEverywhere) {
  std::vector<Tensor> ps = matrices(model_params());
  if (g_world->rank() == 1) ps.pop_back();
  testing::expect_error([&] { distributed_muon(ps, kMuon, g_world); },
                        {"[sharded]", "ranks were given different parameters"});
}

TEST(StepGuard, ANonFiniteGradientOnOneRankStopsEveryRank) {
  const std::vector<Tensor> ps = copy_params(model_params());
  for (const Tensor& p : ps) p.set_grad(grad_for(p, 0));
  EXPECT_TRUE(all_finite(ps, {1.0}, g_world.get()));
  if (g_world->rank() == 1) ps[3].grad().data<float>()[5] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_FALSE(all_finite(ps, {1.0}, g_world.get()));
  // A loss that overflowed on the last rank only.
  const double loss = g_world->rank() == g_world->size() - 1 ? INFINITY : 1.0;
  EXPECT_FALSE(all_finite(copy_params(model_params()), {loss}, g_world.get()));
}

}  // namespace
}  // namespace loom::optim

int main(int argc, char** argv) {
  return loom::testing::run_mpi_tests(argc, argv);
}
