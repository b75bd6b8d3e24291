#include "trainer/parallel_plan.h"

#include <algorithm>
#include <cmath>
#include <string>

namespace loom::trainer {

namespace {
std::string str(int64_t v) {
  return std::to_string(v);
}
}  // namespace

ParallelPlan parallel_plan_from_recipe(const Recipe& r, int world_size, const ModelSplits& model) {
  const int64_t dp = r.get_int("parallel.dp"), tp = r.get_int("parallel.tp");
  const int64_t sp = r.get_int("parallel.sp"), ep = r.get_int("parallel.ep");
  const bool seqpar = r.get_bool("parallel.sequence_parallel");
  const int64_t batch = r.get_int("train.batch_size"), accum = r.get_int("train.grad_accum");
  const std::string launch = world_size == 1
                                 ? "1 here: a single process; start N ranks with mpirun -np N, "
                                   "see docs/PARALLEL.md"
                                 : str(world_size) + " here";
  r.check(dp * tp * sp == world_size, "parallel.dp",
          "parallel.dp * parallel.tp * parallel.sp = " + str(dp) + " * " + str(tp) + " * " +
              str(sp) + " = " + str(dp * tp * sp) + " must equal the number of ranks (" + launch +
              ")");
  r.check(dp % ep == 0, "parallel.ep",
          "parallel.ep = " + str(ep) + " must divide parallel.dp = " + str(dp) +
              " (expert-parallel groups are made of data-parallel ranks)");
  r.check(ep == 1 || (model.num_experts > 0 && model.num_experts % ep == 0), "parallel.ep",
          "parallel.ep = " + str(ep) + " must divide model.num_experts = " +
              str(model.num_experts) + " (each expert-parallel rank holds an equal share)");
  r.check(ep == 1 || !r.get_bool("optim.shard_state"), "optim.shard_state",
          "optim.shard_state = true cannot be combined with parallel.ep = " + str(ep) +
              " yet (the expert slices would have to be sharded over the ranks holding the same "
              "experts, not over dp); set optim.shard_state = false or parallel.ep = 1");
  const char* split_key = tp > 1 ? "parallel.tp" : "parallel.sp";
  r.check(model.num_heads > 0 || tp * sp == 1, split_key,
          "parallel.tp * parallel.sp = " + str(tp * sp) +
              ": this model has no attention heads or tokens to split (task = \"classifier\"); "
              "use parallel.dp only");
  r.check(model.num_heads == 0 || model.num_heads % (tp * sp) == 0, split_key,
          "parallel.tp * parallel.sp = " + str(tp * sp) + " must divide model.num_heads = " +
              str(model.num_heads) + " (heads are split across those ranks)");
  r.check(model.mlp_hidden == 0 || model.mlp_hidden % tp == 0, "parallel.tp",
          "parallel.tp = " + str(tp) + " must divide the MLP width model.mlp_ratio * " +
              "model.hidden_size = " + str(model.mlp_hidden) + " (its hidden units are split)");
  const int64_t token_split = sp * (seqpar ? tp : 1);
  r.check(model.num_tokens == 0 || model.num_tokens % token_split == 0,
          seqpar && tp > 1 ? "parallel.sequence_parallel" : "parallel.sp",
          "the " + str(model.num_tokens) +
              " tokens ((model.input_size / model.patch_size)^2) must split evenly over " +
              (seqpar && tp > 1 ? "parallel.sp * parallel.tp = " + str(token_split) +
                                      " ranks (sequence parallelism splits them over tp too)"
                                : "parallel.sp = " + str(sp) + " ranks"));
  r.check(batch % (dp * accum) == 0, "train.batch_size",
          "train.batch_size = " + str(batch) + " (the global batch) must be divisible by " +
              "parallel.dp * train.grad_accum = " + str(dp) + " * " + str(accum) +
              ", so that every rank gets an equal share of every micro-batch");
  return ParallelPlan{.grid = {.dp = int(dp), .tp = int(tp), .sp = int(sp), .ep = int(ep)},
                      .sequence_parallel = seqpar,
                      .shard_optimizer_state = r.get_bool("optim.shard_state"),
                      .grad_accum = accum,
                      .micro_batch = batch / (dp * accum),
                      .bucket_bytes = std::max<int64_t>(
                          1, std::llround(r.get_double("parallel.bucket_mb") * 1024 * 1024))};
}

}  // namespace loom::trainer
