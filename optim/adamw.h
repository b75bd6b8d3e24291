#pragma once
// AdamW (Loshchilov & Hutter), with exactly PyTorch's torch.optim.AdamW arithmetic:
//
//   t += 1
//   p  = p - lr * weight_decay * p                    (decoupled decay, before the Adam update)
//   m  = beta1 * m + (1 - beta1) * g
//   v  = beta2 * v + (1 - beta2) * g^2
//   p  = p - (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
//
// The step count t is kept per parameter (a parameter skipped for lack of a gradient does not
// advance). State m and v is f32, zero-initialized at a parameter's first step; the per-element
// update runs in f32 with the bias-correction scalars computed in double. No amsgrad, no maximize.
#include <cstdint>
#include <vector>

#include "optim/optimizer.h"

namespace loom::optim {

struct AdamWConfig {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;
};

// Per-parameter state, exposed for inspection; checkpoints go through state()/load_state() (kinds
// "exp_avg", "exp_avg_sq" and the counter "optim.step"). exp_avg / exp_avg_sq are undefined until
// the parameter's first step. A checkpoint loader may assign them (and step); step() then updates
// them in place and throws unless each is a contiguous f32 CPU tensor of the parameter's shape.
struct AdamWState {
  int64_t step = 0;
  Tensor exp_avg;     // m
  Tensor exp_avg_sq;  // v
};

class AdamW final : public Optimizer {
 public:
  // Throws loom::Error for lr < 0, betas outside [0, 1), eps < 0 or weight_decay < 0.
  explicit AdamW(std::vector<Tensor> params, const AdamWConfig& config = {});

  void step() override;
  StateKinds state_kinds(size_t i) const override;
  std::vector<ParamState> state() const override;
  void load_state(const std::vector<ParamState>& state) override;

  const AdamWConfig& config() const { return config_; }
  const AdamWState& state(size_t i) const { return state_.at(i); }
  AdamWState& state(size_t i) { return state_.at(i); }

 private:
  AdamWConfig config_;
  std::vector<AdamWState> state_;  // one per parameter
};

}  // namespace loom::optim
