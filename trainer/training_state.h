#pragma once
// Training state in and out of checkpoints as whole tensors keyed by name, so a checkpoint stays
// valid when parameters are reordered and loads at any data- or tensor-parallel layout:
//   model      parameters and buffers by their dotted names, sharded ones gathered
//              (nn::gather_state_dict)
//   optimizer  optim::state_dict's entries ("exp_avg.<name>", "exp_avg_sq.<name>" and the counter
//              "optim.step.<name>" for AdamW, "muon_momentum.<name>", "momentum.<name>"), the
//              state of sharded parameters gathered
//   loader     the counters "data.epoch" and "data.batch"
// Parameter-shaped tensors of the loops (the EMA) go through whole_param_tensors and
// load_param_tensors.
//
// Saving is collective: with a sharded optimizer (optim.shard_state) optim::state_dict gathers
// over dp, and the state of tensor-parallel parameters is gathered over tp. Every rank calls it and
// gets the same whole contents; the root writes them. Loading is not collective: every rank reads
// the same whole contents and keeps its part (its slices; a sharded optimizer the state it owns).
#include <string>
#include <utility>
#include <vector>

#include "data/loader.h"
#include "models/nn/module.h"
#include "optim/optimizer.h"
#include "trainer/checkpoint/checkpoint.h"
#include "trainer/param_shards.h"

namespace loom::trainer {

// Model tensors (whole), optimizer state and loader position; param_names[i] names
// opt.params()[i], a parameter of model.
void save_training_state(const nn::Module& model, const optim::Optimizer& opt,
                         const std::vector<std::string>& param_names,
                         const data::DataLoader& loader, CheckpointContents* out);
// The inverse; throws naming the entry for a missing tensor or a shape mismatch.
void load_training_state(nn::Module& model, optim::Optimizer& opt,
                         const std::vector<std::string>& param_names, data::DataLoader& loader,
                         const CheckpointContents& in);

// optim::state_dict(opt, names) into out->optimizer and out->counters, the tensors of sharded
// parameters gathered (collective, see above).
void save_optimizer_state(const optim::Optimizer& opt, const std::vector<std::string>& names,
                          const ParamShards& shards, CheckpointContents* out);
// optim::load_state_dict with the tensors of sharded parameters sliced for this rank. Throws naming
// the checkpoint entry when a tensor's shape does not match its parameter.
void load_optimizer_state(optim::Optimizer& opt, const std::vector<std::string>& names,
                          const ParamShards& shards, const CheckpointContents& in);

// (names[i], tensors[i] whole): tensors[i] is shaped like parameter names[i] on this rank
// (collective for sharded parameters).
std::vector<std::pair<std::string, Tensor>> whole_param_tensors(
    const ParamShards& shards, const std::vector<std::string>& names,
    const std::vector<Tensor>& tensors);
// Copies this rank's part of the entry names[i] of `whole` into targets[i]; throws naming `what`
// ("EMA") and the parameter when an entry is missing.
void load_param_tensors(const ParamShards& shards, const std::vector<std::string>& names,
                        const std::vector<std::pair<std::string, Tensor>>& whole,
                        const std::vector<Tensor>& targets, const std::string& what);

}  // namespace loom::trainer
