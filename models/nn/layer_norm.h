#pragma once
// LayerNorm over the last dim: (x - mean) / sqrt(var + eps) [* weight + bias], biased variance.
// x [..., C] -> [..., C]. With affine, parameters "weight" [C] (ones) and "bias" [C] (zeros);
// without, no parameters (DiT's block norms: affine off, eps 1e-6, ALGORITHMS.md §1.5).
// The initial values are constants, so no Generator is taken.
#include "models/nn/module.h"

namespace loom::nn {

struct LayerNormConfig {
  int64_t dim = 0;
  double eps = 1e-5;
  bool affine = true;
};

class LayerNorm : public Module {
 public:
  explicit LayerNorm(const LayerNormConfig& config);

  // x [..., C] -> [..., C].
  Tensor forward(const Tensor& x) const;
  // Weight back to ones, bias to zeros.
  void reset_parameters();

  const LayerNormConfig& config() const { return config_; }
  const Tensor& weight() const { return weight_; }  // undefined without affine
  const Tensor& bias() const { return bias_; }      // undefined without affine

 private:
  LayerNormConfig config_;
  Tensor weight_, bias_;
};

}  // namespace loom::nn
