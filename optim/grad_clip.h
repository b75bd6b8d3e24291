#pragma once
// Global gradient-norm clipping: the L2 norm over every parameter's gradient taken together; when
// it exceeds max_norm every gradient is scaled in place by max_norm / (norm + 1e-6) (PyTorch's
// clip_grad_norm_). Parameters without a gradient are skipped.
#include <vector>

#include "core/tensor.h"

namespace loom::optim {

// The global L2 norm of the gradients (accumulated in double).
double grad_norm(const std::vector<Tensor>& params);
// Clips when max_norm > 0 and returns the norm before clipping (NaN/Inf pass through unclipped).
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm);
// The same with the global norm computed by the caller (under tensor parallelism
// nn::sharded_grad_norm, which counts every element of the whole model once): scales the
// gradients when max_norm > 0 and norm is finite and above max_norm. Returns norm.
double clip_grads_to(const std::vector<Tensor>& params, double norm, double max_norm);

}  // namespace loom::optim
