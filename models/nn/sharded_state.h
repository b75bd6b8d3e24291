#pragma once
// Whole-tensor views of a sharded model (sharding.h), so checkpoints hold the single-rank model's
// tensors and a run saved at one tensor-parallel size resumes at any other:
//
//   gather_state_dict       model -> whole state dict (what a checkpoint stores)
//   load_sharded_state_dict whole state dict -> model (each rank keeps its slices)
//   gather_gradients        every parameter's gradient as the whole tensor (tests, debugging)
//   sharded_grad_norm       the global L2 norm of the gradients, each element counted once
//
// Names are Module::state_dict()'s. The gathering functions are collective over the group of
// every sharded parameter, in named_shard_specs order: all ranks of those groups call them
// together. A model without sharded parameters gives exactly state_dict() and grad_norm.
#include "models/nn/module.h"
#include "models/nn/sharding.h"

namespace loom::nn {

// Module::state_dict() with every sharded parameter replaced by its whole tensor (new tensors);
// replicated entries are the live handles, as state_dict() gives them.
StateDict gather_state_dict(const Module& root);
// Loads whole tensors: each sharded entry is sliced for this rank, then Module::load_state_dict
// runs (every key validated before anything is written; strict rejects missing and unexpected
// keys). A sharded entry whose shape is not the parameter's whole shape throws naming both.
void load_sharded_state_dict(Module& root, const StateDict& whole, bool strict = true);
// (name, whole gradient) of every parameter with a gradient, in named_parameters order.
StateDict gather_gradients(const Module& root);
// sqrt(sum of squares of every gradient element of the whole model): a sharded gradient's squares
// are summed over its group, a replicated one is counted once. The same on every rank, equal to
// optim::grad_norm of the single-rank model; what gradient clipping must use under tensor
// parallelism (each rank's local norm differs, and ranks that clip differently drift apart).
double sharded_grad_norm(const Module& root);

}  // namespace loom::nn
