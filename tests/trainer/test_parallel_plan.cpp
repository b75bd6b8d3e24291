// The recipe's parallel layout checked against the launch (trainer/parallel_plan.h): each
// inconsistency names its key, and layouts not yet wired into the trainer are refused.
#include "testing.h"
#include "trainer/parallel_plan.h"

namespace loom::trainer {

namespace {
Recipe recipe(const std::vector<std::string>& overrides) {
  return Recipe::from_string("[train]\nbatch_size = 8\n", "p.toml", overrides);
}
const ModelSplits kDit{.num_heads = 4, .num_experts = 4};
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

TEST(ParallelPlan, LayoutsNotYetWiredAreRefused) {
  testing::expect_error([] { parallel_plan_from_recipe(recipe({"parallel.tp=2"}), 2, kDit); },
                        {"parallel.tp: parallel.tp = 2: ", "not yet wired into the trainer"});
  testing::expect_error([] { parallel_plan_from_recipe(recipe({"parallel.sp=2"}), 2, kDit); },
                        {"parallel.sp: ", "not yet wired into the trainer"});
  testing::expect_error(
      [] {
        parallel_plan_from_recipe(recipe({"parallel.dp=2", "parallel.ep=2"}), 2, kDit);
      },
      {"parallel.ep: ", "not yet wired into the trainer"});
}

}  // namespace loom::trainer
