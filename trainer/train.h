#pragma once
// `loom train`: runs the job a recipe describes (task "diffusion": DiT / DiT-MoE with DDPM or
// rectified flow; task "classifier": the ConvNet used by `loom eval`) in a run directory, with
// periodic console lines, metrics.jsonl, sample grids, checkpoints and resume (run_dir.h).
// SIGINT/SIGTERM finish the current step, write a checkpoint and return normally.
// Under mpirun each rank calls train() with the same recipe; parallel.dp = N ranks train data
// parallel (data_parallel.h, docs/PARALLEL.md) and only rank 0 writes and prints.
#include <iosfwd>

#include "trainer/recipe/recipe.h"
#include "trainer/run_dir.h"

namespace loom::trainer {

struct TrainSummary {
  int64_t steps_done = 0;    // the step the run ended at
  bool interrupted = false;  // stopped by a signal
  std::string run_dir;
  std::string last_checkpoint;  // empty on ranks other than 0
};

TrainSummary train(const Recipe& recipe, const TrainOptions& options, std::ostream& out);

TrainSummary train_diffusion(const Recipe& recipe, const TrainOptions& options, std::ostream& out);
TrainSummary train_classifier(const Recipe& recipe, const TrainOptions& options, std::ostream& out);

}  // namespace loom::trainer
