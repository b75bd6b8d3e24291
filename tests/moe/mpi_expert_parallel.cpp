// The expert-parallel MoE layer against the single-rank one, under mpirun (2 and 4 ranks). Every
// rank builds both layers from the same generator and holds its own data-parallel chunk of
// tokens; the single-rank layer runs every chunk itself (its balance loss and capacity are per
// chunk, as on the ranks) and the objective is the mean of the chunks' losses. The expert-parallel
// layer, with expert gradients averaged over grid.edp() and the others over grid.dp() (two
// DpReducers from moe::split_expert_parameters, as the trainer does), must then give
//   - exactly the single-rank initial parameters (experts gathered to whole tensors),
//   - the same outputs, balance losses, counts, input gradients and every parameter gradient
//     (gathered), in f64, to 1e-11 (absolute and relative),
//   - the same losses over 5 SGD steps and the same final parameters, in f32, to 2e-5 relative,
//   - the same with a capacity factor (dropped counts against a count taken from the routing) and
//     with a forced routing under which only ep rank 0 receives tokens,
//   - whole-tensor checkpoints that load at ep = 1 and back,
// for ep = 2 (np 2: dp 2 x ep 2), ep = 4 (np 4: dp 4 x ep 4) and an ep group inside a larger dp
// group (np 4: dp 4 x ep 2, edp 2).
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "core/safetensors.h"
#include "models/moe/expert_parameters.h"
#include "models/moe/moe_layer.h"
#include "mpi_harness.h"
#include "models/nn/sharded_state.h"
#include "optim/grad_clip.h"
#include "optim/sgd.h"
#include "parallel/dp_reducer.h"
#include "parallel/grid.h"

namespace loom {
using testing::allclose;

namespace {

struct Layout {
  std::string name;
  parallel::GridDims dims;
};

std::vector<Layout> layouts() {
  const int world = testing::mpi_world()->size();
  if (world == 2) return {{"dp2 x ep2", {.dp = 2, .ep = 2}}};
  if (world == 4)
    return {{"dp4 x ep4", {.dp = 4, .ep = 4}}, {"dp4 x ep2 (edp 2)", {.dp = 4, .ep = 2}}};
  ADD_FAILURE() << "run with 2 or 4 ranks, got " << world;
  return {};
}

moe::MoEConfig small_moe() {
  return {.d_model = 8, .n_experts = 8, .top_k = 2, .d_ff = 12, .shared_hidden = 8};
}

// The single-rank layer and the expert-parallel one, built from the same generator state.
struct Pair {
  Layout layout;
  std::unique_ptr<parallel::ParallelGrid> grid;
  std::shared_ptr<moe::MoELayer> single, parallel;
  int dp_rank() const { return grid->coords().dp; }
  int dp_size() const { return grid->dims().dp; }
};

Pair build_pair(const Layout& layout, const moe::MoEConfig& cfg, DType dtype) {
  Pair p{.layout = layout,
         .grid = std::make_unique<parallel::ParallelGrid>(testing::mpi_world(), layout.dims)};
  Generator a(7, 1), b(7, 1);
  p.single = std::make_shared<moe::MoELayer>(cfg, a);
  p.parallel = std::make_shared<moe::MoELayer>(cfg, b, p.grid->ep());
  p.single->to(dtype);
  p.parallel->to(dtype);
  return p;
}

// Tokens [2, 3, D] of data-parallel chunk `chunk` at `step`, values in [lo, hi).
Tensor tokens(const moe::MoEConfig& cfg, int step, int chunk, DType dtype, double lo = -1,
              double hi = 1) {
  return testing::uniform({2, 3, cfg.d_model}, lo, hi, 1000 * uint64_t(step) + uint64_t(chunk),
                          dtype);
}

Tensor target_of(const Tensor& x, int step, int chunk) {
  return testing::uniform(x.shape(), -1, 1, 500000 + 1000 * uint64_t(step) + uint64_t(chunk),
                          x.dtype());
}

// mean((y - target)^2) plus the balance loss.
Tensor loss_of(const moe::MoELayer::Output& o, const Tensor& target) {
  return mean(square(o.y - target)) + o.aux_loss;
}

using Inputs = std::function<Tensor(int step, int chunk)>;

// Forward and backward of both layers on step 0's chunks; compares outputs, counts, balance
// losses, the input gradient and every parameter gradient (gathered).
void expect_same_forward_and_gradients(Pair& p, const Inputs& inputs, double tol) {
  const moe::ExpertParameterSplit split = moe::split_expert_parameters(*p.parallel);
  parallel::DpReducer dense(split.replicated, p.grid->dp());
  parallel::DpReducer experts(split.experts, p.grid->edp());
  const int r = p.dp_rank(), dp = p.dp_size();

  const Tensor x = inputs(0, r).set_requires_grad();
  const moe::MoELayer::Output out = p.parallel->forward(x);
  loss_of(out, target_of(x, 0, r)).backward();
  dense.finish();
  experts.finish();

  std::vector<Tensor> xs;
  Tensor single_loss;
  for (int c = 0; c < dp; ++c) {
    xs.push_back(inputs(0, c).set_requires_grad());
    const moe::MoELayer::Output o = p.single->forward(xs.back());
    const Tensor l = loss_of(o, target_of(xs.back(), 0, c)) / double(dp);
    single_loss = c == 0 ? l : single_loss + l;
    if (c != r) continue;
    EXPECT_TRUE(allclose(out.y, o.y, tol, tol));
    EXPECT_TRUE(allclose(out.aux_loss, o.aux_loss, tol, tol));
    EXPECT_EQ(out.expert_counts.to_vector<int64_t>(), o.expert_counts.to_vector<int64_t>());
    EXPECT_EQ(out.dropped.to_vector<int64_t>(), o.dropped.to_vector<int64_t>());
  }
  single_loss.backward();
  // The rank's own loss is not divided by dp: its input gradient is dp times the reference's.
  EXPECT_TRUE(allclose(x.grad(), xs[size_t(r)].grad() * double(dp), tol, tol));
  const nn::StateDict grads = nn::gather_gradients(*p.parallel);
  const auto single_params = p.single->named_parameters();
  EXPECT_EQ(grads.size(), single_params.size());
  for (const auto& [name, t] : single_params) {
    const Tensor* g = grads.find(name);
    EXPECT_TRUE(g != nullptr && allclose(*g, t.grad(), tol, tol)) << name;
  }
  EXPECT_NEAR(nn::sharded_grad_norm(*p.parallel), optim::grad_norm(p.single->parameters()), tol);
}

Inputs plain_inputs(const moe::MoEConfig& cfg, DType dtype) {
  return [cfg, dtype](int step, int chunk) { return tokens(cfg, step, chunk, dtype); };
}

// Router weights (whole [E, D]) under which positive tokens pick only experts [0, L): those of
// ep rank 0. Every other ep rank receives no token at all.
void route_all_to_ep_rank_zero(Pair& p) {
  const moe::MoEConfig& cfg = p.single->config();
  const int64_t local = cfg.n_experts / p.layout.dims.ep;
  const Tensor w = testing::uniform({cfg.n_experts, cfg.d_model}, 0.5, 1.5, 31,
                                    p.single->router().weight().dtype());
  NoGradGuard no_grad;
  copy_into(w.narrow(0, local, cfg.n_experts - local),
            full({cfg.n_experts - local, cfg.d_model}, -1.0, w.dtype()));
  copy_into(p.single->router().weight(), w);
  copy_into(p.parallel->router().weight(), w);
}

}  // namespace

TEST(ExpertParallel, StartsWithExactlyTheSingleRankParameters) {
  for (const Layout& layout : layouts()) {
    SCOPED_TRACE(layout.name);
    Pair p = build_pair(layout, small_moe(), DType::f32);
    const int64_t local = 8 / layout.dims.ep;
    EXPECT_EQ(p.parallel->experts().w_gate().shape(), (Shape{local, 12, 8}));
    EXPECT_EQ(p.parallel->experts().first_expert(), local * p.grid->ep()->rank());
    const nn::StateDict whole = nn::gather_state_dict(*p.parallel);
    const nn::StateDict single = p.single->state_dict();
    EXPECT_EQ(whole.size(), single.size());
    auto it = whole.begin();
    for (const auto& [name, t] : single) {
      if (it == whole.end()) break;
      EXPECT_EQ(it->first, name);
      EXPECT_TRUE(allclose(it->second, t, 0, 0)) << name;
      ++it;
    }
  }
}

TEST(ExpertParallel, ForwardAndGradientsMatchTheSingleRankLayer) {
  for (const Layout& layout : layouts()) {
    SCOPED_TRACE(layout.name);
    Pair p = build_pair(layout, small_moe(), DType::f64);
    expect_same_forward_and_gradients(p, plain_inputs(small_moe(), DType::f64), 1e-11);
  }
}

TEST(ExpertParallel, RanksThatReceiveNoTokenTakePartAndGetZeroGradients) {
  for (const Layout& layout : layouts()) {
    SCOPED_TRACE(layout.name);
    const moe::MoEConfig cfg = small_moe();
    Pair p = build_pair(layout, cfg, DType::f64);
    route_all_to_ep_rank_zero(p);
    const Inputs positive = [&](int step, int chunk) {
      return tokens(cfg, step, chunk, DType::f64, 0.1, 1);
    };
    expect_same_forward_and_gradients(p, positive, 1e-11);
    const int64_t local = cfg.n_experts / layout.dims.ep;
    const std::vector<int64_t> counts =
        p.parallel->forward(positive(0, p.dp_rank())).expert_counts.to_vector<int64_t>();
    for (int64_t e = local; e < cfg.n_experts; ++e) EXPECT_EQ(counts[size_t(e)], 0) << e;
    if (p.grid->ep()->rank() == 0) continue;
    for (const Tensor& w : {p.parallel->experts().w_gate(), p.parallel->experts().w_up(),
                            p.parallel->experts().w_down()}) {
      ASSERT_TRUE(w.grad().defined());
      EXPECT_TRUE(allclose(w.grad(), zeros_like(w), 0, 0));
    }
  }
}

TEST(ExpertParallel, CapacityDropsTheReferenceCountAndMatchesTheSingleRankLayer) {
  for (const Layout& layout : layouts()) {
    SCOPED_TRACE(layout.name);
    moe::MoEConfig cfg = small_moe();
    cfg.capacity_factor = 1.0;  // ceil(6 tokens * 2 / 8 experts) = 2 assignments per expert
    Pair p = build_pair(layout, cfg, DType::f64);
    expect_same_forward_and_gradients(p, plain_inputs(cfg, DType::f64), 1e-11);
    // The reference count: this chunk's routed assignments per expert beyond 2.
    const Tensor x = tokens(cfg, 0, p.dp_rank(), DType::f64);
    const Tensor ids =
        topk(p.single->router().forward(x.reshape({-1, cfg.d_model})), cfg.top_k, -1).indices;
    std::vector<int64_t> routed(size_t(cfg.n_experts), 0), want(size_t(cfg.n_experts), 0);
    for (int64_t e : ids.to_vector<int64_t>()) ++routed[size_t(e)];
    for (size_t e = 0; e < routed.size(); ++e) want[e] = std::max<int64_t>(routed[e] - 2, 0);
    const moe::MoELayer::Output out = p.parallel->forward(x);
    EXPECT_EQ(out.dropped.to_vector<int64_t>(), want);
    int64_t mine = 0;
    for (int64_t d : want) mine += d;
    const Tensor total = from_vector(std::vector<int64_t>{mine}, {1});
    testing::mpi_world()->all_reduce(total);
    EXPECT_GT(total.to_vector<int64_t>()[0], 0) << "the test needs dropped assignments";
  }
}

TEST(ExpertParallel, GlobalCountBalanceLossIsTheEpGroupsWholeBatchLoss) {
  for (const Layout& layout : layouts()) {
    SCOPED_TRACE(layout.name);
    moe::MoEConfig cfg = small_moe();
    cfg.aux_loss_global_counts = true;
    Pair p = build_pair(layout, cfg, DType::f64);
    const int ep = layout.dims.ep, first = p.dp_rank() - p.dp_rank() % ep;
    const Tensor aux = p.parallel->forward(tokens(cfg, 0, p.dp_rank(), DType::f64)).aux_loss;
    const Tensor mean_aux = aux.reshape({1}).clone();
    p.grid->ep()->all_reduce(mean_aux, parallel::ReduceOp::avg);
    std::vector<Tensor> group_tokens;
    for (int c = first; c < first + ep; ++c) group_tokens.push_back(tokens(cfg, 0, c, DType::f64));
    const Tensor whole = p.single->forward(cat(group_tokens, 0)).aux_loss;
    EXPECT_NEAR(mean_aux.item(), whole.item(), 1e-14);
    // Per-rank counts (the default) give this chunk's own loss instead.
    EXPECT_GT(std::abs(aux.item() -
                       p.single->forward(tokens(cfg, 0, p.dp_rank(), DType::f64)).aux_loss.item()),
              1e-9);
  }
}

TEST(ExpertParallel, TrainingLossesMatchTheSingleRankLayer) {
  for (const Layout& layout : layouts())
    for (double capacity : {0.0, 1.0}) {
      SCOPED_TRACE(layout.name + " capacity " + std::to_string(capacity));
      moe::MoEConfig cfg = small_moe();
      cfg.capacity_factor = capacity;
      Pair p = build_pair(layout, cfg, DType::f32);
      const optim::SgdConfig sgd{.lr = 0.05, .momentum = 0.9};
      optim::Sgd single_opt(p.single->parameters(), sgd),
          parallel_opt(p.parallel->parameters(), sgd);
      const moe::ExpertParameterSplit split = moe::split_expert_parameters(*p.parallel);
      parallel::DpReducer dense(split.replicated, p.grid->dp());
      parallel::DpReducer experts(split.experts, p.grid->edp());
      const int r = p.dp_rank(), dp = p.dp_size();
      for (int step = 0; step < 5; ++step) {
        Tensor single_loss;
        for (int c = 0; c < dp; ++c) {
          const Tensor x = tokens(cfg, step, c, DType::f32);
          const Tensor l = loss_of(p.single->forward(x), target_of(x, step, c)) / double(dp);
          single_loss = c == 0 ? l : single_loss + l;
        }
        const Tensor x = tokens(cfg, step, r, DType::f32);
        const Tensor loss = loss_of(p.parallel->forward(x), target_of(x, step, r));
        single_loss.backward();
        loss.backward();
        dense.finish();
        experts.finish();
        const Tensor mean_loss = loss.detach().reshape({1}).clone();
        p.grid->dp()->all_reduce(mean_loss, parallel::ReduceOp::avg);
        EXPECT_NEAR(mean_loss.item(), single_loss.item(), 2e-5 * std::abs(single_loss.item()))
            << "step " << step;
        testing::step_both(single_opt, parallel_opt);
      }
      testing::expect_whole_state(*p.parallel, p.single->state_dict(), 1e-5, 1e-4);
    }
}

TEST(ExpertParallel, WholeCheckpointsMoveBetweenEpSizes) {
  const std::string path =
      "/tmp/loom_mpi_ep_" + std::to_string(::getpid()) + ".safetensors";  // one file per rank
  for (const Layout& layout : layouts()) {
    SCOPED_TRACE(layout.name);
    const moe::MoEConfig cfg = small_moe();
    Pair p = build_pair(layout, cfg, DType::f32);
    const Tensor x = tokens(cfg, 0, p.dp_rank(), DType::f32);
    // Saved at ep, resumed by a fresh single-rank layer (ep = 1).
    const nn::StateDict saved = nn::gather_state_dict(*p.parallel);
    EXPECT_EQ(saved.at("experts.w_down").shape(), (Shape{8, 8, 12}));
    const nn::StateDict loaded = testing::through_file(saved, path);
    Generator other(99, 1);
    moe::MoELayer resumed(cfg, other);
    resumed.load_state_dict(loaded);
    EXPECT_TRUE(allclose(resumed.forward(x).y, p.parallel->forward(x).y, 1e-6, 1e-6));
    // And back: the single-rank state, changed, loads into the ep layer slice by slice.
    {
      NoGradGuard no_grad;
      for (const auto& [name, t] : resumed.named_parameters()) copy_into(t, t * 0.5 + 0.01);
    }
    const nn::StateDict changed = resumed.state_dict();
    const nn::StateDict back = testing::through_file(changed, path);
    nn::load_sharded_state_dict(*p.parallel, back);
    testing::expect_whole_state(*p.parallel, back, 0, 0);
    EXPECT_TRUE(allclose(p.parallel->forward(x).y, resumed.forward(x).y, 1e-6, 1e-6));
  }
  std::remove(path.c_str());
}

TEST(ExpertParallel, ExpertsThatDoNotSplitOverTheGroupAreRejected) {
  const int world = testing::mpi_world()->size();
  parallel::ParallelGrid grid(testing::mpi_world(), {.dp = world, .ep = world});
  moe::MoEConfig cfg = small_moe();
  cfg.n_experts = world + 1;
  Generator gen(1, 1);
  testing::expect_error([&] { moe::MoELayer m(cfg, gen, grid.ep()); },
                        "[MoELayer] n_experts (" + std::to_string(world + 1) +
                            ") must be divisible by the ep group size (" + std::to_string(world) +
                            ")");
}

}  // namespace loom

int main(int argc, char** argv) {
  return loom::testing::run_mpi_tests(argc, argv);
}
