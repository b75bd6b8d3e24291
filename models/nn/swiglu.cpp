#include "models/nn/swiglu.h"

#include "core/autocast.h"
#include "core/ops/moe_ops.h"

namespace loom::nn {

SwiGLU::SwiGLU(const SwiGLUConfig& config, Generator& gen) {
  LOOM_CHECK(config.dim > 0 && config.hidden_dim > 0,
             "[SwiGLU] dim and hidden_dim must be positive, got ", config.dim, " and ",
             config.hidden_dim);
  const LinearConfig in{
      .in_features = config.dim, .out_features = config.hidden_dim, .bias = false};
  const LinearConfig out{
      .in_features = config.hidden_dim, .out_features = config.dim, .bias = false};
  gate_proj_ = register_module("gate_proj", std::make_shared<Linear>(in, gen));
  up_proj_ = register_module("up_proj", std::make_shared<Linear>(in, gen));
  down_proj_ = register_module("down_proj", std::make_shared<Linear>(out, gen));
}

void SwiGLU::reset_parameters(Generator& gen) {
  gate_proj_->reset_parameters(gen);
  up_proj_->reset_parameters(gen);
  down_proj_->reset_parameters(gen);
}

Tensor SwiGLU::forward(const Tensor& x_in) const {
  const Tensor x = autocast(x_in);  // cast once for both projections (a no-op without autocast)
  return down_proj_->forward(swiglu(gate_proj_->forward(x), up_proj_->forward(x)));
}

}  // namespace loom::nn
