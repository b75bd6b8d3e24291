#pragma once
// ParallelAttention: nn::MultiHeadAttention (DiT's timm attention) split by heads over tp and,
// with Ulysses, over sp (model_parallel.h). Same children and parameter names ("qkv", "proj"),
// same init draws, so it holds slices of exactly the single-rank parameters.
//
// With H heads of width hd, tp size P and sp size Q (H divisible by P * Q), the rank at tp index
// t and sp index s computes heads t * H/P + s * H/(P Q) + [0, H/(P Q)):
//   x       [B, Tx, D]  residual-stream tokens: T / Q, or T / (Q P) under sequence_parallel
//   qkv     ColumnParallelLinear(D -> 3D, fused_blocks 3): this tp rank's H/P heads of q, k, v
//           -> [B, T/Q, 3, H/P, hd]
//   Ulysses all_to_all_along(sp, heads -> tokens) -> [B, T, 3, H/(P Q), hd]   (when Q > 1)
//   o       softmax(q k^T / sqrt(hd)) v over all T tokens -> [B, H/(P Q), T, hd]
//   Ulysses all_to_all_along(sp, tokens -> heads) -> [B, H/P, T/Q, hd]       (when Q > 1)
//   proj    RowParallelLinear(D -> D) of o as [B, T/Q, (H/P) hd] -> [B, Tx, D]
// Each all-to-all's backward is the other one (sp_collectives.h); the linears' collectives are
// parallel_linear.h's. No mask, no qk-norm, no dropout (DiT's attention).
#include <memory>

#include "core/rng.h"
#include "models/nn/attention.h"
#include "models/nn/model_parallel.h"
#include "models/nn/parallel_linear.h"

namespace loom::nn {

class ParallelAttention : public Module {
 public:
  // Throws unless num_heads is divisible by tp * sp.
  ParallelAttention(const MultiHeadAttentionConfig& config, const ModelParallel& parallel,
                    Generator& gen);

  // x [B, Tx, D] -> [B, Tx, D] (Tx as above).
  Tensor forward(const Tensor& x) const;

  const MultiHeadAttentionConfig& config() const { return config_; }
  int64_t head_dim() const { return config_.dim / config_.num_heads; }
  ColumnParallelLinear& qkv() const { return *qkv_; }
  RowParallelLinear& proj() const { return *proj_; }

 private:
  MultiHeadAttentionConfig config_;
  ModelParallel parallel_;
  std::shared_ptr<ColumnParallelLinear> qkv_;
  std::shared_ptr<RowParallelLinear> proj_;
};

}  // namespace loom::nn
