#pragma once
// Embedding: a lookup table. indices [...] (i32 or i64) -> [..., dim]; parameter "weight"
// [num_embeddings, dim] drawn from N(0, init_std^2). The default std 1 is PyTorch's; DiT's label
// table (with its extra null-class row for classifier-free guidance) uses 0.02 (ALGORITHMS.md
// §1.4).
#include "core/rng.h"
#include "models/nn/module.h"

namespace loom::nn {

struct EmbeddingConfig {
  int64_t num_embeddings = 0;
  int64_t dim = 0;
  double init_std = 1.0;
};

class Embedding : public Module {
 public:
  Embedding(const EmbeddingConfig& config, Generator& gen);

  // indices [...] -> [..., dim]; an index outside [0, num_embeddings) throws.
  Tensor forward(const Tensor& indices) const;
  void reset_parameters(Generator& gen);

  const EmbeddingConfig& config() const { return config_; }
  const Tensor& weight() const { return weight_; }

 private:
  EmbeddingConfig config_;
  Tensor weight_;
};

}  // namespace loom::nn
