// Tensor and sequence parallel DiT against the single-rank DiT, under mpirun (2 and 4 ranks).
// First the parallel linears alone against nn::Linear over tp = the world. Then every rank also
// builds the single-rank model from the same generator and runs the whole batch
// itself; the parallel model must then give
//   - exactly the single-rank initial parameters (gathered to whole tensors),
//   - the same forward output and every parameter gradient (gathered), in f64, to 1e-10,
//   - the same losses over 5 SGD and 5 AdamW steps, in f32, to 2e-5 relative,
//   - whole-tensor checkpoints that load at tp = 1 and back,
// for each layout the world size allows: np 2: tp2, tp2 with Megatron sequence parallelism, sp2
// (Ulysses); np 4: dp2 x tp2 (with and without sequence parallelism), tp2 x sp2 (with and
// without), tp4 with sequence parallelism, sp4. Data-parallel layouts average gradients with the
// DpReducer over grid.dp(), as the trainer does. DiT-MoE (experts replicated) runs wherever dp = 1:
// its balance loss is a statistic of the whole batch, which dp splits.
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "core/safetensors.h"
#include "models/dit/dit.h"
#include "models/nn/parallel_linear.h"
#include "models/nn/sharded_state.h"
#include "mpi_harness.h"
#include "small_dit.h"
#include "optim/adamw.h"
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
  bool sequence_parallel;
};

std::vector<Layout> layouts() {
  const int world = testing::mpi_world()->size();
  if (world == 2)
    return {{"tp2", {.tp = 2}, false}, {"tp2+seqpar", {.tp = 2}, true}, {"sp2", {.sp = 2}, false}};
  if (world == 4)
    return {
        {"dp2 x tp2", {.dp = 2, .tp = 2}, false}, {"dp2 x tp2+seqpar", {.dp = 2, .tp = 2}, true},
        {"tp2 x sp2", {.tp = 2, .sp = 2}, false}, {"tp2 x sp2+seqpar", {.tp = 2, .sp = 2}, true},
        {"tp4+seqpar", {.tp = 4}, true},          {"sp4", {.sp = 4}, false}};
  ADD_FAILURE() << "run with 2 or 4 ranks, got " << world;
  return {};
}

constexpr int64_t kRowsPerReplica = 2;

// The single-rank model and the parallel one, built from the same generator state, plus what
// the layout says about this rank.
struct Pair {
  Layout layout;
  std::unique_ptr<parallel::ParallelGrid> grid;
  std::shared_ptr<dit::DiT> single, parallel;
  int dp_rank() const { return grid->coords().dp; }
  int dp_size() const { return grid->dims().dp; }
};

Pair build_pair(const Layout& layout, bool moe) {
  Pair p{.layout = layout,
         .grid = std::make_unique<parallel::ParallelGrid>(testing::mpi_world(), layout.dims)};
  const nn::ModelParallel mp = nn::ModelParallel::from_grid(*p.grid, layout.sequence_parallel);
  Generator a(7, 1), b(7, 1);
  p.single = std::make_shared<dit::DiT>(small_dit(moe), a);
  p.parallel = std::make_shared<dit::DiT>(small_dit(moe), b, &mp);
  return p;
}

// N(0, 0.2^2) values in every parameter of a single-rank module (so zero-initialized layers act).
void randomize(nn::Module& m, uint64_t seed) {
  Generator gen(seed, 9);
  for (const auto& [name, t] : m.named_parameters())
    copy_into(t, randn(t.shape(), gen, t.dtype()) * 0.2);
}

// Random values in the single-rank model, copied into the parallel one through a whole state
// dict.
void randomize_both(Pair& p, uint64_t seed) {
  randomize(*p.single, seed);
  nn::load_sharded_state_dict(*p.parallel, p.single->state_dict());
}

struct Batch {
  Tensor x, t, y, target;
};

// The global batch of `step` (kRowsPerReplica rows per data-parallel replica), the same on
// every rank.
Batch global_batch(const dit::DiTConfig& c, int dp, int step, DType dtype) {
  const int64_t B = kRowsPerReplica * dp, I = c.input_size;
  Generator gen(100 + uint64_t(step), 3);
  return {randn({B, c.in_channels, I, I}, gen, dtype), rand({B}, gen, dtype) * 999.0,
          randint(0, c.num_classes, {B}, gen), randn({B, 2 * c.in_channels, I, I}, gen, dtype)};
}

// This data-parallel replica's rows of a global-batch tensor.
Tensor replica_rows(const Tensor& t, int dp_rank) {
  return t.narrow(0, kRowsPerReplica * dp_rank, kRowsPerReplica).contiguous();
}

Batch rows_of(const Batch& b, int dp_rank) {
  return {replica_rows(b.x, dp_rank), replica_rows(b.t, dp_rank), replica_rows(b.y, dp_rank),
          replica_rows(b.target, dp_rank)};
}

// mean((out - target)^2) plus the MoE balance loss when there is one.
Tensor loss_of(const dit::DiT& model, const Batch& b) {
  const dit::DiT::Output o = model.forward(b.x, b.t, b.y);
  const Tensor l = mean(square(o.out - b.target));
  return o.aux_loss.defined() ? l + o.aux_loss : l;
}

// Runs forward and backward on both models (the parallel one on this replica's rows, its
// gradients averaged over dp) and compares output and gradients.
void expect_same_forward_and_gradients(Pair& p, DType dtype, double tol) {
  const dit::DiTConfig& cfg = p.single->config();
  const Batch whole = global_batch(cfg, p.dp_size(), 0, dtype);
  const Batch mine = rows_of(whole, p.dp_rank());
  parallel::DpReducer reducer(p.parallel->named_parameters(), p.grid->dp());
  const Tensor out = p.parallel->forward(mine.x, mine.t, mine.y).out;
  const Tensor single_out = p.single->forward(whole.x, whole.t, whole.y).out;
  EXPECT_TRUE(allclose(out, replica_rows(single_out, p.dp_rank()), tol, tol));
  loss_of(*p.parallel, mine).backward();
  reducer.finish();
  loss_of(*p.single, whole).backward();
  const nn::StateDict grads = nn::gather_gradients(*p.parallel);
  const auto single_params = p.single->named_parameters();
  EXPECT_EQ(grads.size(), single_params.size());
  for (const auto& [name, t] : single_params) {
    const Tensor* g = grads.find(name);
    EXPECT_TRUE(g != nullptr && allclose(*g, t.grad(), tol, tol)) << name;
  }
  EXPECT_NEAR(nn::sharded_grad_norm(*p.parallel), optim::grad_norm(p.single->parameters()), tol);
}

}  // namespace

TEST(TensorParallelLinear, ColumnThenRowAndGatheredColumnMatchNnLinear) {
  // Over tp = the world: fc2(fc1(x)) with fc1 column- and fc2 row-parallel, and a fused (q, k, v)
  // column-parallel layer with gather_output, against nn::Linear, forward and backward, with the
  // activations whole (copy_to / reduce_from) or token-split (sequence parallelism).
  const int world = testing::mpi_world()->size(), r = testing::mpi_world()->rank();
  parallel::ParallelGrid grid(testing::mpi_world(), 1, world, 1);
  const int64_t T = 2 * world, width = 6 * world;
  for (bool seqpar : {false, true}) {
    SCOPED_TRACE(seqpar ? "sequence parallel" : "replicated tokens");
    const nn::ModelParallel mp = nn::ModelParallel::from_grid(grid, seqpar);
    Generator a(2, 1), b(2, 1);
    nn::Linear fc1({.in_features = 5, .out_features = width}, a);
    nn::Linear fc2({.in_features = width, .out_features = 3}, a);
    nn::Linear qkv({.in_features = 5, .out_features = width}, a);
    nn::ColumnParallelLinear pfc1({.in_features = 5, .out_features = width}, mp, b);
    nn::RowParallelLinear pfc2({.in_features = width, .out_features = 3}, mp, b);
    nn::ColumnParallelLinear pqkv({.in_features = 5, .out_features = width}, mp, b,
                                  {.fused_blocks = 3, .gather_output = true});
    for (nn::Module* m : std::vector<nn::Module*>{&fc1, &fc2, &qkv, &pfc1, &pfc2, &pqkv})
      m->to(DType::f64);
    randomize(fc1, 1);
    randomize(fc2, 2);
    randomize(qkv, 3);
    nn::load_sharded_state_dict(pfc1, fc1.state_dict());
    nn::load_sharded_state_dict(pfc2, fc2.state_dict());
    nn::load_sharded_state_dict(pqkv, qkv.state_dict());
    const Tensor x = testing::uniform({2, T, 5}, -1, 1, 4);
    const Tensor w2 = testing::uniform({2, T, 3}, -1, 1, 5),
                 wq = testing::uniform({2, T, width}, -1, 1, 6);
    // This rank's tokens under sequence parallelism, else all of them.
    const auto mine = [&](const Tensor& t) {
      return seqpar ? t.narrow(1, 2 * r, 2).contiguous() : t;
    };
    Tensor xs = x.clone().set_requires_grad(), xp = mine(x).clone().set_requires_grad();
    const Tensor ys = fc2.forward(fc1.forward(xs)), qs = qkv.forward(xs);
    const Tensor yp = pfc2.forward(pfc1.forward(xp)), qp = pqkv.forward(xp);
    EXPECT_TRUE(allclose(yp, mine(ys), 1e-12, 1e-12));
    EXPECT_TRUE(allclose(qp, qs, 1e-12, 1e-12));
    (sum(ys * w2) + sum(qs * wq)).backward();
    (sum(yp * mine(w2)) + sum(qp * wq)).backward();
    EXPECT_TRUE(allclose(xp.grad(), mine(xs.grad()), 1e-12, 1e-12));
    for (const auto& [single, par] :
         {std::pair<nn::Module*, nn::Module*>{&fc1, &pfc1}, {&fc2, &pfc2}, {&qkv, &pqkv}}) {
      const nn::StateDict grads = nn::gather_gradients(*par);
      for (const auto& [name, t] : single->named_parameters())
        EXPECT_TRUE(grads.contains(name) && allclose(grads.at(name), t.grad(), 1e-12, 1e-12))
            << name;
    }
  }
}

TEST(TensorParallelDiT, StartsWithExactlyTheSingleRankParameters) {
  for (const Layout& layout : layouts())
    for (bool moe : {false, true}) {
      SCOPED_TRACE(layout.name + (moe ? " moe" : " dense"));
      Pair p = build_pair(layout, moe);
      const nn::StateDict whole = nn::gather_state_dict(*p.parallel);
      const nn::StateDict single = p.single->state_dict();
      EXPECT_EQ(whole.size(), single.size());
      auto it = whole.begin();
      for (const auto& [name, t] : single) {
        if (it == whole.end()) break;
        EXPECT_EQ(it->first, name);  // same names, same order
        EXPECT_TRUE(allclose(it->second, t, 0, 0)) << name;
        ++it;
      }
    }
}

TEST(TensorParallelDiT, ForwardAndGradientsMatchTheSingleRankModel) {
  for (const Layout& layout : layouts())
    for (bool moe : {false, true}) {
      if (moe && layout.dims.dp > 1) continue;
      SCOPED_TRACE(layout.name + (moe ? " moe" : " dense"));
      Pair p = build_pair(layout, moe);
      randomize_both(p, 11);
      p.single->to(DType::f64);
      p.parallel->to(DType::f64);
      expect_same_forward_and_gradients(p, DType::f64, 1e-10);
    }
}

TEST(TensorParallelDiT, TrainingLossesMatchTheSingleRankModel) {
  for (const Layout& layout : layouts())
    for (bool moe : {false, true})
      for (bool adamw : {false, true}) {
        if (moe && layout.dims.dp > 1) continue;
        SCOPED_TRACE(layout.name + (moe ? " moe" : " dense") + (adamw ? " adamw" : " sgd"));
        Pair p = build_pair(layout, moe);
        randomize_both(p, 12);
        const auto optimizer = [&](const nn::Module& m) -> std::unique_ptr<optim::Optimizer> {
          if (adamw)
            return std::make_unique<optim::AdamW>(m.parameters(), optim::AdamWConfig{.lr = 1e-3});
          return std::make_unique<optim::Sgd>(m.parameters(),
                                              optim::SgdConfig{.lr = 0.01, .momentum = 0.9});
        };
        auto single_opt = optimizer(*p.single), parallel_opt = optimizer(*p.parallel);
        parallel::DpReducer reducer(p.parallel->named_parameters(), p.grid->dp());
        for (int step = 0; step < 5; ++step) {
          const Batch whole = global_batch(p.single->config(), p.dp_size(), step, DType::f32);
          const Tensor single_loss = loss_of(*p.single, whole);
          const Tensor loss = loss_of(*p.parallel, rows_of(whole, p.dp_rank()));
          single_loss.backward();
          loss.backward();
          reducer.finish();
          const Tensor mean_loss = loss.detach().clone();
          p.grid->dp()->all_reduce(mean_loss, parallel::ReduceOp::avg);
          EXPECT_NEAR(mean_loss.item(), single_loss.item(), 2e-5 * std::abs(single_loss.item()))
              << "step " << step;
          testing::step_both(*single_opt, *parallel_opt);
        }
        if (adamw) continue;  // Adam's sign-like first steps amplify rounding in tiny gradients
        testing::expect_whole_state(*p.parallel, p.single->state_dict(), 1e-5, 1e-4);
      }
}

TEST(TensorParallelDiT, WholeCheckpointsMoveBetweenTpSizes) {
  const std::string path =
      "/tmp/loom_mpi_tp_" + std::to_string(::getpid()) + ".safetensors";  // one file per rank
  for (const Layout& layout : layouts()) {
    SCOPED_TRACE(layout.name);
    Pair p = build_pair(layout, false);
    randomize_both(p, 13);
    const Batch b = rows_of(global_batch(p.single->config(), p.dp_size(), 0, DType::f32), 0);
    // Saved by the parallel model, resumed by a fresh single-rank one.
    const nn::StateDict loaded = testing::through_file(nn::gather_state_dict(*p.parallel), path);
    Generator other(99, 1);
    dit::DiT resumed(small_dit(false), other);
    resumed.load_state_dict(loaded);
    const Tensor out = p.parallel->forward(b.x, b.t, b.y).out;
    EXPECT_TRUE(allclose(resumed.forward(b.x, b.t, b.y).out, out, 1e-5, 1e-5));
    // And back: the single-rank state, changed, loads into the parallel model slice by slice.
    {
      NoGradGuard no_grad;
      for (const auto& [name, t] : resumed.named_parameters()) copy_into(t, t * 0.5 + 0.01);
    }
    const nn::StateDict changed = resumed.state_dict();
    const nn::StateDict back = testing::through_file(changed, path);
    nn::load_sharded_state_dict(*p.parallel, back);
    testing::expect_whole_state(*p.parallel, back, 0, 0);
    EXPECT_TRUE(allclose(p.parallel->forward(b.x, b.t, b.y).out, resumed.forward(b.x, b.t, b.y).out,
                         1e-5, 1e-5));
  }
  std::remove(path.c_str());
}

TEST(TensorParallelDiT, LayoutErrorsNameTheSizes) {
  const int world = testing::mpi_world()->size();
  parallel::ParallelGrid tp_all(testing::mpi_world(), 1, world, 1);
  const nn::ModelParallel tp = nn::ModelParallel::from_grid(tp_all, true);
  Generator gen(1, 1);
  dit::DiTConfig heads = small_dit(false);
  heads.num_heads = 2 * world - 1;
  heads.hidden_size = 4 * heads.num_heads;
  testing::expect_error([&] { dit::DiT m(heads, gen, &tp); },
                        {"[ParallelAttention] num_heads " + std::to_string(heads.num_heads),
                         "tp " + std::to_string(world) + " x sp 1"});
  dit::DiTConfig tokens = small_dit(false);
  tokens.input_size = 6;  // 9 tokens
  testing::expect_error(
      [&] { dit::DiT m(tokens, gen, &tp); },
      {"[ModelParallel] 9 tokens cannot be split evenly over " + std::to_string(world) + " ranks",
       "sequence parallel"});
  parallel::ParallelGrid sp_all(testing::mpi_world(), 1, 1, world);
  const nn::ModelParallel sp = nn::ModelParallel::from_grid(sp_all, false);
  testing::expect_error([&] { dit::DiT m(tokens, gen, &sp); },
                        {"9 tokens cannot be split evenly", "(sp " + std::to_string(world) + ")"});
}

}  // namespace loom

int main(int argc, char** argv) {
  return loom::testing::run_mpi_tests(argc, argv);
}
