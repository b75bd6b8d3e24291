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
  r.check(model.num_heads == 0 || model.num_heads % (tp * sp) == 0,
          tp > 1 ? "parallel.tp" : "parallel.sp",
          "parallel.tp * parallel.sp = " + str(tp * sp) + " must divide model.num_heads = " +
              str(model.num_heads) + " (heads are split across those ranks)");
  r.check(batch % (dp * accum) == 0, "train.batch_size",
          "train.batch_size = " + str(batch) + " (the global batch) must be divisible by " +
              "parallel.dp * train.grad_accum = " + str(dp) + " * " + str(accum) +
              ", so that every rank gets an equal share of every micro-batch");
  for (const char* key : {"parallel.tp", "parallel.sp", "parallel.ep"}) {
    r.check(r.get_int(key) == 1, key,
            std::string(key) + " = " + str(r.get_int(key)) +
                ": this layout is not yet wired into the trainer (only parallel.dp is); set " +
                key + " = 1");
  }
  return ParallelPlan{.grid = {.dp = int(dp), .tp = int(tp), .sp = int(sp), .ep = int(ep)},
                      .grad_accum = accum,
                      .micro_batch = batch / (dp * accum),
                      .bucket_bytes = std::max<int64_t>(
                          1, std::llround(r.get_double("parallel.bucket_mb") * 1024 * 1024))};
}

}  // namespace loom::trainer
