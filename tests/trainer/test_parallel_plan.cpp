// The recipe's parallel layout checked against the launch and the model
// (trainer/parallel_plan.h): each inconsistency names its key.
#include "testing.h"
#include "trainer/parallel_plan.h"

namespace loom::trainer {

namespace {
Recipe recipe(const std::vector<std::string>& overrides) {
  return Recipe::from_string("[train]\nbatch_size = 8\n", "p.toml", overrides);
}
const ModelSplits kDit{.num_heads = 4, .num_experts = 4, .mlp_hidden = 0, .num_tokens = 16};
const ModelSplits kDense{.num_heads = 4, .num_experts = 0, .mlp_hidden = 128, .num_tokens = 16};
}  // namespace

TEST(ParallelPlan, SplitsTheGlobalBatchOverRanksAndMicroBatches) {
  const ParallelPlan p = parallel_plan_from_recipe(
      recipe({"parallel.dp=2", "train.grad_accum=2", "parallel.bucket_mb=0.5"}), 2, kDit);
  EXPECT_EQ(p.grid.dp, 2);
  EXPECT_EQ(p.grid.tp, 1);
  EXPECT_EQ(p.grad_accum, 2);
  EXPECT_EQ(p.micro_batch, 2);
  EXPECT_EQ(p.bucket_bytes, 512 * 1024);
  EXPECT_EQ(parallel_plan_from_recipe(recipe({}), 1, ModelSplits{}).micro_batch, 8);
}

TEST(ParallelPlan, GridMustMatchTheRanks) {
  testing::expect_error([] { parallel_plan_from_recipe(recipe({"parallel.dp=3"}), 2, kDit); },
                        {"--set parallel.dp=3: parallel.dp: ", "= 3 * 1 * 1 = 3",
                         "must equal the number of ranks (2 here)"});
  testing::expect_error([] { parallel_plan_from_recipe(recipe({"parallel.dp=2"}), 1, kDit); },
                        {"parallel.dp", "(1 here: a single process; start N ranks with mpirun"});
}

TEST(ParallelPlan, BatchMustSplitEvenly) {
  testing::expect_error(
      [] {
        parallel_plan_from_recipe(recipe({"parallel.dp=2", "train.grad_accum=3"}), 2, kDit);
      },
      {"p.toml:2: train.batch_size: ", "train.batch_size = 8 (the global batch)",
       "parallel.dp * train.grad_accum = 2 * 3"});
}

TEST(ParallelPlan, HeadsAndExpertsMustSplitEvenly) {
  testing::expect_error(
      [] { parallel_plan_from_recipe(recipe({"parallel.tp=3"}), 3, kDit); },
      {"parallel.tp: ", "parallel.tp * parallel.sp = 3 must divide model.num_heads = 4"});
  testing::expect_error(
      [] {
        parallel_plan_from_recipe(recipe({"parallel.dp=3", "parallel.ep=3"}), 3, kDit);
      },
      {"parallel.ep: ", "must divide model.num_experts = 4"});
  testing::expect_error(
      [] {
        parallel_plan_from_recipe(recipe({"parallel.dp=4", "parallel.ep=3"}), 4, kDit);
      },
      {"parallel.ep: ", "must divide parallel.dp = 4"});
  testing::expect_error(
      [] {
        parallel_plan_from_recipe(recipe({"parallel.dp=2", "parallel.ep=2"}), 2, {});
      },
      {"parallel.ep: ", "model.num_experts = 0"});
}

TEST(ParallelPlan, TensorAndSequenceLayoutsAreAccepted) {
  const ParallelPlan tp = parallel_plan_from_recipe(recipe({"parallel.tp=2"}), 2, kDense);
  EXPECT_EQ(tp.grid.dp, 1);
  EXPECT_EQ(tp.grid.tp, 2);
  EXPECT_EQ(tp.micro_batch, 8);  // every rank of a replica sees the replica's whole batch
  EXPECT_FALSE(tp.sequence_parallel);
  const ParallelPlan mixed = parallel_plan_from_recipe(
      recipe({"parallel.dp=2", "parallel.tp=2", "parallel.sequence_parallel=true",
              "optim.shard_state=true"}),
      4, kDit);
  EXPECT_EQ(mixed.grid.dp, 2);
  EXPECT_EQ(mixed.micro_batch, 4);
  EXPECT_TRUE(mixed.sequence_parallel);
  EXPECT_TRUE(mixed.shard_optimizer_state);
  const ParallelPlan tpsp = parallel_plan_from_recipe(
      recipe({"parallel.tp=2", "parallel.sp=2", "parallel.sequence_parallel=true"}), 4, kDense);
  EXPECT_EQ(tpsp.grid.sp, 2);
}

TEST(ParallelPlan, MlpWidthAndTokensMustSplitEvenly) {
  testing::expect_error(
      [] {
        parallel_plan_from_recipe(recipe({"parallel.tp=4"}), 4,
                                  {.num_heads = 4, .mlp_hidden = 6, .num_tokens = 16});
      },
      {"parallel.tp: ", "parallel.tp = 4 must divide the MLP width", "= 6"});
  // MoE experts are not split by tp: no MLP width to check.
  EXPECT_NO_THROW(parallel_plan_from_recipe(recipe({"parallel.tp=4"}), 4,
                                            {.num_heads = 4, .num_experts = 4, .num_tokens = 16}));
  testing::expect_error(
      [] {
        parallel_plan_from_recipe(recipe({"parallel.sp=2"}), 2,
                                  {.num_heads = 4, .num_experts = 4, .num_tokens = 49});
      },
      {"parallel.sp: ", "the 49 tokens", "must split evenly over parallel.sp = 2 ranks"});
  testing::expect_error(
      [] {
        parallel_plan_from_recipe(recipe({"parallel.tp=2", "parallel.sequence_parallel=true"}), 2,
                                  {.num_heads = 4, .num_experts = 4, .num_tokens = 9});
      },
      {"parallel.sequence_parallel: ", "the 9 tokens", "parallel.sp * parallel.tp = 2 ranks"});
  // Without sequence parallelism tp does not split the tokens.
  EXPECT_NO_THROW(parallel_plan_from_recipe(recipe({"parallel.tp=2"}), 2,
                                            {.num_heads = 4, .num_experts = 4, .num_tokens = 9}));
}

TEST(ParallelPlan, ExpertParallelismIsAcceptedWithoutShardedState) {
  const ParallelPlan ep =
      parallel_plan_from_recipe(recipe({"parallel.dp=4", "parallel.ep=2"}), 4, kDit);
  EXPECT_EQ(ep.grid.dp, 4);
  EXPECT_EQ(ep.grid.ep, 2);
  EXPECT_EQ(ep.micro_batch, 2);
  testing::expect_error(
      [] {
        parallel_plan_from_recipe(
            recipe({"parallel.dp=2", "parallel.ep=2", "optim.shard_state=true"}), 2, kDit);
      },
      {"optim.shard_state: ", "cannot be combined with parallel.ep = 2",
       "set optim.shard_state = false or parallel.ep = 1"});
}

TEST(ParallelPlan, ShardedStateOnCpusAndGpus) {
  for (const char* device : {"train.device=cpu", "train.device=cuda"})
    EXPECT_TRUE(parallel_plan_from_recipe(
                    recipe({"parallel.dp=2", "optim.shard_state=true", device}), 2, kDit)
                    .shard_optimizer_state)
        << device;
}

TEST(ParallelPlan, SplittingTheClassifierIsRefused) {
  testing::expect_error([] { parallel_plan_from_recipe(recipe({"parallel.tp=2"}), 2, {}); },
                        {"parallel.tp: ", "no attention heads or tokens to split"});
  testing::expect_error([] { parallel_plan_from_recipe(recipe({"parallel.sp=2"}), 2, {}); },
                        {"parallel.sp: ", "use parallel.dp only"});
}

}  // namespace loom::trainer
