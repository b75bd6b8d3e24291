#include "models/nn/mlp.h"

#include "core/ops/fused_mlp.h"

namespace loom::nn {

Mlp::Mlp(const MlpConfig& config, Generator& gen) {
  LOOM_CHECK(config.in_features > 0 && config.hidden_features > 0 && config.out_features >= 0,
             "[Mlp] in_features and hidden_features must be positive and out_features >= 0, got ",
             config.in_features, ", ", config.hidden_features, ", ", config.out_features);
  const int64_t out = config.out_features > 0 ? config.out_features : config.in_features;
  fc1_ = register_module(
      "fc1", std::make_shared<Linear>(LinearConfig{.in_features = config.in_features,
                                                   .out_features = config.hidden_features},
                                      gen));
  fc2_ = register_module(
      "fc2", std::make_shared<Linear>(
                 LinearConfig{.in_features = config.hidden_features, .out_features = out}, gen));
}

void Mlp::reset_parameters(Generator& gen) {
  fc1_->reset_parameters(gen);
  fc2_->reset_parameters(gen);
}

Tensor Mlp::forward(const Tensor& x) const {
  return gelu_mlp(x, fc1_->weight(), fc1_->bias(), fc2_->weight(), fc2_->bias());
}

}  // namespace loom::nn
