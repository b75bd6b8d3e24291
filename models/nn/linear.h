#pragma once
// Linear: y = x W^T + b, x [..., in] -> [..., out], weight [out, in], bias [out] (optional).
// Parameters "weight" and "bias" (when bias is on).
//
// Initialization follows DiT (ALGORITHMS.md §1.7): Xavier-uniform weight, zero bias. This is not
// PyTorch's nn.Linear default (kaiming_uniform(a=sqrt(5)) weight, uniform(+-1/sqrt(in)) bias); a
// model that wants another scheme re-initializes through init.h after construction (e.g. DiT's
// timestep MLP uses N(0, 0.02), its adaLN and output layers zeros).
#include "core/rng.h"
#include "models/nn/module.h"

namespace loom::nn {

struct LinearConfig {
  int64_t in_features = 0;
  int64_t out_features = 0;
  bool bias = true;
};

class Linear : public Module {
 public:
  Linear(const LinearConfig& config, Generator& gen);

  // x [..., in] -> [..., out].
  Tensor forward(const Tensor& x) const;
  // Redraws the weight (Xavier-uniform) and zeroes the bias.
  void reset_parameters(Generator& gen);

  const LinearConfig& config() const { return config_; }
  const Tensor& weight() const { return weight_; }
  const Tensor& bias() const { return bias_; }  // undefined without bias

 private:
  LinearConfig config_;
  Tensor weight_, bias_;
};

}  // namespace loom::nn
