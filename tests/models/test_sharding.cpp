// Sharding in one process: the ShardSpec slicing arithmetic, the parallel layers' slices of the
// single-rank parameters (built as rank 1 of 2 over a group that refuses to communicate), and the
// parallel DiT over LocalCommunicators (groups of one), which must be the single-rank DiT: same
// names, parameters, output, gradients and norms; whole state dicts in and out.
#include <algorithm>

#include "core/ops/index.h"
#include "models/dit/dit.h"
#include "models/nn/parallel_linear.h"
#include "models/nn/sharded_state.h"
#include "optim/grad_clip.h"
#include "parallel/sp_collectives.h"
#include "small_dit.h"
#include "testing.h"

namespace loom::nn {
using testing::allclose;
using testing::small_dit;

namespace {

// Rank `rank` of a group of `size` that fails any transfer: construction and slicing only.
class NoTransportGroup final : public parallel::Communicator {
 public:
  NoTransportGroup(int rank, int size) : Communicator(rank, size, "tp", rank) {}
  const char* backend() const override { return "none"; }

 protected:
  bool supports(Device) const override { return true; }
  std::shared_ptr<Communicator> do_split(int, int, std::string) override { fail_now(); }
  void do_all_reduce(const Tensor&, parallel::ReduceOp) override { fail_now(); }
  parallel::Work do_all_reduce_async(const Tensor&, parallel::ReduceOp) override { fail_now(); }
  void do_all_gather(const Tensor&, const Tensor&) override { fail_now(); }
  void do_reduce_scatter(const Tensor&, const Tensor&, parallel::ReduceOp) override { fail_now(); }
  void do_all_to_all_v(const Tensor&, const Tensor&, std::span<const int64_t>,
                       std::span<const int64_t>) override {
    fail_now();
  }
  void do_broadcast(const Tensor&, int) override { fail_now(); }
  void do_send(const Tensor&, int, int) override { fail_now(); }
  void do_recv(const Tensor&, int, int) override { fail_now(); }
  void do_barrier() override { fail_now(); }

 private:
  [[noreturn]] void fail_now() const { fail("transfer", "this test group does not communicate"); }
};

Tensor iota(const Shape& shape) {
  return arange(0, double(numel_of(shape)), 1, DType::f64).reshape(shape);
}

ShardSpec spec(int64_t dim, int64_t blocks, int rank, int size) {
  return ShardSpec{.dim = dim, .blocks = blocks, .rank = rank, .size = size};
}

void randomize(Module& m, uint64_t seed) {
  Generator gen(seed, 9);
  for (const auto& [name, p] : m.named_parameters()) copy_into(p, randn(p.shape(), gen) * 0.2);
}

}  // namespace

TEST(ShardSpec, SlicesFusedBlocksAndJoinsThemBack) {
  // [6, 2] as 3 blocks of 2 rows over 2 ranks: rank r holds row r of every block.
  const Tensor w = iota({6, 2});
  const Tensor r1 = slice_shard(w, spec(0, 3, 1, 2));
  EXPECT_TRUE(allclose(r1, from_vector<double>({2, 3, 6, 7, 10, 11}, {3, 2}), 0, 0));
  const Tensor r0 = slice_shard(w, spec(0, 3, 0, 2));
  EXPECT_TRUE(allclose(join_shards({r0, r1}, spec(0, 3, 0, 2)), w, 0, 0));
  // A middle dim of a 3-D tensor, plain split over 4.
  const Tensor x = iota({2, 8, 3});
  std::vector<Tensor> pieces;
  for (int r = 0; r < 4; ++r) {
    pieces.push_back(slice_shard(x, spec(1, 1, r, 4)));
    EXPECT_TRUE(allclose(pieces.back(), x.narrow(1, 2 * r, 2), 0, 0));
    EXPECT_TRUE(pieces.back().is_contiguous());
  }
  EXPECT_TRUE(allclose(join_shards(pieces, spec(1, 1, 3, 4)), x, 0, 0));
  EXPECT_EQ(shard_shape({12, 5}, spec(0, 3, 0, 2)), (Shape{6, 5}));
  EXPECT_EQ(whole_shape({6, 5}, spec(0, 3, 0, 2)), (Shape{12, 5}));
}

TEST(ShardSpec, ErrorsNameShapesAndSizes) {
  testing::expect_error(
      [] {
        slice_shard(iota({6, 2}), spec(0, 3, 0, 4));
      },
      {"[sharding] dim 0 of [6, 2] has size 6", "3 block(s) of 4 pieces", "not divisible by 12"});
  testing::expect_error(
      [] {
        slice_shard(iota({6, 2}), spec(2, 1, 0, 2));
      },
      "[sharding] dim 2 is out of range for a tensor with 2 dims");
  testing::expect_error(
      [] {
        slice_shard(iota({6, 2}), spec(0, 1, 2, 2));
      },
      "0 <= rank < size, got blocks 1, rank 2, size 2");
  testing::expect_error(
      [] {
        join_shards({iota({2, 2})}, spec(0, 1, 0, 2));
      },
      "[sharding] join_shards needs 2 pieces (one per rank), got 1");
  testing::expect_error(
      [] {
        join_shards({iota({2, 2}), iota({3, 2})}, spec(0, 1, 0, 2));
      },
      "pieces differ in shape, [2, 2] and [3, 2]");
}

TEST(ParallelLinear, HoldsItsSliceOfTheSingleRankWeightAndDrawsTheSame) {
  const ModelParallel mp{.tp = std::make_shared<NoTransportGroup>(1, 2)};
  Generator a(5, 2), b(5, 2);
  const Linear single(LinearConfig{.in_features = 4, .out_features = 12}, a);
  const ColumnParallelLinear column(LinearConfig{.in_features = 4, .out_features = 12}, mp, b,
                                    ColumnParallelOptions{.fused_blocks = 3});
  // Rank 1 of 2 holds rows [2, 4) of each of the three blocks of 4 rows.
  const Tensor w = single.weight();
  EXPECT_TRUE(allclose(column.weight(),
                       cat({w.narrow(0, 2, 2), w.narrow(0, 6, 2), w.narrow(0, 10, 2)}, 0), 0, 0));
  EXPECT_EQ(column.bias().shape(), (Shape{6}));
  EXPECT_EQ(rand({1}, a).item(), rand({1}, b).item());  // the generators advanced alike
  const RowParallelLinear row(LinearConfig{.in_features = 12, .out_features = 4}, mp, b);
  const Linear single_row(LinearConfig{.in_features = 12, .out_features = 4}, a);
  EXPECT_TRUE(allclose(row.weight(), single_row.weight().narrow(1, 6, 6), 0, 0));
  EXPECT_EQ(row.bias().shape(), (Shape{4}));  // replicated
  ASSERT_EQ(row.shard_specs().size(), 1u);
  EXPECT_EQ(row.shard_specs()[0].first, "weight");
  EXPECT_EQ(row.shard_specs()[0].second.dim, 1);
  testing::expect_error(
      [&] {
        ColumnParallelLinear bad(LinearConfig{.in_features = 4, .out_features = 9}, mp, b,
                                 ColumnParallelOptions{.fused_blocks = 3});
      },
      {"[ColumnParallelLinear] out_features 9", "3 fused block(s) over tp 2",
       "not divisible by 6"});
  testing::expect_error(
      [&] { RowParallelLinear bad(LinearConfig{.in_features = 5, .out_features = 4}, mp, b); },
      "[RowParallelLinear] in_features 5 is not divisible by tp 2");
  testing::expect_error(
      [&] {
        column.forward(zeros({2, 3, 5}));
      },
      "[ColumnParallelLinear] expected x [B, T, 4], got [2, 3, 5]");
}

TEST(ParallelDiT, RankOneOfTwoHoldsSlicesOfTheSingleRankParameters) {
  const ModelParallel mp{.tp = std::make_shared<NoTransportGroup>(1, 2),
                         .sp = std::make_shared<parallel::LocalCommunicator>("sp")};
  for (bool moe : {false, true}) {
    Generator a(3, 1), b(3, 1);
    const dit::DiT single(small_dit(moe), a);
    const dit::DiT parallel(small_dit(moe), b, &mp);
    const auto specs = named_shard_specs(parallel);
    std::vector<std::string> names;
    for (const auto& [name, s] : specs) names.push_back(name);
    std::vector<std::string> expected;
    for (const char* block : {"blocks.0.", "blocks.1."}) {
      for (const char* p : {"attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight"})
        expected.push_back(std::string(block) + p);
      if (!moe)  // experts stay replicated
        for (const char* p : {"mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight"})
          expected.push_back(std::string(block) + p);
    }
    EXPECT_EQ(names, expected);
    const StateDict whole = single.state_dict();
    EXPECT_EQ(specs[0].second.blocks, 3);  // qkv by head: q, k and v each split
    // Every name is the single-rank one; sharded parameters are their slices, the others whole.
    for (const auto& [name, t] : parallel.state_dict()) {
      if (!whole.contains(name)) {
        ADD_FAILURE() << "unexpected name " << name;
        continue;
      }
      auto it =
          std::find_if(specs.begin(), specs.end(), [&](const auto& e) { return e.first == name; });
      const Tensor want =
          it == specs.end() ? whole.at(name) : slice_shard(whole.at(name), it->second);
      EXPECT_TRUE(allclose(t, want, 0, 0)) << name;
    }
    // A whole state dict loads by slicing; a wrong whole shape names both shapes.
    dit::DiT other(small_dit(moe), b, &mp);
    load_sharded_state_dict(other, whole);
    for (const auto& [name, t] : other.state_dict())
      EXPECT_TRUE(allclose(t, parallel.state_dict().at(name), 0, 0)) << name;
    StateDict wrong;
    for (const auto& [name, t] : whole)
      wrong.insert(name, name == "blocks.0.attn.proj.weight" ? zeros({32, 16}) : t);
    testing::expect_error([&] { load_sharded_state_dict(other, wrong); },
                          {"[load_sharded_state_dict] 'blocks.0.attn.proj.weight' must be the "
                           "whole tensor [32, 32] (this rank holds [32, 16]), got [32, 16]"});
  }
}

TEST(ParallelDiT, OverGroupsOfOneIsTheSingleRankModel) {
  for (bool moe : {false, true})
    for (bool sequence_parallel : {false, true}) {
      SCOPED_TRACE(std::string(moe ? "moe" : "dense") + (sequence_parallel ? " seqpar" : ""));
      const ModelParallel mp = ModelParallel::local(sequence_parallel);
      Generator a(4, 1), b(4, 1);
      dit::DiT single(small_dit(moe), a), parallel(small_dit(moe), b, &mp);
      EXPECT_TRUE(parallel.is_parallel());
      EXPECT_FALSE(single.is_parallel());
      randomize(single, 21);
      load_sharded_state_dict(parallel, gather_state_dict(single));
      single.to(DType::f64);
      parallel.to(DType::f64);
      Generator gen(8, 1);
      const Tensor x = randn({2, 4, 8, 8}, gen, DType::f64), t = rand({2}, gen, DType::f64) * 999,
                   y = randint(0, 10, {2}, gen), w = randn({2, 8, 8, 8}, gen, DType::f64);
      const dit::DiT::Output os = single.forward(x, t, y), op = parallel.forward(x, t, y);
      EXPECT_TRUE(allclose(op.out, os.out, 1e-12, 1e-12));
      sum(os.out * w + (moe ? os.aux_loss : zeros({}, DType::f64))).backward();
      sum(op.out * w + (moe ? op.aux_loss : zeros({}, DType::f64))).backward();
      const StateDict grads = gather_gradients(parallel);
      const auto params = single.named_parameters();
      EXPECT_EQ(grads.size(), params.size());
      for (const auto& [name, p] : params)
        EXPECT_TRUE(grads.contains(name) && allclose(grads.at(name), p.grad(), 1e-12, 1e-12))
            << name;
      EXPECT_NEAR(sharded_grad_norm(parallel), optim::grad_norm(single.parameters()), 1e-9);
      EXPECT_THROW(parallel.blocks()[0]->attn(), Error);
      EXPECT_THROW(single.blocks()[0]->parallel_attn(), Error);
    }
}

TEST(SequenceCollectives, OverAGroupOfOneAreIdentities) {
  const parallel::Group one = std::make_shared<parallel::LocalCommunicator>("sp");
  const Tensor x = iota({2, 3, 4});
  EXPECT_TRUE(allclose(parallel::all_to_all_along(x, one, 2, 1), x, 0, 0));
  EXPECT_TRUE(allclose(parallel::all_gather_along(x, one, 1), x, 0, 0));
  EXPECT_TRUE(allclose(parallel::reduce_scatter_along(x, one, -1), x, 0, 0));
  EXPECT_TRUE(testing::gradcheck(
      [&](const std::vector<Tensor>& in) {
        return parallel::all_to_all_along(parallel::all_gather_along(in[0], one, 0), one, 1, 2);
      },
      {x}));
}

}  // namespace loom::nn
