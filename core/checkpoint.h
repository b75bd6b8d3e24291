#pragma once
// Activation checkpointing: trade compute for memory. checkpoint(f, inputs) runs f without keeping
// anything f computes inside for the backward pass (no graph is recorded within f; only the inputs
// are saved). When the backward pass reaches the outputs, f runs again on the saved inputs with
// recording on, and the incoming gradients are propagated through that recomputation: to the
// inputs (returned to the outer pass) and to every parameter f uses (accumulated into .grad as
// usual, hooks included). So a block's intermediates live only during its own backward.
//
// Contract: f must compute the same values when replayed: no random draws inside (or draws from a
// generator that f resets itself), the same autocast state (the guard live at the forward is
// restored for the replay), and the same collectives in the same order on every rank. f returns
// defined tensors; non-floating outputs (counts) carry no gradient. At least one input must
// require grad, or nothing is recorded (as for any op) and parameters inside f get no gradient.
#include <functional>
#include <vector>

#include "core/tensor.h"

namespace loom {

using CheckpointFn = std::function<std::vector<Tensor>(const std::vector<Tensor>&)>;

std::vector<Tensor> checkpoint(const CheckpointFn& f, const std::vector<Tensor>& inputs);

}  // namespace loom
