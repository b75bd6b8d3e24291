#include "models/dit/dit.h"

#include <sstream>
#include <utility>

#include "core/checkpoint.h"
#include "core/ops/adaln.h"
#include "core/ops/elementwise.h"
#include "core/ops/index.h"
#include "core/ops/linalg.h"
#include "models/nn/init.h"

namespace loom::dit {

namespace {

constexpr double kNormEps = 1e-6;

struct Backbone {
  const char* name;
  int64_t depth, hidden_size, num_heads;
};
constexpr Backbone kBackbones[] = {{"S", 12, 384, 6},
                                   {"B", 12, 768, 12},
                                   {"L", 24, 1024, 16},
                                   {"XL", 28, 1152, 16},
                                   {"G", 40, 1408, 16}};

std::vector<std::pair<std::string, DiTConfig>> named_configs() {
  std::vector<std::pair<std::string, DiTConfig>> out;
  for (const Backbone& b : kBackbones) {
    const std::vector<int64_t> patches =
        std::string(b.name) == "G" ? std::vector<int64_t>{2} : std::vector<int64_t>{2, 4, 8};
    for (int64_t p : patches)
      out.emplace_back(std::string("DiT-") + b.name + "/" + std::to_string(p),
                       DiTConfig{.patch_size = p,
                                 .hidden_size = b.hidden_size,
                                 .depth = b.depth,
                                 .num_heads = b.num_heads});
  }
  const std::pair<const char*, int64_t> moe[] = {
      {"S", 8}, {"S", 16}, {"B", 8}, {"XL", 8}, {"G", 16}};
  for (const auto& [size, experts] : moe)
    for (const Backbone& b : kBackbones)
      if (std::string(b.name) == size)
        out.emplace_back(std::string("DiT-MoE-") + size + "/2-" + std::to_string(experts) + "E2A",
                         DiTConfig{.patch_size = 2,
                                   .hidden_size = b.hidden_size,
                                   .depth = b.depth,
                                   .num_heads = b.num_heads,
                                   .num_experts = experts,
                                   .top_k = 2,
                                   .num_shared_experts = 2});
  return out;
}

int64_t ffn_hidden(const DiTConfig& cfg) {
  return static_cast<int64_t>(double(cfg.hidden_size) * cfg.mlp_ratio);
}

int64_t num_tokens_of(const DiTConfig& cfg) {
  const int64_t grid = cfg.input_size / cfg.patch_size;
  return grid * grid;
}

int64_t out_channels_of(const DiTConfig& cfg) {
  return cfg.learn_sigma ? 2 * cfg.in_channels : cfg.in_channels;
}

void validate(const DiTConfig& cfg) {
  LOOM_CHECK(cfg.input_size > 0 && cfg.patch_size > 0 && cfg.input_size % cfg.patch_size == 0,
             "[DiT] input_size must be a positive multiple of patch_size, got input_size ",
             cfg.input_size, " and patch_size ", cfg.patch_size);
  LOOM_CHECK(cfg.in_channels > 0, "[DiT] in_channels must be positive, got ", cfg.in_channels);
  LOOM_CHECK(cfg.depth >= 0, "[DiT] depth must be >= 0, got ", cfg.depth);
  LOOM_CHECK(
      cfg.hidden_size > 0 && cfg.hidden_size % 4 == 0,
      "[DiT] hidden_size must be a positive multiple of 4 (sin-cos position embedding), got ",
      cfg.hidden_size);
  LOOM_CHECK(cfg.num_heads > 0 && cfg.hidden_size % cfg.num_heads == 0,
             "[DiT] hidden_size must be divisible by num_heads, got hidden_size ", cfg.hidden_size,
             " and num_heads ", cfg.num_heads);
  LOOM_CHECK(ffn_hidden(cfg) > 0, "[DiT] mlp_ratio * hidden_size must be >= 1, got mlp_ratio ",
             cfg.mlp_ratio);
  LOOM_CHECK(cfg.num_classes > 0, "[DiT] num_classes must be positive, got ", cfg.num_classes);
  LOOM_CHECK(cfg.class_dropout_prob >= 0 && cfg.class_dropout_prob <= 1,
             "[DiT] class_dropout_prob must be in [0, 1], got ", cfg.class_dropout_prob);
  LOOM_CHECK(cfg.num_experts >= 0, "[DiT] num_experts must be >= 0 (0 = dense), got ",
             cfg.num_experts);
  if (cfg.num_experts > 0) {
    LOOM_CHECK(cfg.top_k >= 1 && cfg.top_k <= cfg.num_experts,
               "[DiT] top_k must be in [1, num_experts], got top_k ", cfg.top_k,
               " and num_experts ", cfg.num_experts);
    LOOM_CHECK(cfg.num_shared_experts >= 0, "[DiT] num_shared_experts must be >= 0, got ",
               cfg.num_shared_experts);
    LOOM_CHECK(cfg.aux_loss_coef >= 0, "[DiT] aux_loss_coef must be >= 0, got ", cfg.aux_loss_coef);
  }
}

// Per-block parameters of the routed experts alone, and of everything else in the block.
int64_t routed_expert_params(const DiTConfig& cfg) {
  return 3 * cfg.hidden_size * ffn_hidden(cfg);  // SwiGLU gate, up, down; no biases
}

int64_t block_params_without_experts(const DiTConfig& cfg) {
  const int64_t D = cfg.hidden_size, F = ffn_hidden(cfg);
  const int64_t attn = 4 * D * D + 4 * D, ada = 6 * D * D + 6 * D;
  if (cfg.num_experts == 0) return attn + ada + 2 * D * F + F + D;
  const int64_t shared = 3 * D * cfg.num_shared_experts * D;
  return attn + ada + cfg.num_experts * D + shared;
}

int64_t non_block_params(const DiTConfig& cfg) {
  const int64_t D = cfg.hidden_size, p = cfg.patch_size, C = cfg.in_channels;
  const int64_t x_embed = D * C * p * p + D;
  const int64_t t_embed = 256 * D + D + D * D + D;
  const int64_t y_embed = (cfg.num_classes + (cfg.class_dropout_prob > 0 ? 1 : 0)) * D;
  const int64_t out = p * p * out_channels_of(cfg);
  const int64_t final_layer = 2 * D * D + 2 * D + D * out + out;
  return x_embed + t_embed + y_embed + final_layer;
}

}  // namespace

std::vector<std::string> dit_config_names() {
  std::vector<std::string> names;
  for (const auto& [name, cfg] : named_configs()) names.push_back(name);
  return names;
}

DiTConfig dit_config(const std::string& name) {
  const auto configs = named_configs();
  for (const auto& [n, cfg] : configs)
    if (n == name) return cfg;
  std::ostringstream known;
  for (size_t i = 0; i < configs.size(); ++i) known << (i ? ", " : "") << configs[i].first;
  LOOM_FAIL("[DiT] unknown config '", name, "'; known: ", known.str());
}

int64_t count_parameters(const DiTConfig& cfg, bool include_pos_embed) {
  validate(cfg);
  int64_t block = block_params_without_experts(cfg);
  if (cfg.num_experts > 0) block += cfg.num_experts * routed_expert_params(cfg);
  int64_t total = non_block_params(cfg) + cfg.depth * block;
  if (include_pos_embed) {
    const int64_t grid = cfg.input_size / cfg.patch_size;
    total += grid * grid * cfg.hidden_size;
  }
  return total;
}

int64_t count_activated_parameters(const DiTConfig& cfg) {
  if (cfg.num_experts == 0) return count_parameters(cfg);
  validate(cfg);
  return count_parameters(cfg) -
         cfg.depth * (cfg.num_experts - cfg.top_k) * routed_expert_params(cfg);
}

Tensor unpatchify(const Tensor& tokens, int64_t patch_size, int64_t channels) {
  const int64_t p = patch_size, C = channels;
  LOOM_CHECK(p > 0 && C > 0, "[DiT] unpatchify needs positive patch_size and channels, got ", p,
             " and ", C);
  LOOM_CHECK(tokens.dim() == 3 && tokens.size(2) == p * p * C,
             "[DiT] unpatchify expected tokens [B, T, ", p * p * C, "], got ",
             shape_str(tokens.shape()));
  const int64_t B = tokens.size(0), T = tokens.size(1);
  int64_t G = 0;
  while ((G + 1) * (G + 1) <= T) ++G;
  LOOM_CHECK(G * G == T, "[DiT] unpatchify needs a square token count, got T = ", T);
  return tokens.reshape({B, G, G, p, p, C})
      .permute({0, 5, 1, 3, 2, 4})
      .reshape({B, C, G * p, G * p});
}

// -- DiTBlock ------------------------------------------------------------------------------------

DiTBlock::DiTBlock(const DiTConfig& cfg, Generator& gen, const nn::ModelParallel* parallel)
    : hidden_size_(cfg.hidden_size), parallel_(parallel ? *parallel : nn::ModelParallel{}) {
  validate(cfg);
  const int64_t D = cfg.hidden_size;
  const nn::MultiHeadAttentionConfig attn{.dim = D, .num_heads = cfg.num_heads};
  const nn::MlpConfig mlp{.in_features = D, .hidden_features = ffn_hidden(cfg)};
  if (parallel) {
    parallel_attn_ =
        register_module("attn", std::make_shared<nn::ParallelAttention>(attn, *parallel, gen));
  } else {
    attn_ = register_module("attn", std::make_shared<nn::MultiHeadAttention>(attn, gen));
  }
  if (cfg.num_experts == 0 && parallel) {
    parallel_mlp_ = register_module("mlp", std::make_shared<nn::ParallelMlp>(mlp, *parallel, gen));
  } else if (cfg.num_experts == 0) {
    mlp_ = register_module("mlp", std::make_shared<nn::Mlp>(mlp, gen));
  } else {
    moe_ = register_module("moe",
                           std::make_shared<moe::MoELayer>(
                               moe::MoEConfig{.d_model = D,
                                              .n_experts = cfg.num_experts,
                                              .top_k = cfg.top_k,
                                              .d_ff = ffn_hidden(cfg),
                                              .shared_hidden = cfg.num_shared_experts * D,
                                              .aux_loss_coef = cfg.aux_loss_coef,
                                              .capacity_factor = cfg.capacity_factor,
                                              .aux_loss_global_counts = cfg.aux_loss_global_counts},
                               gen, parallel ? parallel->ep : nullptr));
  }
  auto ada = register_module("adaLN_modulation", std::make_shared<nn::Module>());
  ada_ = ada->register_module(
      "1",
      std::make_shared<nn::Linear>(nn::LinearConfig{.in_features = D, .out_features = 6 * D}, gen));
  nn::init::zeros_(ada_->weight());
  nn::init::zeros_(ada_->bias());
}

nn::MultiHeadAttention& DiTBlock::attn() const {
  LOOM_CHECK(attn_ != nullptr, "[DiT] this block is parallel; use parallel_attn()");
  return *attn_;
}

nn::ParallelAttention& DiTBlock::parallel_attn() const {
  LOOM_CHECK(parallel_attn_ != nullptr, "[DiT] this block is single-rank; use attn()");
  return *parallel_attn_;
}

nn::Mlp& DiTBlock::mlp() const {
  LOOM_CHECK(!moe_, "[DiT] this block is MoE; it has no dense mlp");
  LOOM_CHECK(mlp_ != nullptr, "[DiT] this block is parallel; use parallel_mlp()");
  return *mlp_;
}

nn::ParallelMlp& DiTBlock::parallel_mlp() const {
  LOOM_CHECK(!moe_, "[DiT] this block is MoE; it has no dense mlp");
  LOOM_CHECK(parallel_mlp_ != nullptr, "[DiT] this block is single-rank; use mlp()");
  return *parallel_mlp_;
}

moe::MoELayer& DiTBlock::moe() const {
  LOOM_CHECK(moe_ != nullptr, "[DiT] this block is dense; it has no MoE layer");
  return *moe_;
}

DiTBlock::Output DiTBlock::forward(const Tensor& x, const Tensor& silu_c) const {
  const int64_t D = hidden_size_;
  LOOM_CHECK(x.dim() == 3 && x.size(2) == D, "[DiT] block expected x [B, T, ", D, "], got ",
             shape_str(x.shape()));
  LOOM_CHECK(silu_c.dim() == 2 && silu_c.size(0) == x.size(0) && silu_c.size(1) == D,
             "[DiT] block expected c [", x.size(0), ", ", D, "], got ", shape_str(silu_c.shape()));
  // [B, 1, 6D] split into six [B, 1, D] views that broadcast over tokens. When tokens are split,
  // the modulation (the same on every rank) meets only this rank's tokens: sum its gradient.
  const Tensor mod =
      nn::ModelParallel::sum_grad_over(ada_->forward(silu_c), parallel_.residual_token_groups());
  const std::vector<Tensor> m = chunk(mod.unsqueeze(1), 6, 2);
  // Each residual passes through its LayerNorm op, whose backward then adds the residual's
  // gradient (core/ops/adaln.h).
  const NormedAndResidual a = layer_norm_modulate_residual(x, m[0], m[1], kNormEps);
  const Tensor h = gated_residual(a.residual, m[2], attention(a.normed));
  const NormedAndResidual f = layer_norm_modulate_residual(h, m[3], m[4], kNormEps);
  Output out;
  out.x = gated_residual(f.residual, m[5], feed_forward(f.normed, &out));
  return out;
}

Tensor DiTBlock::attention(const Tensor& z) const {
  return parallel_attn_ ? parallel_attn_->forward(z) : attn_->forward(z);
}

Tensor DiTBlock::feed_forward(const Tensor& z, Output* out) const {
  if (!moe_) return parallel_mlp_ ? parallel_mlp_->forward(z) : mlp_->forward(z);
  // Experts are replicated: routing and the balance loss need every token, so each rank runs the
  // whole sequence and keeps its own tokens of the result (identities when tokens are not split).
  moe::MoELayer::Output o = moe_->forward(parallel_.gather_tokens(z));
  out->aux_loss = std::move(o.aux_loss);
  out->expert_counts = std::move(o.expert_counts);
  return parallel_.shard_tokens(o.y);
}

// -- FinalLayer ----------------------------------------------------------------------------------

FinalLayer::FinalLayer(int64_t hidden_size, int64_t patch_size, int64_t out_channels,
                       Generator& gen, const nn::ModelParallel* parallel)
    : hidden_size_(hidden_size), parallel_(parallel ? *parallel : nn::ModelParallel{}) {
  const int64_t D = hidden_size;
  auto ada = register_module("adaLN_modulation", std::make_shared<nn::Module>());
  ada_ = ada->register_module(
      "1",
      std::make_shared<nn::Linear>(nn::LinearConfig{.in_features = D, .out_features = 2 * D}, gen));
  linear_ = register_module(
      "linear", std::make_shared<nn::Linear>(
                    nn::LinearConfig{.in_features = D,
                                     .out_features = patch_size * patch_size * out_channels},
                    gen));
  for (const Tensor& t : {ada_->weight(), ada_->bias(), linear_->weight(), linear_->bias()})
    nn::init::zeros_(t);
}

Tensor FinalLayer::forward(const Tensor& x, const Tensor& silu_c) const {
  LOOM_CHECK(x.dim() == 3 && x.size(2) == hidden_size_, "[DiT] final layer expected x [B, T, ",
             hidden_size_, "], got ", shape_str(x.shape()));
  LOOM_CHECK(silu_c.dim() == 2 && silu_c.size(0) == x.size(0) && silu_c.size(1) == hidden_size_,
             "[DiT] final layer expected c [", x.size(0), ", ", hidden_size_, "], got ",
             shape_str(silu_c.shape()));
  // Replicated tensors that meet only this rank's tokens: their gradients are summed.
  const auto groups = parallel_.residual_token_groups();
  const auto replicated = [&](const Tensor& t) {
    return nn::ModelParallel::sum_grad_over(t, groups);
  };
  const std::vector<Tensor> m = chunk(replicated(ada_->forward(silu_c)).unsqueeze(1), 2, 2);
  return loom::linear(layer_norm_modulate(x, m[0], m[1], kNormEps), replicated(linear_->weight()),
                      replicated(linear_->bias()));
}

// -- DiT -----------------------------------------------------------------------------------------

DiT::DiT(const DiTConfig& cfg, Generator& init_gen, const nn::ModelParallel* parallel)
    : cfg_(cfg), parallel_(parallel ? *parallel : nn::ModelParallel{}) {
  validate(cfg);
  if (parallel) {
    LOOM_CHECK(parallel->tp != nullptr,
               "[DiT] a parallel model needs the tp group (ModelParallel::from_grid sets it)");
    parallel->residual_tokens(num_tokens_of(cfg));
  }
  const int64_t D = cfg.hidden_size;
  x_embedder_ = register_module(
      "x_embedder", std::make_shared<PatchEmbed>(PatchEmbedConfig{.input_size = cfg.input_size,
                                                                  .patch_size = cfg.patch_size,
                                                                  .in_channels = cfg.in_channels,
                                                                  .hidden_size = D},
                                                 init_gen));
  t_embedder_ = register_module(
      "t_embedder",
      std::make_shared<TimestepEmbedder>(TimestepEmbedderConfig{.hidden_size = D}, init_gen));
  y_embedder_ = register_module(
      "y_embedder",
      std::make_shared<LabelEmbedder>(LabelEmbedderConfig{.num_classes = cfg.num_classes,
                                                          .hidden_size = D,
                                                          .dropout_prob = cfg.class_dropout_prob},
                                      init_gen));
  const int64_t grid = x_embedder_->grid_size();
  pos_embed_ = register_buffer("pos_embed", sincos_pos_embed_2d(D, grid).view({1, grid * grid, D}));
  auto blocks = register_module("blocks", std::make_shared<nn::Module>());
  for (int64_t i = 0; i < cfg.depth; ++i)
    blocks_.push_back(blocks->register_module(std::to_string(i),
                                              std::make_shared<DiTBlock>(cfg, init_gen, parallel)));
  final_layer_ = register_module(
      "final_layer",
      std::make_shared<FinalLayer>(D, cfg.patch_size, out_channels_of(cfg), init_gen, parallel));
}

DiT::Output DiT::forward(const Tensor& x, const Tensor& t, const Tensor& y,
                         Generator* label_dropout) const {
  LOOM_CHECK(x.dim() == 4, "[DiT] expected x [B, C, H, W], got ", shape_str(x.shape()));
  const int64_t B = x.size(0);
  LOOM_CHECK(x.dtype() == pos_embed_.dtype(), "[DiT] x has dtype ", dtype_name(x.dtype()),
             " but the model is ", dtype_name(pos_embed_.dtype()));
  LOOM_CHECK(t.dim() == 1 && t.size(0) == B, "[DiT] expected t [", B, "], got ",
             shape_str(t.shape()));
  LOOM_CHECK(y.dim() == 1 && y.size(0) == B, "[DiT] expected y [", B, "], got ",
             shape_str(y.shape()));
  const Tensor tokens = parallel_.shard_tokens(x_embedder_->forward(x) + pos_embed_);
  const Tensor silu_c = silu(t_embedder_->forward(t) + y_embedder_->forward(y, label_dropout));
  Output out;
  Tensor h = tokens;
  for (const auto& block : blocks_) {
    DiTBlock::Output o = run_block(*block, h, silu_c);
    h = std::move(o.x);
    if (o.aux_loss.defined())
      out.aux_loss = out.aux_loss.defined() ? out.aux_loss + o.aux_loss : o.aux_loss;
    if (o.expert_counts.defined()) out.expert_counts.push_back(std::move(o.expert_counts));
  }
  out.out = unpatchify(parallel_.gather_tokens(final_layer_->forward(h, silu_c)), cfg_.patch_size,
                       out_channels());
  return out;
}

DiTBlock::Output DiT::run_block(const DiTBlock& block, const Tensor& h,
                                const Tensor& silu_c) const {
  if (!checkpoint_blocks_ || !grad_enabled()) return block.forward(h, silu_c);
  // The block's outputs as a list of defined tensors: x, then the MoE balance loss and counts.
  const std::vector<Tensor> out = checkpoint(
      [&block](const std::vector<Tensor>& in) {
        DiTBlock::Output o = block.forward(in[0], in[1]);
        std::vector<Tensor> v{o.x};
        if (o.aux_loss.defined()) v.push_back(o.aux_loss);
        if (o.expert_counts.defined()) v.push_back(o.expert_counts);
        return v;
      },
      {h, silu_c});
  DiTBlock::Output o{.x = out[0]};
  for (size_t i = 1; i < out.size(); ++i)
    (is_floating(out[i].dtype()) ? o.aux_loss : o.expert_counts) = out[i];
  return o;
}

Tensor DiT::forward_with_cfg(const Tensor& x, const Tensor& t, const Tensor& y,
                             double cfg_scale) const {
  LOOM_CHECK(y_embedder_->has_null_class(),
             "[DiT] classifier-free guidance needs the null class (class_dropout_prob > 0)");
  LOOM_CHECK(x.dim() == 4, "[DiT] expected x [B, C, H, W], got ", shape_str(x.shape()));
  const int64_t B = x.size(0), C = cfg_.in_channels;
  const Tensor both = forward(cat({x, x}, 0), cat({t, t}, 0),
                              cat({y, full_like(y, double(y_embedder_->null_class()))}, 0))
                          .out;
  const Tensor cond = both.narrow(0, 0, B), uncond = both.narrow(0, B, B);
  const Tensor eps_c = cond.narrow(1, 0, C), eps_u = uncond.narrow(1, 0, C);
  const Tensor guided = eps_u + (eps_c - eps_u) * cfg_scale;
  if (!cfg_.learn_sigma) return guided;
  return cat({guided, cond.narrow(1, C, C)}, 1);
}

}  // namespace loom::dit
