#pragma once
// MultiHeadAttention (timm Attention as used by DiT, ALGORITHMS.md §1.5): self-attention over
// tokens x [B, T, D] with H heads of width hd = D / H.
//   qkv = qkv(x)                         [B, T, 3D], Linear(D -> 3D, bias)
//   q, k, v = qkv viewed [B, T, 3, H, hd] and permuted to [3, B, H, T, hd]
//   o = softmax(q k^T / sqrt(hd) [masked]) v          [B, H, T, hd]
//   y = proj(o transposed to [B, T, H, hd] and flattened to [B, T, D]), Linear(D -> D, bias)
// No qk-norm, no dropout. Children "qkv" and "proj" (timm's names). Init is Linear's
// (Xavier-uniform weights, zero biases; for qkv the fans are those of the whole [3D, D] matrix,
// as in DiT). Attention runs through scaled_dot_product_attention, the reference op a fused kernel
// replaces.
#include <memory>

#include "core/rng.h"
#include "models/nn/linear.h"

namespace loom::nn {

struct MultiHeadAttentionConfig {
  int64_t dim = 0;
  int64_t num_heads = 0;
};

class MultiHeadAttention : public Module {
 public:
  MultiHeadAttention(const MultiHeadAttentionConfig& config, Generator& gen);

  // x [B, T, D] -> [B, T, D]. mask (bool, optional) broadcasts to [B, H, T, T] (e.g. [T, T] or
  // [B, 1, T, T]); true keeps a (query, key) pair. Every query needs at least one kept key.
  Tensor forward(const Tensor& x, const Tensor& mask = Tensor()) const;
  void reset_parameters(Generator& gen);

  const MultiHeadAttentionConfig& config() const { return config_; }
  int64_t head_dim() const { return config_.dim / config_.num_heads; }
  Linear& qkv() const { return *qkv_; }
  Linear& proj() const { return *proj_; }

 private:
  MultiHeadAttentionConfig config_;
  std::shared_ptr<Linear> qkv_, proj_;
};

}  // namespace loom::nn
