#include "models/nn/parallel_attention.h"

#include "core/ops/index.h"
#include "core/ops/nn.h"
#include "parallel/sp_collectives.h"

namespace loom::nn {

ParallelAttention::ParallelAttention(const MultiHeadAttentionConfig& config,
                                     const ModelParallel& parallel, Generator& gen)
    : config_(config), parallel_(parallel) {
  LOOM_CHECK(config.dim > 0 && config.num_heads > 0 && config.dim % config.num_heads == 0,
             "[ParallelAttention] dim must be a positive multiple of num_heads, got dim ",
             config.dim, " and num_heads ", config.num_heads);
  const int64_t split = int64_t(parallel.tp_size()) * parallel.sp_size();
  LOOM_CHECK(config.num_heads % split == 0, "[ParallelAttention] num_heads ", config.num_heads,
             " cannot be split over tp ", parallel.tp_size(), " x sp ", parallel.sp_size(),
             ": not divisible by ", split);
  const int64_t D = config.dim;
  qkv_ = register_module("qkv", std::make_shared<ColumnParallelLinear>(
                                    LinearConfig{.in_features = D, .out_features = 3 * D}, parallel,
                                    gen, ColumnParallelOptions{.fused_blocks = 3}));
  proj_ = register_module(
      "proj", std::make_shared<RowParallelLinear>(LinearConfig{.in_features = D, .out_features = D},
                                                  parallel, gen));
}

Tensor ParallelAttention::forward(const Tensor& x) const {
  const int64_t hd = head_dim(), heads = config_.num_heads / parallel_.tp_size();
  const bool ulysses = parallel_.sp_size() > 1;
  Tensor qkv = qkv_->forward(x);  // [B, T/Q, 3 (H/P) hd]
  const int64_t B = qkv.size(0);
  qkv = qkv.view({B, qkv.size(1), 3, heads, hd});
  if (ulysses) qkv = parallel::all_to_all_along(qkv, parallel_.sp, 3, 1);
  const std::vector<Tensor> q_k_v = unbind(qkv.permute({2, 0, 3, 1, 4}), 0);  // 3 x [B, h, T, hd]
  Tensor o = scaled_dot_product_attention(q_k_v[0], q_k_v[1], q_k_v[2]);
  if (ulysses) o = parallel::all_to_all_along(o, parallel_.sp, 2, 1);  // [B, H/P, T/Q, hd]
  return proj_->forward(o.transpose(1, 2).reshape({B, o.size(2), heads * hd}));
}

}  // namespace loom::nn
