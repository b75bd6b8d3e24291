#pragma once
// The recipe's [parallel] keys checked against the launch and the model, before any rank starts
// communicating: a pure function, so every rank reaches the same verdict from the same recipe and
// a bad layout ends the job with the recipe-error exit status (2) instead of a hang.
//
// Checks, in this order, each a Recipe::check naming the key ("<file>:<line>: parallel.dp: ..."):
//   parallel.dp * parallel.tp * parallel.sp == the number of ranks mpirun started
//   parallel.ep divides parallel.dp, and model.num_experts when the model has experts (ep > 1
//     needs experts)
//   parallel.tp * parallel.sp divides model.num_heads (models with heads)
//   train.batch_size divisible by parallel.dp * train.grad_accum (batch_size is the global batch)
//   parallel.tp, parallel.sp, parallel.ep == 1: those layouts are not yet wired into the trainer
#include <cstdint>

#include "parallel/grid.h"
#include "trainer/recipe/recipe.h"

namespace loom::trainer {

// What the parallel checks need to know about the model. The classifier has neither heads nor
// experts to split: the defaults.
struct ModelSplits {
  int64_t num_heads = 0;    // 0: no attention heads (the head check is skipped)
  int64_t num_experts = 0;  // 0: dense
};

struct ParallelPlan {
  parallel::GridDims grid;
  int64_t grad_accum = 1;
  int64_t micro_batch = 1;   // examples per rank per micro-batch: batch_size / (dp * grad_accum)
  int64_t bucket_bytes = 1;  // gradient bucket size (parallel.bucket_mb)
};

ParallelPlan parallel_plan_from_recipe(const Recipe& recipe, int world_size,
                                       const ModelSplits& model);

}  // namespace loom::trainer
