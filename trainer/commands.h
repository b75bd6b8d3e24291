#pragma once
// The checkpoint commands of the CLI: `loom sample`, `loom eval`, `loom inspect`. Each takes a
// checkpoint directory or a run directory (its newest complete checkpoint). DiT checkpoints are
// sampled with their EMA weights; the recipe stored in the checkpoint rebuilds the model.
#include <iosfwd>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "models/dit/dit.h"
#include "trainer/recipe/recipe.h"

namespace loom::trainer {

struct LoadedDiT {
  std::shared_ptr<dit::DiT> model;  // in eval mode, EMA weights unless asked otherwise
  std::optional<Recipe> recipe;
  int64_t step = 0;
  std::string dir;
};
LoadedDiT load_dit(const std::string& path, bool use_ema = true);

struct SampleOptions {
  std::string checkpoint;
  std::vector<int64_t> classes;  // empty: every class (up to 10)
  int64_t per_class = 8;
  std::optional<double> cfg_scale;  // default: the recipe's sample.cfg_scale
  std::optional<int64_t> steps;     // default: the recipe's sample.steps
  std::string sampler;              // default: the recipe's sample.sampler
  uint64_t seed = 0;
  bool use_ema = true;  // false: the raw trained weights
  std::string out = "samples.png";
};
void sample_command(const SampleOptions& options, std::ostream& out);

struct EvalOptions {
  std::string checkpoint;
  std::string classifier;  // empty: the recipe's eval.classifier, else runs/fmnist_classifier
  std::optional<int64_t> per_class;
  std::optional<int64_t> steps;
  std::optional<double> cfg_scale;
  uint64_t seed = 0;
};
struct EvalResult {
  double class_consistency = 0;  // fraction of generated images classified as their class
  double frechet_distance = 0;   // between classifier features of generated and real test images
  int64_t images = 0;
};
// Prints a summary and writes eval_<step>.json beside the checkpoint's run.
EvalResult eval_command(const EvalOptions& options, std::ostream& out);

void inspect_command(const std::string& checkpoint, std::ostream& out);

}  // namespace loom::trainer
