#include "models/nn/linear.h"

#include "core/ops/linalg.h"
#include "models/nn/init.h"

namespace loom::nn {

Linear::Linear(const LinearConfig& config, Generator& gen) : config_(config) {
  LOOM_CHECK(config.in_features > 0 && config.out_features > 0,
             "[Linear] in_features and out_features must be positive, got ", config.in_features,
             " and ", config.out_features);
  weight_ = register_parameter("weight", empty({config.out_features, config.in_features}));
  if (config.bias) bias_ = register_parameter("bias", empty({config.out_features}));
  reset_parameters(gen);
}

void Linear::reset_parameters(Generator& gen) {
  init::xavier_uniform_(weight_, gen);
  if (bias_.defined()) init::zeros_(bias_);
}

Tensor Linear::forward(const Tensor& x) const {
  LOOM_CHECK(x.dim() >= 1 && x.shape().back() == config_.in_features,
             "[Linear] expected input [..., ", config_.in_features, "], got ",
             shape_str(x.shape()));
  return linear(x, weight_, bias_);
}

}  // namespace loom::nn
