#pragma once
// Stochastic gradient descent with momentum, dampening, Nesterov and L2 weight decay, with
// exactly PyTorch's torch.optim.SGD arithmetic:
//
//   g = grad + weight_decay * p                          (coupled L2, added to the gradient)
//   b = g                                   at a parameter's first step with momentum,
//   b = momentum * b + (1 - dampening) * g  afterwards
//   g = g + momentum * b   (nesterov)   or   g = b   (plain momentum)
//   p = p - lr * g
//
// With momentum 0 no buffer is kept and the update is p -= lr * g. Nesterov needs momentum > 0
// and dampening 0 (as in PyTorch). The momentum buffer is f32 and exposed for checkpoints.
// The update runs through ops, on the parameters' device.
#include <vector>

#include "optim/optimizer.h"

namespace loom::optim {

struct SgdConfig {
  double lr = 1e-2;
  double momentum = 0;
  double dampening = 0;
  double weight_decay = 0;
  bool nesterov = false;
};

class Sgd final : public Optimizer {
 public:
  // Throws loom::Error for negative lr/momentum/weight_decay, or Nesterov without momentum or
  // with dampening.
  explicit Sgd(std::vector<Tensor> params, const SgdConfig& config = {});

  void step() override;
  // One tensor kind, "momentum".
  StateKinds state_kinds(size_t i) const override;
  std::vector<ParamState> state() const override;
  void load_state(const std::vector<ParamState>& state) override;

  const SgdConfig& config() const { return config_; }
  // Parameter i's momentum buffer; undefined until its first step with momentum > 0.
  const Tensor& momentum_buffer(size_t i) const { return buffers_.at(i); }
  // Restores parameter i's momentum buffer (checkpoint loading). A defined buffer must match the
  // parameter's shape and is copied into a fresh contiguous f32 tensor (dtypes convert); an
  // undefined one clears the buffer, so the next step seeds it from the gradient.
  void set_momentum_buffer(size_t i, const Tensor& buffer);

 private:
  SgdConfig config_;
  std::vector<Tensor> buffers_;
};

}  // namespace loom::optim
