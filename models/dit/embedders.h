#pragma once
// The input side of a DiT (ALGORITHMS.md §1.2-§1.4): patch embedding, the fixed 2-D sin-cos
// position embedding, the timestep embedder and the label embedder with class dropout, plus the
// two free functions the embedders are built on (exposed so tests and samplers can check them).
//
//   PatchEmbed        x [B, C, I, I]  -> [B, T, D], T = (I/p)^2, tokens row-major (row h, col w)
//   TimestepEmbedder  t [B] (float)   -> [B, D]
//   LabelEmbedder     y [B] (integer) -> [B, D]
//
// Parameter names follow the reference DiT's state dict (facebookresearch/DiT models.py), so its
// checkpoints map one to one: "proj.weight" / "proj.bias" (PatchEmbed), "mlp.0.weight",
// "mlp.0.bias", "mlp.2.weight", "mlp.2.bias" (TimestepEmbedder: Linear, SiLU, Linear) and
// "embedding_table.weight" (LabelEmbedder).
#include <memory>

#include "core/rng.h"
#include "core/tensor.h"
#include "models/nn/conv.h"
#include "models/nn/embedding.h"
#include "models/nn/linear.h"
#include "models/nn/module.h"

namespace loom::dit {

// Sinusoidal frequency embedding of (possibly fractional) timesteps: t [N] floating ->
// [N, dim] of t's dtype, [cos(t f_k) for k < dim/2] ++ [sin(t f_k) for k < dim/2] (cos first) with
// f_k = exp(-ln(max_period) k / (dim/2)). t is used as given (DDPM step index or RF t in (0, 1),
// no rescaling). dim must be even and positive. Differentiable in t. t = 0 gives [1]*half ++
// [0]*half.
Tensor timestep_frequency_embedding(const Tensor& t, int64_t dim = 256,
                                    double max_period = 10000.0);

// Fixed MAE-style 2-D sin-cos position embedding for a grid x grid token map: [grid^2, dim] of
// `dtype`, computed in double. Row h*grid + w is [sin(w ω), cos(w ω), sin(h ω), cos(h ω)] with
// ω_j = 1 / 10000^(j / (dim/4)), j < dim/4: the column coordinate w comes first (the reference's
// meshgrid order). dim must be a positive multiple of 4.
Tensor sincos_pos_embed_2d(int64_t dim, int64_t grid, DType dtype = DType::f32);

struct PatchEmbedConfig {
  int64_t input_size = 0;  // I: the input is I x I
  int64_t patch_size = 0;  // p, dividing I
  int64_t in_channels = 0;
  int64_t hidden_size = 0;  // D
};

// Conv2d(C -> D, kernel = stride = p, bias), flattened to tokens. Init: Xavier-uniform on the
// weight viewed as [D, C p p], zero bias (nn::Conv2d's default).
class PatchEmbed : public nn::Module {
 public:
  PatchEmbed(const PatchEmbedConfig& config, Generator& gen);

  // x [B, C, I, I] -> [B, T, D]; throws unless x has C channels and an I x I extent.
  Tensor forward(const Tensor& x) const;

  const PatchEmbedConfig& config() const { return config_; }
  int64_t grid_size() const { return config_.input_size / config_.patch_size; }
  int64_t num_tokens() const { return grid_size() * grid_size(); }
  nn::Conv2d& proj() const { return *proj_; }

 private:
  PatchEmbedConfig config_;
  std::shared_ptr<nn::Conv2d> proj_;
};

struct TimestepEmbedderConfig {
  int64_t hidden_size = 0;                 // D
  int64_t frequency_embedding_size = 256;  // even
};

// mlp(timestep_frequency_embedding(t)), mlp = Linear(256 -> D), SiLU, Linear(D -> D). Init: both
// weights N(0, 0.02), biases zero.
class TimestepEmbedder : public nn::Module {
 public:
  TimestepEmbedder(const TimestepEmbedderConfig& config, Generator& gen);

  // t [B] floating (converted to the weights' dtype) -> [B, D].
  Tensor forward(const Tensor& t) const;

  const TimestepEmbedderConfig& config() const { return config_; }
  nn::Linear& fc1() const { return *fc1_; }
  nn::Linear& fc2() const { return *fc2_; }

 private:
  TimestepEmbedderConfig config_;
  std::shared_ptr<nn::Linear> fc1_, fc2_;
};

struct LabelEmbedderConfig {
  int64_t num_classes = 0;
  int64_t hidden_size = 0;  // D
  double dropout_prob = 0.0;
};

// Class-label table. With dropout_prob > 0 it has num_classes + 1 rows, the last one (index
// num_classes) being the "null" class of classifier-free guidance; with dropout_prob == 0 it has
// num_classes rows and no null class, as in the reference. Init N(0, 0.02).
class LabelEmbedder : public nn::Module {
 public:
  LabelEmbedder(const LabelEmbedderConfig& config, Generator& gen);

  // y [B] i32/i64 in [0, num_classes] -> [B, D]. In training mode with dropout_prob > 0 and a
  // generator given, each label is replaced by the null class independently with probability
  // dropout_prob (one bernoulli draw of B values from `dropout`); otherwise labels are used as
  // given (the null index itself is accepted whenever the table has that row).
  Tensor forward(const Tensor& y, Generator* dropout = nullptr) const;
  // The labels forward would embed: y, or y with dropped entries set to the null class.
  Tensor drop_labels(const Tensor& y, Generator& dropout) const;

  const LabelEmbedderConfig& config() const { return config_; }
  bool has_null_class() const { return config_.dropout_prob > 0; }
  int64_t null_class() const { return config_.num_classes; }
  nn::Embedding& table() const { return *table_; }

 private:
  LabelEmbedderConfig config_;
  std::shared_ptr<nn::Embedding> table_;
};

}  // namespace loom::dit
