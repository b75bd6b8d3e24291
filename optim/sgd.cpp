#include "optim/sgd.h"

#include "core/ops/elementwise.h"

namespace loom::optim {

Sgd::Sgd(std::vector<Tensor> params, const SgdConfig& config)
    : Optimizer(std::move(params), config.lr, "sgd"), config_(config) {
  LOOM_CHECK(config.momentum >= 0, "[sgd] momentum must be >= 0, got ", config.momentum);
  LOOM_CHECK(config.weight_decay >= 0, "[sgd] weight_decay must be >= 0, got ",
             config.weight_decay);
  LOOM_CHECK(!config.nesterov || (config.momentum > 0 && config.dampening == 0),
             "[sgd] nesterov needs momentum > 0 and dampening 0, got momentum ", config.momentum,
             " and dampening ", config.dampening);
  buffers_.resize(params_.size());
}

void Sgd::set_momentum_buffer(size_t i, const Tensor& buffer) {
  LOOM_CHECK(i < params_.size(), "[sgd] parameter index ", i, " out of range (", params_.size(),
             " parameters)");
  if (!buffer.defined()) {
    buffers_[i] = Tensor();
    return;
  }
  LOOM_CHECK(buffer.shape() == params_[i].shape(), "[sgd] momentum buffer of shape ",
             shape_str(buffer.shape()), " for parameter ", param_label(i), " of shape ",
             shape_str(params_[i].shape()));
  buffers_[i] = copy_state_tensor(buffer, params_[i].device());
}

StateKinds Sgd::state_kinds(size_t) const {
  return {.tensors = {"momentum"}, .counters = {}};
}

std::vector<ParamState> Sgd::state() const {
  std::vector<ParamState> out(params_.size());
  for (size_t i = 0; i < params_.size(); ++i)
    if (buffers_[i].defined()) out[i].tensors["momentum"] = buffers_[i];
  return out;
}

void Sgd::load_state(const std::vector<ParamState>& state) {
  check_state_count(state);
  for (size_t i = 0; i < params_.size(); ++i) {
    check_param_state_of(i, state[i]);
    const auto it = state[i].tensors.find("momentum");
    set_momentum_buffer(i, it == state[i].tensors.end() ? Tensor() : it->second);
  }
}

// Through ops, so one formula serves every device: float arithmetic in PyTorch's order.
void Sgd::step() {
  NoGradGuard no_grad;
  const double lr = lr_, wd = config_.weight_decay, mom = config_.momentum;
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor g = grad_of(i);
    if (!g.defined()) continue;
    Tensor& p = params_[i];
    const Tensor d = wd == 0 ? g : g + p * wd;
    if (mom == 0) {
      copy_into(p, p - d * lr);
      continue;
    }
    if (!buffers_[i].defined()) {
      buffers_[i] = d.clone();  // PyTorch seeds the buffer with the first gradient itself
    } else {
      copy_into(buffers_[i], buffers_[i] * mom + d * (1 - config_.dampening));
    }
    const Tensor& b = buffers_[i];
    copy_into(p, p - (config_.nesterov ? d + b * mom : b) * lr);
  }
}

}  // namespace loom::optim
