#include "models/nn/rms_norm.h"

#include "core/ops/nn.h"
#include "models/nn/init.h"

namespace loom::nn {

RMSNorm::RMSNorm(const RMSNormConfig& config) : config_(config) {
  LOOM_CHECK(config.dim > 0, "[RMSNorm] dim must be positive, got ", config.dim);
  LOOM_CHECK(config.eps > 0, "[RMSNorm] eps must be positive, got ", config.eps);
  if (config.affine) weight_ = register_parameter("weight", empty({config.dim}));
  reset_parameters();
}

void RMSNorm::reset_parameters() {
  if (config_.affine) init::ones_(weight_);
}

Tensor RMSNorm::forward(const Tensor& x) const {
  LOOM_CHECK(x.dim() >= 1 && x.shape().back() == config_.dim, "[RMSNorm] expected input [..., ",
             config_.dim, "], got ", shape_str(x.shape()));
  return rms_norm(x, weight_, config_.eps);
}

}  // namespace loom::nn
