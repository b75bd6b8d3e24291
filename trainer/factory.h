#pragma once
// Building a job's pieces from a resolved recipe: the DiT config, the datasets, the optimizer
// and the schedule. Cross-key checks (heads divide the width, top_k <= num_experts, the data's
// image shape matches the model, ...) throw through Recipe::check, so the message names the
// recipe file, line and key before any work starts.
#include <memory>

#include "data/dataset.h"
#include "models/dit/dit.h"
#include "optim/optimizer.h"
#include "optim/param_groups.h"
#include "optim/schedule.h"
#include "parallel/communicator.h"
#include "trainer/recipe/recipe.h"
#include "trainer/sampling.h"

namespace loom::trainer {

dit::DiTConfig dit_config_from_recipe(const Recipe& recipe);

// The training (train = true) or held-out split of the recipe's data source. Synthetic data and
// latent files have no held-out split: the same examples are returned.
std::shared_ptr<data::Dataset> dataset_from_recipe(const Recipe& recipe, bool train);

// Checks the dataset's item shape and class count against the model config.
void check_data_matches_model(const Recipe& recipe, const data::Dataset& dataset,
                              int64_t in_channels, int64_t input_size, int64_t num_classes);

// How the optimizer is spread over the ranks (docs/PARALLEL.md).
struct OptimizerLayout {
  // optim.shard_state: the dp group the state is sharded over (DataParallel::optimizer_group);
  // null: every rank keeps all of it.
  std::shared_ptr<parallel::Communicator> shard_over = nullptr;
  // Tensor-parallel parameters, which Muon orthogonalizes whole (ParamShards::muon_splits); null:
  // none.
  std::shared_ptr<const optim::MuonSplits> muon_splits = nullptr;
};

// optim.name = "muon" gives an optim::MultiOptimizer with two groups: "muon" (the parameters
// matched by optim.muon_patterns; they are matched by Tensor::name, so params must be named) and
// "adamw" (all the others). The other names give one AdamW or SGD over all params. With
// layout.shard_over each of them is a ShardedOptimizer over that group (distributed Muon, ZeRO-1
// AdamW and SGD); construction is then collective over it.
std::unique_ptr<optim::Optimizer> optimizer_from_recipe(const Recipe& recipe,
                                                        std::vector<Tensor> params,
                                                        const OptimizerLayout& layout = {});
// The two group specs that optimizer_from_recipe uses for optim.name = "muon".
std::vector<optim::ParamGroupSpec> param_groups_from_recipe(const Recipe& recipe);
optim::ScheduleConfig schedule_from_recipe(const Recipe& recipe);

SamplerConfig sampler_config_from_recipe(const Recipe& recipe);

// Sets the CPU thread count from train.threads (0 keeps the default).
void apply_threads(const Recipe& recipe);

// The device of train.device: the CPU, or the CUDA device numbered by the rank's local rank under
// mpirun (0 otherwise). Also applies train.allow_tf32. Throws a recipe error naming train.device
// when CUDA is asked for but this build has no CUDA, the machine no GPU, or the node more ranks
// than GPUs (two ranks on one GPU would only fail later, inside NCCL).
Device device_from_recipe(const Recipe& recipe);
// Whether the forward runs under bf16 autocast (train.precision = bf16 on a CUDA device).
bool autocast_from_recipe(const Recipe& recipe, Device device);

}  // namespace loom::trainer
