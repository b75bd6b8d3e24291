#include "models/nn/attention.h"

#include "core/ops/index.h"
#include "core/ops/nn.h"

namespace loom::nn {

MultiHeadAttention::MultiHeadAttention(const MultiHeadAttentionConfig& config, Generator& gen)
    : config_(config) {
  LOOM_CHECK(config.dim > 0 && config.num_heads > 0 && config.dim % config.num_heads == 0,
             "[MultiHeadAttention] dim must be a positive multiple of num_heads, got dim ",
             config.dim, " and num_heads ", config.num_heads);
  qkv_ = register_module(
      "qkv", std::make_shared<Linear>(
                 LinearConfig{.in_features = config.dim, .out_features = 3 * config.dim}, gen));
  proj_ = register_module(
      "proj", std::make_shared<Linear>(
                  LinearConfig{.in_features = config.dim, .out_features = config.dim}, gen));
}

void MultiHeadAttention::reset_parameters(Generator& gen) {
  qkv_->reset_parameters(gen);
  proj_->reset_parameters(gen);
}

Tensor MultiHeadAttention::forward(const Tensor& x, const Tensor& mask) const {
  const int64_t D = config_.dim, H = config_.num_heads, hd = head_dim();
  LOOM_CHECK(x.dim() == 3 && x.size(2) == D, "[MultiHeadAttention] expected x [B, T, ", D,
             "], got ", shape_str(x.shape()));
  LOOM_CHECK(!mask.defined() || mask.dtype() == DType::boolean,
             "[MultiHeadAttention] mask must be bool, got ", dtype_name(mask.dtype()));
  const int64_t B = x.size(0), T = x.size(1);
  const std::vector<Tensor> q_k_v =
      unbind(qkv_->forward(x).view({B, T, 3, H, hd}).permute({2, 0, 3, 1, 4}), 0);
  const Tensor o =
      scaled_dot_product_attention(q_k_v[0], q_k_v[1], q_k_v[2], mask);
  return proj_->forward(o.transpose(1, 2).reshape({B, T, D}));
}

}  // namespace loom::nn
