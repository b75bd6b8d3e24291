#pragma once
// Megatron's tensor-parallel linears over ModelParallel::tp (model_parallel.h). Both keep
// nn::Linear's logical layout (y = x W^T + b, weight [out, in]) and parameter names ("weight",
// "bias"), hold this rank's slice of the whole weight with its ShardSpec (sharding.h), and take
// activations x [B, T, features] (tokens at dim 1). S = tp size below.
//
// ColumnParallelLinear splits the output features: the rank holds rows of W and b. With
// fused_blocks k the output features are k equal blocks (q, k, v) and the rank holds its rows of
// each block (spec blocks = k), so its output is its part of every block, in block order.
//   input   sequence_parallel: all_gather_along(x, tp, 1), x [B, T/S, in] -> [B, T, in]
//                              (backward: reduce-scatter, since each rank's rows give a partial
//                              input gradient)
//           otherwise:         copy_to(x, tp) (backward: all-reduce, for the same reason)
//   y       x W_r^T + b_r  [B, T, out/S]
//   output  gather_output: gather_from(y, tp, -1) put back in the logical feature order
//           [B, T, out] (backward: this rank's slice); otherwise y.
// RowParallelLinear splits the input features: the rank holds columns of W; b is replicated.
//   y = x W_r^T for x [B, T, in/S] (a column-parallel layer's output), then
//   sequence_parallel: reduce_scatter_along(y, tp, 1) -> [B, T/S, out] (backward: all-gather)
//   otherwise:         reduce_from(y, tp)             -> [B, T, out]   (backward: identity)
//   and + b after the reduction.
// Under Ulysses sequence parallelism these layers see T / sp of the tokens, so the weights (and
// the column bias) enter through ModelParallel::sum_grad_over(tp_region_token_groups()); the row
// bias, added in the residual stream, through residual_token_groups(). Gradients are therefore the
// exact ones of this rank's slice (model_parallel.h).
//
// Init: the whole weight is drawn as nn::Linear draws it (Xavier-uniform with the whole tensor's
// fans, one draw of the whole shape from the same generator) and sliced; biases are zero. A model
// built from the same generator state holds exactly the single-rank parameters, and the
// generator advances as it would for nn::Linear. Misuse throws loom::Error naming the layer and
// the sizes.
#include "core/rng.h"
#include "models/nn/linear.h"
#include "models/nn/model_parallel.h"
#include "models/nn/sharding.h"

namespace loom::nn {

struct ColumnParallelOptions {
  int64_t fused_blocks = 1;
  bool gather_output = false;
};

class ColumnParallelLinear : public ShardedModule {
 public:
  // config holds the whole sizes; out_features must be divisible by fused_blocks * tp.
  ColumnParallelLinear(const LinearConfig& config, const ModelParallel& parallel, Generator& gen,
                       const ColumnParallelOptions& options = {});

  Tensor forward(const Tensor& x) const;

  const LinearConfig& config() const { return config_; }
  const Tensor& weight() const { return weight_; }  // [out / S, in]
  const Tensor& bias() const { return bias_; }      // [out / S], undefined without bias

 private:
  LinearConfig config_;
  ModelParallel parallel_;
  ColumnParallelOptions options_;
  Tensor weight_, bias_;
};

class RowParallelLinear : public ShardedModule {
 public:
  // config holds the whole sizes; in_features must be divisible by tp.
  RowParallelLinear(const LinearConfig& config, const ModelParallel& parallel, Generator& gen);

  Tensor forward(const Tensor& x) const;

  const LinearConfig& config() const { return config_; }
  const Tensor& weight() const { return weight_; }  // [out, in / S]
  const Tensor& bias() const { return bias_; }      // [out], replicated; undefined without bias

 private:
  LinearConfig config_;
  ModelParallel parallel_;
  Tensor weight_, bias_;
};

}  // namespace loom::nn
