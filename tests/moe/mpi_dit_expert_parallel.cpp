// DiT-MoE with expert parallelism (through nn::ModelParallel::ep) against the single-rank DiT-MoE,
// under mpirun (2 and 4 ranks): every rank builds both models from the same generator, holds its
// own data-parallel chunk, and the single-rank model runs every chunk (the objective is the mean
// of the chunks' losses, each with its own balance loss). Expert gradients are averaged over
// grid.edp(), the others over grid.dp(). Checked: the initial parameters (gathered), forward and
// every gradient in f64 to 1e-10, and the losses of 5 SGD steps in f32 to 2e-5 relative, for
// np 2: dp2 x ep2; np 4: dp4 x ep4, dp4 x ep2, dp2 x tp2 x ep2.
#include <cmath>
#include <string>
#include <vector>

#include "models/dit/dit.h"
#include "models/moe/expert_parameters.h"
#include "mpi_harness.h"
#include "small_dit.h"
#include "models/nn/sharded_state.h"
#include "optim/grad_clip.h"
#include "optim/sgd.h"
#include "parallel/dp_reducer.h"
#include "parallel/grid.h"

namespace loom {
using testing::allclose;
using testing::small_dit;

namespace {

struct Layout {
  std::string name;
  parallel::GridDims dims;
};

std::vector<Layout> layouts() {
  const int world = testing::mpi_world()->size();
  if (world == 2) return {{"dp2 x ep2", {.dp = 2, .ep = 2}}};
  if (world == 4)
    return {{"dp4 x ep4", {.dp = 4, .ep = 4}},
            {"dp4 x ep2", {.dp = 4, .ep = 2}},
            {"dp2 x tp2 x ep2", {.dp = 2, .tp = 2, .ep = 2}}};
  ADD_FAILURE() << "run with 2 or 4 ranks, got " << world;
  return {};
}

struct Pair {
  std::unique_ptr<parallel::ParallelGrid> grid;
  std::shared_ptr<dit::DiT> single, parallel;
  int dp_rank() const { return grid->coords().dp; }
  int dp_size() const { return grid->dims().dp; }
};

void randomize(nn::Module& m, uint64_t seed) {
  Generator gen(seed, 9);
  for (const auto& [name, t] : m.named_parameters())
    copy_into(t, randn(t.shape(), gen, t.dtype()) * 0.2);
}

Pair build_pair(const Layout& layout) {
  Pair p{.grid = std::make_unique<parallel::ParallelGrid>(testing::mpi_world(), layout.dims)};
  const nn::ModelParallel mp = nn::ModelParallel::from_grid(*p.grid, false);
  Generator a(7, 1), b(7, 1);
  p.single = std::make_shared<dit::DiT>(small_dit(true), a);
  p.parallel = std::make_shared<dit::DiT>(small_dit(true), b, &mp);
  randomize(*p.single, 11);
  nn::load_sharded_state_dict(*p.parallel, p.single->state_dict());
  return p;
}

struct Batch {
  Tensor x, t, y, target;
};

// Data-parallel chunk `chunk` of `step` (2 images).
Batch chunk_of(const dit::DiTConfig& c, int step, int chunk, DType dtype) {
  Generator gen(100 + uint64_t(step), 3 + uint64_t(chunk));
  return {randn({2, c.in_channels, c.input_size, c.input_size}, gen, dtype),
          rand({2}, gen, dtype) * 999.0, randint(0, c.num_classes, {2}, gen),
          randn({2, 2 * c.in_channels, c.input_size, c.input_size}, gen, dtype)};
}

Tensor loss_of(const dit::DiT& model, const Batch& b) {
  const dit::DiT::Output o = model.forward(b.x, b.t, b.y);
  return mean(square(o.out - b.target)) + o.aux_loss;
}

// The single-rank model's mean loss over every chunk of `step`.
Tensor single_loss(const Pair& p, int step, DType dtype) {
  Tensor total;
  for (int c = 0; c < p.dp_size(); ++c) {
    const Tensor l =
        loss_of(*p.single, chunk_of(p.single->config(), step, c, dtype)) / double(p.dp_size());
    total = c == 0 ? l : total + l;
  }
  return total;
}

}  // namespace

TEST(DiTExpertParallel, ForwardAndGradientsMatchTheSingleRankModel) {
  for (const Layout& layout : layouts()) {
    SCOPED_TRACE(layout.name);
    Pair p = build_pair(layout);
    p.single->to(DType::f64);
    p.parallel->to(DType::f64);
    const moe::ExpertParameterSplit split = moe::split_expert_parameters(*p.parallel);
    parallel::DpReducer dense(split.replicated, p.grid->dp());
    parallel::DpReducer experts(split.experts, p.grid->edp());
    const Batch mine = chunk_of(p.single->config(), 0, p.dp_rank(), DType::f64);
    EXPECT_TRUE(allclose(p.parallel->forward(mine.x, mine.t, mine.y).out,
                         p.single->forward(mine.x, mine.t, mine.y).out, 1e-10, 1e-10));
    loss_of(*p.parallel, mine).backward();
    dense.finish();
    experts.finish();
    single_loss(p, 0, DType::f64).backward();
    const nn::StateDict grads = nn::gather_gradients(*p.parallel);
    for (const auto& [name, t] : p.single->named_parameters()) {
      const Tensor* g = grads.find(name);
      EXPECT_TRUE(g != nullptr && allclose(*g, t.grad(), 1e-10, 1e-10)) << name;
    }
    EXPECT_NEAR(nn::sharded_grad_norm(*p.parallel), optim::grad_norm(p.single->parameters()),
                1e-10);
  }
}

TEST(DiTExpertParallel, TrainingLossesMatchTheSingleRankModel) {
  for (const Layout& layout : layouts()) {
    SCOPED_TRACE(layout.name);
    Pair p = build_pair(layout);
    const optim::SgdConfig sgd{.lr = 0.01, .momentum = 0.9};
    optim::Sgd single_opt(p.single->parameters(), sgd), parallel_opt(p.parallel->parameters(), sgd);
    const moe::ExpertParameterSplit split = moe::split_expert_parameters(*p.parallel);
    parallel::DpReducer dense(split.replicated, p.grid->dp());
    parallel::DpReducer experts(split.experts, p.grid->edp());
    for (int step = 0; step < 5; ++step) {
      const Tensor reference = single_loss(p, step, DType::f32);
      const Tensor loss =
          loss_of(*p.parallel, chunk_of(p.single->config(), step, p.dp_rank(), DType::f32));
      reference.backward();
      loss.backward();
      dense.finish();
      experts.finish();
      const Tensor mean_loss = loss.detach().reshape({1}).clone();
      p.grid->dp()->all_reduce(mean_loss, parallel::ReduceOp::avg);
      EXPECT_NEAR(mean_loss.item(), reference.item(), 2e-5 * std::abs(reference.item()))
          << "step " << step;
      testing::step_both(single_opt, parallel_opt);
    }
    testing::expect_whole_state(*p.parallel, p.single->state_dict(), 1e-5, 1e-4);
  }
}

}  // namespace loom

int main(int argc, char** argv) {
  return loom::testing::run_mpi_tests(argc, argv);
}
