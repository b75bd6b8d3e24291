#include "models/nn/layer_norm.h"

#include "core/ops/nn.h"
#include "models/nn/init.h"

namespace loom::nn {

LayerNorm::LayerNorm(const LayerNormConfig& config) : config_(config) {
  LOOM_CHECK(config.dim > 0, "[LayerNorm] dim must be positive, got ", config.dim);
  LOOM_CHECK(config.eps > 0, "[LayerNorm] eps must be positive, got ", config.eps);
  if (config.affine) {
    weight_ = register_parameter("weight", empty({config.dim}));
    bias_ = register_parameter("bias", empty({config.dim}));
  }
  reset_parameters();
}

void LayerNorm::reset_parameters() {
  if (!config_.affine) return;
  init::ones_(weight_);
  init::zeros_(bias_);
}

Tensor LayerNorm::forward(const Tensor& x) const {
  LOOM_CHECK(x.dim() >= 1 && x.shape().back() == config_.dim, "[LayerNorm] expected input [..., ",
             config_.dim, "], got ", shape_str(x.shape()));
  return layer_norm(x, weight_, bias_, config_.eps);
}

}  // namespace loom::nn
