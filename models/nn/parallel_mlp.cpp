#include "models/nn/parallel_mlp.h"

#include "core/ops/elementwise.h"

namespace loom::nn {

ParallelMlp::ParallelMlp(const MlpConfig& config, const ModelParallel& parallel, Generator& gen) {
  LOOM_CHECK(config.in_features > 0 && config.hidden_features > 0 && config.out_features >= 0,
             "[ParallelMlp] in_features and hidden_features must be positive and out_features >= "
             "0, got ",
             config.in_features, ", ", config.hidden_features, ", ", config.out_features);
  const int64_t out = config.out_features > 0 ? config.out_features : config.in_features;
  fc1_ = register_module("fc1", std::make_shared<ColumnParallelLinear>(
                                    LinearConfig{.in_features = config.in_features,
                                                 .out_features = config.hidden_features},
                                    parallel, gen));
  fc2_ = register_module(
      "fc2",
      std::make_shared<RowParallelLinear>(
          LinearConfig{.in_features = config.hidden_features, .out_features = out}, parallel, gen));
}

Tensor ParallelMlp::forward(const Tensor& x) const {
  return fc2_->forward(gelu_tanh(fc1_->forward(x)));
}

}  // namespace loom::nn
