#pragma once
// Optimizer state in and out of checkpoints, for every optimizer alike (plain, grouped, sharded).
//
// An optimizer describes what it keeps for parameter i as a ParamState: tensors shaped like the
// parameter (AdamW's "exp_avg", "exp_avg_sq"; Muon's "muon_momentum"; SGD's "momentum") and
// integer counters (AdamW's "optim.step"), each under a kind name. A tensor kind that is absent
// has not been created yet (a parameter before its first step); every counter kind is always
// present. Optimizer::state() gives the whole logical state of every parameter, so a checkpoint
// written by a sharded optimizer at one data-parallel size loads at any other.
//
// The checkpoint form (StateDict) names each entry "<kind>.<parameter name>", the keys the
// trainer's checkpoints have always used: "exp_avg.blocks.0.attn.qkv.weight",
// "optim.step.blocks.0.attn.qkv.weight", "muon_momentum.<name>", "momentum.<name>".
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace loom::optim {

class Optimizer;

// What one optimizer keeps for one parameter, by kind.
struct ParamState {
  std::map<std::string, Tensor> tensors;
  std::map<std::string, int64_t> counters;
};

// The kinds an optimizer keeps for a parameter (fixed by the optimizer's type).
struct StateKinds {
  std::vector<std::string> tensors;
  std::vector<std::string> counters;
};

// Checkpoint form: entries keyed "<kind>.<parameter name>" (state_key), shaped like
// CheckpointContents' optimizer tensors and counters.
struct StateDict {
  std::vector<std::pair<std::string, Tensor>> tensors;
  std::map<std::string, int64_t> counters;
};

// The checkpoint key of parameter `name`'s state of kind `kind`: "<kind>.<name>".
std::string state_key(const std::string& kind, const std::string& name);

// The whole state of `opt` under checkpoint keys; names[i] names opt.params()[i]. Collective when
// opt is (or contains) a sharded optimizer: every rank of its group calls it, and every rank gets
// every entry. Tensors may be live handles to the optimizer's buffers: write them out before the
// next step.
StateDict state_dict(const Optimizer& opt, const std::vector<std::string>& names);

// Loads what state_dict wrote (possibly by another data-parallel size or another optimizer
// grouping): for each parameter, the kinds its optimizer keeps are looked up by key; a missing
// tensor entry leaves that state to be created at the next step, a missing counter reads 0, and
// entries of other kinds are ignored. Tensors are copied (any float dtype, converted to f32).
// Not collective: every rank passes the same whole state and a sharded optimizer keeps its part.
// Throws loom::Error naming the key when a tensor's shape is not its parameter's.
void load_state_dict(Optimizer& opt, const std::vector<std::string>& names, const StateDict& in);

// Checks that `state` holds only `kinds`, every tensor shaped like `param`; `who` and `label`
// name the optimizer and the parameter in the error ("[adamw] parameter 'w': ...").
void check_param_state(const ParamState& state, const StateKinds& kinds, const Tensor& param,
                       const char* who, const std::string& label);

// A fresh contiguous f32 copy of a state tensor on `device` (what load_state stores).
Tensor copy_state_tensor(const Tensor& t, Device device);

}  // namespace loom::optim
