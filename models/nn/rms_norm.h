#pragma once
// RMSNorm over the last dim: x / sqrt(mean(x^2) + eps) [* weight]. x [..., C] -> [..., C].
// With affine, parameter "weight" [C] initialized to ones; no bias. No Generator is taken.
#include "models/nn/module.h"

namespace loom::nn {

struct RMSNormConfig {
  int64_t dim = 0;
  double eps = 1e-6;
  bool affine = true;
};

class RMSNorm : public Module {
 public:
  explicit RMSNorm(const RMSNormConfig& config);

  // x [..., C] -> [..., C].
  Tensor forward(const Tensor& x) const;
  // Weight back to ones.
  void reset_parameters();

  const RMSNormConfig& config() const { return config_; }
  const Tensor& weight() const { return weight_; }  // undefined without affine

 private:
  RMSNormConfig config_;
  Tensor weight_;
};

}  // namespace loom::nn
