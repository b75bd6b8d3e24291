#pragma once
// Training state in and out of checkpoints, keyed by name so a checkpoint stays valid when
// parameters are reordered: the model's parameters and buffers by their dotted names; AdamW state
// as "exp_avg.<name>", "exp_avg_sq.<name>" tensors and an "optim.step.<name>" counter; SGD as
// "momentum.<name>"; the data loader's position as the counters "data.epoch" and "data.batch".
#include <string>
#include <vector>

#include "data/loader.h"
#include "models/nn/module.h"
#include "optim/optimizer.h"
#include "trainer/checkpoint/checkpoint.h"

namespace loom::trainer {

// Model tensors (parameters and buffers, live handles), optimizer state and loader position.
void save_training_state(const nn::Module& model, const optim::Optimizer& opt,
                         const std::vector<std::string>& param_names,
                         const data::DataLoader& loader, CheckpointContents* out);
// The inverse; throws naming the entry for a missing tensor or a shape mismatch.
void load_training_state(nn::Module& model, optim::Optimizer& opt,
                         const std::vector<std::string>& param_names, data::DataLoader& loader,
                         const CheckpointContents& in);

void save_optimizer_state(const optim::Optimizer& opt, const std::vector<std::string>& names,
                          CheckpointContents* out);
// Throws naming the checkpoint entry when a tensor's shape does not match its parameter.
void load_optimizer_state(optim::Optimizer& opt, const std::vector<std::string>& names,
                          const CheckpointContents& in);

}  // namespace loom::trainer
