#include "models/dit/embedders.h"

#include <cmath>
#include <vector>

#include "core/ops/elementwise.h"
#include "core/ops/index.h"
#include "models/nn/init.h"

namespace loom::dit {

Tensor timestep_frequency_embedding(const Tensor& t, int64_t dim, double max_period) {
  LOOM_CHECK(t.dim() == 1 && is_floating(t.dtype()),
             "[DiT] timesteps must be a floating [B] tensor, got ", shape_str(t.shape()), " ",
             dtype_name(t.dtype()));
  LOOM_CHECK(dim > 0 && dim % 2 == 0,
             "[DiT] frequency embedding dim must be even and positive, got ", dim);
  LOOM_CHECK(max_period > 0, "[DiT] max_period must be positive, got ", max_period);
  const int64_t half = dim / 2;
  std::vector<double> freqs(size_t(half), 0.0);
  // Same association as the reference, -(ln P) * k / half, so f64 runs agree to the last bit.
  for (int64_t k = 0; k < half; ++k)
    freqs[size_t(k)] = std::exp(-std::log(max_period) * double(k) / double(half));
  const Tensor args = t.unsqueeze(1) * from_vector(freqs, {1, half}, t.dtype()).to(t.device());
  return cat({cos(args), sin(args)}, 1);
}

Tensor sincos_pos_embed_2d(int64_t dim, int64_t grid, DType dtype) {
  LOOM_CHECK(dim > 0 && dim % 4 == 0, "[DiT] sin-cos position embedding needs dim % 4 == 0, got ",
             dim);
  LOOM_CHECK(grid > 0, "[DiT] grid size must be positive, got ", grid);
  const int64_t q = dim / 4;
  std::vector<double> omega(static_cast<size_t>(q));
  for (int64_t j = 0; j < q; ++j) omega[size_t(j)] = 1.0 / std::pow(10000.0, double(j) / double(q));
  std::vector<double> out(size_t(grid * grid * dim));
  for (int64_t h = 0; h < grid; ++h)
    for (int64_t w = 0; w < grid; ++w) {
      double* row = out.data() + (h * grid + w) * dim;
      for (int64_t j = 0; j < q; ++j) {
        row[j] = std::sin(double(w) * omega[size_t(j)]);
        row[q + j] = std::cos(double(w) * omega[size_t(j)]);
        row[2 * q + j] = std::sin(double(h) * omega[size_t(j)]);
        row[3 * q + j] = std::cos(double(h) * omega[size_t(j)]);
      }
    }
  return from_vector(out, {grid * grid, dim}, dtype);
}

// -- PatchEmbed ----------------------------------------------------------------------------------

PatchEmbed::PatchEmbed(const PatchEmbedConfig& config, Generator& gen) : config_(config) {
  LOOM_CHECK(
      config.patch_size > 0 && config.input_size > 0 && config.input_size % config.patch_size == 0,
      "[DiT] input_size must be a positive multiple of patch_size, got input_size ",
      config.input_size, " and patch_size ", config.patch_size);
  const int64_t p = config.patch_size;
  proj_ = register_module(
      "proj", std::make_shared<nn::Conv2d>(nn::Conv2dConfig{.in_channels = config.in_channels,
                                                            .out_channels = config.hidden_size,
                                                            .kernel_size = {p, p},
                                                            .stride = {p, p}},
                                           gen));
}

Tensor PatchEmbed::forward(const Tensor& x) const {
  const int64_t I = config_.input_size;
  LOOM_CHECK(x.dim() == 4 && x.size(1) == config_.in_channels && x.size(2) == I && x.size(3) == I,
             "[DiT] expected x [B, ", config_.in_channels, ", ", I, ", ", I, "], got ",
             shape_str(x.shape()));
  // [B, D, G, G] -> [B, D, T] -> [B, T, D]; the transpose stays a view, the first consumer
  // (the position add) materializes it.
  return proj_->forward(x).flatten(2).transpose(1, 2);
}

// -- TimestepEmbedder ----------------------------------------------------------------------------

TimestepEmbedder::TimestepEmbedder(const TimestepEmbedderConfig& config, Generator& gen)
    : config_(config) {
  LOOM_CHECK(config.hidden_size > 0, "[DiT] hidden_size must be positive, got ",
             config.hidden_size);
  LOOM_CHECK(config.frequency_embedding_size > 0 && config.frequency_embedding_size % 2 == 0,
             "[DiT] frequency_embedding_size must be even and positive, got ",
             config.frequency_embedding_size);
  // "mlp.0" / "mlp.2" mirror the reference's nn.Sequential(Linear, SiLU, Linear).
  auto mlp = register_module("mlp", std::make_shared<nn::Module>());
  fc1_ = mlp->register_module(
      "0",
      std::make_shared<nn::Linear>(nn::LinearConfig{.in_features = config.frequency_embedding_size,
                                                    .out_features = config.hidden_size},
                                   gen));
  fc2_ = mlp->register_module(
      "2", std::make_shared<nn::Linear>(nn::LinearConfig{.in_features = config.hidden_size,
                                                         .out_features = config.hidden_size},
                                        gen));
  nn::init::normal_(fc1_->weight(), gen, 0.0, 0.02);
  nn::init::normal_(fc2_->weight(), gen, 0.0, 0.02);
}

Tensor TimestepEmbedder::forward(const Tensor& t) const {
  LOOM_CHECK(t.dim() == 1 && is_floating(t.dtype()),
             "[DiT] timesteps must be a floating [B] tensor, got ", shape_str(t.shape()), " ",
             dtype_name(t.dtype()));
  const DType dt = fc1_->weight().dtype();
  const Tensor freq = timestep_frequency_embedding(t.dtype() == dt ? t : t.to(dt),
                                                   config_.frequency_embedding_size);
  return fc2_->forward(silu(fc1_->forward(freq)));
}

// -- LabelEmbedder -------------------------------------------------------------------------------

LabelEmbedder::LabelEmbedder(const LabelEmbedderConfig& config, Generator& gen) : config_(config) {
  LOOM_CHECK(config.num_classes > 0, "[DiT] num_classes must be positive, got ",
             config.num_classes);
  LOOM_CHECK(config.dropout_prob >= 0 && config.dropout_prob <= 1,
             "[DiT] class_dropout_prob must be in [0, 1], got ", config.dropout_prob);
  const int64_t rows = config.num_classes + (config.dropout_prob > 0 ? 1 : 0);
  table_ = register_module(
      "embedding_table",
      std::make_shared<nn::Embedding>(
          nn::EmbeddingConfig{.num_embeddings = rows, .dim = config.hidden_size, .init_std = 0.02},
          gen));
}

Tensor LabelEmbedder::drop_labels(const Tensor& y, Generator& dropout) const {
  LOOM_CHECK(has_null_class(),
             "[DiT] label dropout needs a null class, i.e. class_dropout_prob > 0");
  const Tensor drop = bernoulli(y.shape(), config_.dropout_prob, dropout).to(y.device());
  return where(drop, full_like(y, double(null_class())), y);
}

Tensor LabelEmbedder::forward(const Tensor& y, Generator* dropout) const {
  LOOM_CHECK(y.dim() == 1 && (y.dtype() == DType::i64 || y.dtype() == DType::i32),
             "[DiT] labels must be an i32/i64 [B] tensor, got ", shape_str(y.shape()), " ",
             dtype_name(y.dtype()));
  if (dropout != nullptr && is_training() && has_null_class())
    return table_->forward(drop_labels(y, *dropout));
  return table_->forward(y);
}

}  // namespace loom::dit
