#include "models/nn/parallel_linear.h"

#include "core/ops/elementwise.h"
#include "core/ops/linalg.h"
#include "models/nn/init.h"
#include "parallel/sp_collectives.h"

namespace loom::nn {

namespace {

// The whole weight as nn::Linear draws it.
Tensor whole_weight(const LinearConfig& config, Generator& gen) {
  Tensor w = empty({config.out_features, config.in_features});
  init::xavier_uniform_(w, gen);
  return w;
}

void check_config(const char* layer, const LinearConfig& config, const ModelParallel& parallel) {
  LOOM_CHECK(config.in_features > 0 && config.out_features > 0, "[", layer,
             "] in_features and out_features must be positive, got ", config.in_features, " and ",
             config.out_features);
  LOOM_CHECK(parallel.tp != nullptr, "[", layer, "] needs a tensor-parallel group (tp is null)");
}

void check_input(const char* layer, const Tensor& x, int64_t features) {
  LOOM_CHECK(x.dim() == 3 && x.size(2) == features, "[", layer, "] expected x [B, T, ", features,
             "], got ", shape_str(x.shape()));
}

Tensor maybe_sum_grad(const Tensor& t, const std::vector<parallel::Group>& groups) {
  return t.defined() ? ModelParallel::sum_grad_over(t, groups) : t;
}

}  // namespace

ColumnParallelLinear::ColumnParallelLinear(const LinearConfig& config,
                                           const ModelParallel& parallel, Generator& gen,
                                           const ColumnParallelOptions& options)
    : config_(config), parallel_(parallel), options_(options) {
  check_config("ColumnParallelLinear", config, parallel);
  const int64_t k = options.fused_blocks, S = parallel.tp_size();
  LOOM_CHECK(k >= 1 && config.out_features % (k * S) == 0, "[ColumnParallelLinear] out_features ",
             config.out_features, " must split into ", k, " fused block(s) over tp ", S,
             ": not divisible by ", k * S);
  const ShardSpec spec = ShardSpec::over(parallel.tp, 0, k);
  weight_ = register_sharded_parameter("weight", whole_weight(config, gen), spec);
  if (config.bias) bias_ = register_sharded_parameter("bias", zeros({config.out_features}), spec);
}

Tensor ColumnParallelLinear::forward(const Tensor& x) const {
  check_input("ColumnParallelLinear", x, config_.in_features);
  const Tensor input = parallel_.sequence_parallel ? parallel::all_gather_along(x, parallel_.tp, 1)
                                                   : parallel::copy_to(x, parallel_.tp);
  const auto groups = parallel_.tp_region_token_groups();
  const Tensor y = linear(input, maybe_sum_grad(weight_, groups), maybe_sum_grad(bias_, groups));
  if (!options_.gather_output) return y;
  const Tensor all = parallel::gather_from(y, parallel_.tp, -1);  // rank-major: [S, k, n]
  const int64_t B = y.size(0), T = y.size(1), S = parallel_.tp_size(), k = options_.fused_blocks;
  if (k == 1) return all;
  return all.view({B, T, S, k, y.size(2) / k}).transpose(2, 3).reshape({B, T, all.size(2)});
}

RowParallelLinear::RowParallelLinear(const LinearConfig& config, const ModelParallel& parallel,
                                     Generator& gen)
    : config_(config), parallel_(parallel) {
  check_config("RowParallelLinear", config, parallel);
  LOOM_CHECK(config.in_features % parallel.tp_size() == 0, "[RowParallelLinear] in_features ",
             config.in_features, " is not divisible by tp ", parallel.tp_size());
  weight_ = register_sharded_parameter("weight", whole_weight(config, gen),
                                       ShardSpec::over(parallel.tp, 1));
  if (config.bias) bias_ = register_parameter("bias", zeros({config.out_features}));
}

Tensor RowParallelLinear::forward(const Tensor& x) const {
  check_input("RowParallelLinear", x, config_.in_features / parallel_.tp_size());
  const Tensor partial =
      linear(x, ModelParallel::sum_grad_over(weight_, parallel_.tp_region_token_groups()));
  const Tensor y = parallel_.sequence_parallel
                       ? parallel::reduce_scatter_along(partial, parallel_.tp, 1)
                       : parallel::reduce_from(partial, parallel_.tp);
  return bias_.defined() ? y + maybe_sum_grad(bias_, parallel_.residual_token_groups()) : y;
}

}  // namespace loom::nn
