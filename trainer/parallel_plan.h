#pragma once
// The recipe's [parallel] keys checked against the launch and the model, before any rank starts
// communicating: a pure function, so every rank reaches the same verdict from the same recipe and
// a bad layout ends the job with the recipe-error exit status (2) instead of a hang.
//
// Checks, in this order, each a Recipe::check naming the key ("<file>:<line>: parallel.dp: ..."):
//   parallel.dp * parallel.tp * parallel.sp == the number of ranks mpirun started
//   parallel.ep divides parallel.dp, and model.num_experts when the model has experts (ep > 1
//     needs experts)
//   optim.shard_state is false when parallel.ep > 1 (ZeRO over the expert-data-parallel groups is
//     not built)
//   parallel.tp == parallel.sp == 1 for a model without attention (the classifier)
//   parallel.tp * parallel.sp divides model.num_heads (heads are split over both)
//   parallel.tp divides the MLP width of a dense DiT (its hidden units are split over tp)
//   parallel.sp (times parallel.tp with parallel.sequence_parallel) divides the token count
//   train.batch_size divisible by parallel.dp * train.grad_accum (batch_size is the global batch)
#include <cstdint>

#include "parallel/grid.h"
#include "trainer/recipe/recipe.h"

namespace loom::trainer {

// What the parallel checks need to know about the model. The classifier has no heads, MLP or
// tokens to split: the defaults.
struct ModelSplits {
  int64_t num_heads = 0;    // 0: no attention (tp and sp must be 1)
  int64_t num_experts = 0;  // 0: dense
  int64_t mlp_hidden = 0;   // hidden width of a tensor-parallel MLP; 0: none (MoE experts are
                            // not split by tp)
  int64_t num_tokens = 0;   // tokens of the sequence split over sp
};

struct ParallelPlan {
  parallel::GridDims grid;
  bool sequence_parallel = false;      // Megatron sequence parallelism on the tp group
  bool shard_optimizer_state = false;  // optim.shard_state: ZeRO-1 over dp
  int64_t grad_accum = 1;
  int64_t micro_batch = 1;   // examples per rank per micro-batch: batch_size / (dp * grad_accum)
  int64_t bucket_bytes = 1;  // gradient bucket size (parallel.bucket_mb)
};

ParallelPlan parallel_plan_from_recipe(const Recipe& recipe, int world_size,
                                       const ModelSplits& model);

}  // namespace loom::trainer
