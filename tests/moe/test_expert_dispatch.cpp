// Single-process checks of the expert-parallel bookkeeping: the capacity-limited sort by expert,
// the plan of an expert exchange (counts and the rank-major <-> expert-major permutations) against
// brute force, the exchange over a group of one rank, the capacity-limited layer against the
// dropless one minus its dropped assignments, and the expert / replicated parameter split. The
// multi-rank behaviour is tests/moe/mpi_expert_parallel.cpp.
#include <algorithm>
#include <cmath>
#include <vector>

#include "models/moe/expert_parameters.h"
#include "models/moe/moe_layer.h"
#include "parallel/ep_all_to_all.h"
#include "testing.h"

namespace loom {
using testing::allclose;
using testing::expect_error;

namespace {

// Assignments per expert for top-k ids [N, k].
std::vector<int64_t> routed_counts(const std::vector<int64_t>& ids, int64_t n_experts) {
  std::vector<int64_t> c(static_cast<size_t>(n_experts), 0);
  for (int64_t e : ids) ++c[size_t(e)];
  return c;
}

}  // namespace

TEST(ExpertDispatch, CapacityKeepsTheFirstAssignmentsInTokenOrder) {
  // 5 tokens, k = 2, 3 experts; expert 0 is chosen 5 times, expert 1 four times, expert 2 once.
  const std::vector<int64_t> ids = {0, 1, 1, 0, 0, 2, 0, 1, 1, 0};
  const Tensor idx = from_vector(ids, {5, 2});
  for (int64_t cap : {0, 1, 2, 3, 4, 5, 10}) {
    SCOPED_TRACE("capacity " + std::to_string(cap));
    const moe::ExpertDispatch d = moe::sort_by_expert(idx, 3, cap);
    // Brute force: walk assignments in order, keep while the expert has room.
    std::vector<int64_t> kept(3, 0), order;
    std::vector<std::vector<int64_t>> per_expert(3);
    for (int64_t p = 0; p < 10; ++p) {
      const int64_t e = ids[size_t(p)];
      if (cap > 0 && kept[size_t(e)] == cap) continue;
      ++kept[size_t(e)];
      per_expert[size_t(e)].push_back(p);
    }
    for (const auto& ps : per_expert) order.insert(order.end(), ps.begin(), ps.end());
    EXPECT_EQ(d.counts, kept);
    std::vector<int64_t> dropped(3), routed = routed_counts(ids, 3);
    for (size_t e = 0; e < 3; ++e) dropped[e] = routed[e] - kept[e];
    EXPECT_EQ(d.dropped, dropped);
    EXPECT_EQ(d.routed.to_vector<int64_t>(), routed);
    EXPECT_EQ(d.order.to_vector<int64_t>(), order);
    std::vector<int64_t> token;
    for (int64_t p : order) token.push_back(p / 2);
    EXPECT_EQ(d.token.to_vector<int64_t>(), token);
    // i32 ids sort the same.
    const moe::ExpertDispatch d32 = moe::sort_by_expert(idx.to(DType::i32), 3, cap);
    EXPECT_EQ(d32.order.to_vector<int64_t>(), order);
    EXPECT_EQ(d32.counts, kept);
  }
  expect_error([&] { moe::sort_by_expert(idx, 3, -1); }, "expert capacity must be >= 0");
}

TEST(ExpertDispatch, CapacityFormula) {
  EXPECT_EQ(moe::expert_capacity(0, 8, 2, 4), 0);     // dropless
  EXPECT_EQ(moe::expert_capacity(1.0, 8, 2, 4), 4);   // N k / E exactly
  EXPECT_EQ(moe::expert_capacity(1.25, 8, 2, 4), 5);  // 5.0
  EXPECT_EQ(moe::expert_capacity(1.1, 8, 2, 4), 5);   // ceil(4.4)
  EXPECT_EQ(moe::expert_capacity(0.01, 3, 1, 8), 1);  // never below one assignment
  expect_error([] { moe::expert_capacity(-0.5, 8, 2, 4); }, "capacity_factor must be finite");
  expect_error([] { moe::expert_capacity(NAN, 8, 2, 4); }, "capacity_factor must be finite");
}

TEST(ExpertExchange, PlanMatchesBruteForce) {
  // 3 ranks x 2 local experts. recv[j * 2 + l]: rows from rank j for local expert l.
  const std::vector<int64_t> send = {2, 0, 1, 3, 0, 4};
  const std::vector<int64_t> recv = {1, 2, 0, 0, 3, 1};
  const parallel::ExpertExchange x = parallel::plan_expert_exchange(send, recv, 3);
  EXPECT_EQ(x.ranks, 3);
  EXPECT_EQ(x.local_experts, 2);
  EXPECT_EQ(x.send_counts, (std::vector<int64_t>{2, 4, 4}));
  EXPECT_EQ(x.recv_counts, (std::vector<int64_t>{3, 0, 4}));
  EXPECT_EQ(x.expert_counts, (std::vector<int64_t>{4, 3}));
  // Rank-major rows: r0e0 = {0}, r0e1 = {1, 2}, r2e0 = {3, 4, 5}, r2e1 = {6}. Expert-major:
  // e0 from r0, r2, then e1 from r0, r2.
  const std::vector<int64_t> to_em = {0, 3, 4, 5, 1, 2, 6};
  EXPECT_EQ(x.to_expert_major.to_vector<int64_t>(), to_em);
  std::vector<int64_t> inverse(to_em.size());
  for (size_t pos = 0; pos < to_em.size(); ++pos) inverse[size_t(to_em[pos])] = int64_t(pos);
  EXPECT_EQ(x.to_rank_major.to_vector<int64_t>(), inverse);
}

TEST(ExpertExchange, OneLocalExpertNeedsNoPermutationAndZerosAreFine) {
  const std::vector<int64_t> send = {0, 5, 0, 2}, recv = {0, 0, 0, 0};
  const parallel::ExpertExchange x = parallel::plan_expert_exchange(send, recv, 4);
  EXPECT_EQ(x.local_experts, 1);
  EXPECT_FALSE(x.to_expert_major.defined());
  EXPECT_EQ(x.recv_counts, (std::vector<int64_t>{0, 0, 0, 0}));
  EXPECT_EQ(x.expert_counts, (std::vector<int64_t>{0}));
  // Several local experts, nothing received: empty permutations.
  const parallel::ExpertExchange y = parallel::plan_expert_exchange(send, recv, 2);
  EXPECT_EQ(y.to_expert_major.numel(), 0);
  EXPECT_EQ(y.expert_counts, (std::vector<int64_t>{0, 0}));
}

TEST(ExpertExchange, ErrorsNameTheSizes) {
  const std::vector<int64_t> six(6, 1), four(4, 1);
  expect_error([&] { parallel::plan_expert_exchange(six, six, 4); },
               "6 experts do not split evenly over 4 ranks");
  expect_error([&] { parallel::plan_expert_exchange(six, four, 3); },
               "expected 6 received counts (3 ranks x 2 local experts), got 4");
  const std::vector<int64_t> negative = {1, -1};
  expect_error([&] { parallel::plan_expert_exchange(negative, negative, 1); },
               "counts must be >= 0, got send -1");
  expect_error([&] { parallel::exchange_expert_counts(six, nullptr); }, "the ep group is null");
}

TEST(ExpertExchange, GroupOfOneIsTheIdentityForwardAndBackward) {
  const auto one = std::make_shared<parallel::LocalCommunicator>("ep");
  const std::vector<int64_t> counts = {2, 0, 3};
  const parallel::ExpertExchange plan = parallel::exchange_expert_counts(counts, one);
  EXPECT_EQ(plan.expert_counts, counts);
  EXPECT_EQ(plan.to_expert_major.to_vector<int64_t>(), (std::vector<int64_t>{0, 1, 2, 3, 4}));
  const Tensor x = testing::uniform({5, 3}).set_requires_grad();
  const Tensor y =
      parallel::expert_combine(parallel::expert_dispatch(x, one, plan) * 2.0, one, plan);
  EXPECT_TRUE(allclose(y, x * 2.0, 0, 0));
  sum(y).backward();
  EXPECT_TRUE(allclose(x.grad(), full({5, 3}, 2.0, DType::f64), 0, 0));
}

TEST(GroupedExperts, NoRowsAtAllStillGivesZeroGradients) {
  Generator gen(3);
  moe::GroupedExperts ex(4, 6, 3, gen);
  const Tensor x = empty({0, 4}).set_requires_grad();
  const Tensor y = ex.forward(x, {0, 0, 0});
  EXPECT_EQ(y.shape(), (Shape{0, 4}));
  ASSERT_TRUE(y.requires_grad());  // still connected to x and the weights
  (sum(y) + sum(x)).backward();
  for (const auto& [name, p] : ex.named_parameters()) {
    ASSERT_TRUE(p.grad().defined()) << name;
    EXPECT_TRUE(allclose(p.grad(), zeros_like(p), 0, 0)) << name;
  }
}

TEST(MoELayerCapacity, EqualsDroplessMinusTheDroppedAssignments) {
  moe::MoEConfig cfg{.d_model = 6, .n_experts = 4, .top_k = 2, .d_ff = 8, .shared_hidden = 4};
  Generator a(5), b(5);
  moe::MoELayer dropless(cfg, a);
  cfg.capacity_factor = 0.75;  // ceil(0.75 * 10 * 2 / 4) = 4 assignments per expert
  moe::MoELayer capped(cfg, b);
  dropless.to(DType::f64);
  capped.to(DType::f64);
  const Tensor h = testing::uniform({2, 5, 6}, -1, 1, 8);
  const moe::MoELayer::Output full_out = dropless.forward(h), out = capped.forward(h);
  // Reference: walk (token, slot) in order, count per expert, subtract what is over capacity.
  const Tensor x = h.reshape({10, 6});
  const Tensor probs = dropless.router().forward(x);
  const TopK top = topk(probs, 2, -1);
  const std::vector<int64_t> ids = top.indices.to_vector<int64_t>();
  const std::vector<double> w = top.values.to_vector<double>();
  std::vector<int64_t> seen(4, 0), dropped(4, 0);
  Tensor want = full_out.y.reshape({10, 6}).clone();
  const auto& ex = dropless.experts();
  for (int64_t p = 0; p < 20; ++p) {
    const int64_t e = ids[size_t(p)];
    if (++seen[size_t(e)] <= 4) continue;
    ++dropped[size_t(e)];
    const Tensor row = x.narrow(0, p / 2, 1);
    const Tensor expert =
        linear(silu(linear(row, ex.w_gate().select(0, e))) * linear(row, ex.w_up().select(0, e)),
               ex.w_down().select(0, e));
    copy_into(want.narrow(0, p / 2, 1), want.narrow(0, p / 2, 1) - expert * w[size_t(p)]);
  }
  int64_t total = 0;
  for (int64_t d : dropped) total += d;
  ASSERT_GT(total, 0) << "the test needs an expert over capacity";
  EXPECT_EQ(out.dropped.to_vector<int64_t>(), dropped);
  EXPECT_EQ(out.expert_counts.to_vector<int64_t>(), full_out.expert_counts.to_vector<int64_t>());
  EXPECT_TRUE(allclose(out.y.reshape({10, 6}), want, 1e-12, 1e-12));
  // The balance loss counts routed assignments, dropped ones included.
  EXPECT_TRUE(allclose(out.aux_loss, full_out.aux_loss, 0, 0));
  EXPECT_EQ(dropless.forward(h).dropped.to_vector<int64_t>(), std::vector<int64_t>(4, 0));
}

TEST(ExpertParameters, SplitsTheStacksFromEverythingElse) {
  Generator gen(1);
  moe::MoELayer m({.d_model = 4, .n_experts = 2, .top_k = 1, .shared_hidden = 4}, gen);
  const moe::ExpertParameterSplit split = moe::split_expert_parameters(m);
  std::vector<std::string> experts, replicated;
  for (const auto& [name, t] : split.experts) experts.push_back(name);
  for (const auto& [name, t] : split.replicated) replicated.push_back(name);
  EXPECT_EQ(experts,
            (std::vector<std::string>{"experts.w_gate", "experts.w_up", "experts.w_down"}));
  EXPECT_EQ(replicated,
            (std::vector<std::string>{"router.weight", "shared.gate_proj.weight",
                                      "shared.up_proj.weight", "shared.down_proj.weight"}));
  EXPECT_TRUE(split.experts[0].second.same(m.experts().w_gate()));
}

}  // namespace loom
