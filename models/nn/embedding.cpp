#include "models/nn/embedding.h"

#include "core/ops/nn.h"
#include "models/nn/init.h"

namespace loom::nn {

Embedding::Embedding(const EmbeddingConfig& config, Generator& gen) : config_(config) {
  LOOM_CHECK(config.num_embeddings > 0 && config.dim > 0,
             "[Embedding] num_embeddings and dim must be positive, got ", config.num_embeddings,
             " and ", config.dim);
  weight_ = register_parameter("weight", empty({config.num_embeddings, config.dim}));
  reset_parameters(gen);
}

void Embedding::reset_parameters(Generator& gen) {
  init::normal_(weight_, gen, 0.0, config_.init_std);
}

Tensor Embedding::forward(const Tensor& indices) const {
  LOOM_CHECK(indices.dtype() == DType::i32 || indices.dtype() == DType::i64,
             "[Embedding] indices must be i32 or i64, got ", dtype_name(indices.dtype()));
  return embedding(indices, weight_);
}

}  // namespace loom::nn
