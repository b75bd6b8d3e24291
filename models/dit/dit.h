#pragma once
// DiT and DiT-MoE (ALGORITHMS.md §1.2-§1.8 and §2.1): a class-conditional diffusion transformer
// over latents x [B, C, I, I] with adaLN-Zero blocks.
//
//   tokens = PatchEmbed(x) + pos_embed                      [B, T, D], T = (I/p)^2
//   c      = TimestepEmbedder(t) + LabelEmbedder(y)         [B, D]
//   tokens = DiTBlock_i(tokens, c) for i < depth            [B, T, D]
//   out    = unpatchify(FinalLayer(tokens, c))              [B, C_out, I, I], C_out = 2C with
//                                                           learn_sigma (eps ++ variance), else C
//
// A block is `x += gate_msa * Attn(modulate(LN(x), shift_msa, scale_msa))` followed by
// `x += gate_mlp * FFN(modulate(LN(x), shift_mlp, scale_mlp))`, with the six [B, D] modulation
// vectors from Linear(D -> 6D)(SiLU(c)), modulate(z, shift, scale) = z * (1 + scale) + shift and
// LN a LayerNorm without affine (eps 1e-6); both halves run as the fused ops of core/ops/adaln.h
// (layer_norm_modulate, gated_residual), as does the final layer's modulated LN. FFN is a
// GELU-tanh Mlp (hidden mlp_ratio D) for dense DiT (num_experts == 0) and a moe::MoELayer (E
// SwiGLU experts of hidden mlp_ratio D, top-k routing, a shared SwiGLU of hidden
// num_shared_experts D) for DiT-MoE; every block is then MoE.
//
// Init (§1.7): Linear layers Xavier-uniform with zero bias, the patch conv Xavier on its [D, C p p]
// view, timestep MLP weights and the label table N(0, 0.02), and every adaLN Linear and the final
// output Linear zero, so a fresh model outputs exactly 0 and every block is the identity. The
// position embedding is the fixed sin-cos table, registered as the buffer "pos_embed" [1, T, D]
// (saved with the model, never trained). The MoE layers initialize themselves (router
// kaiming-uniform, experts Xavier).
//
// Parameter names are the reference DiT's (facebookresearch/DiT), so its checkpoints load
// directly: x_embedder.proj.{weight,bias}, t_embedder.mlp.{0,2}.{weight,bias},
// y_embedder.embedding_table.weight, blocks.<i>.attn.{qkv,proj}.{weight,bias},
// blocks.<i>.mlp.{fc1,fc2}.{weight,bias} (dense) or blocks.<i>.moe.* (moe::MoELayer's names:
// router.weight, experts.w_gate/w_up/w_down, shared.{gate,up,down}_proj.weight),
// blocks.<i>.adaLN_modulation.1.{weight,bias}, final_layer.adaLN_modulation.1.{weight,bias},
// final_layer.linear.{weight,bias}; buffer pos_embed.
//
// The label table has a null-class row (index num_classes) only when class_dropout_prob > 0, as in
// the reference; classifier-free guidance needs it. Misuse throws loom::Error prefixed "[DiT]".
//
// Tensor and sequence parallelism (nn::ModelParallel, docs/PARALLEL.md): given a ModelParallel,
// attention is split by heads over tp (qkv column-parallel by head, proj row-parallel) and, with
// Ulysses, over sp; the dense MLP by hidden width over tp (fc1 column, fc2 row). The adaLN
// modulations, embedders and final layer are replicated; DiT-MoE routers and shared experts too
// (every rank routes the whole sequence), and the routed experts as well unless the ModelParallel
// has an ep group, over which moe::MoELayer splits them (expert parallelism,
// docs/EXPERT_PARALLEL.md: the block passes its tokens to the layer, which exchanges them). Tokens
// are split over sp (and over tp under Megatron sequence parallelism) right after patch embedding +
// position embedding, and the final layer's output is gathered, so forward returns the whole output
// on every rank and the loss is computed as in one process. Parameter names are the single-rank
// ones; sharded parameters hold this rank's slice (nn::named_shard_specs, nn::gather_state_dict and
// nn::load_sharded_state_dict convert to and from whole tensors), and a model built from the same
// generator state holds exactly the single-rank parameters. Without a ModelParallel the model is
// the single-rank one.
#include <memory>
#include <string>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"
#include "models/dit/embedders.h"
#include "models/moe/moe_layer.h"
#include "models/nn/attention.h"
#include "models/nn/linear.h"
#include "models/nn/mlp.h"
#include "models/nn/model_parallel.h"
#include "models/nn/module.h"
#include "models/nn/parallel_attention.h"
#include "models/nn/parallel_mlp.h"

namespace loom::dit {

struct DiTConfig {
  int64_t input_size = 32;  // I (latent side: image side / 8)
  int64_t patch_size = 2;   // p
  int64_t in_channels = 4;  // C
  int64_t hidden_size = 1152;
  int64_t depth = 28;
  int64_t num_heads = 16;
  double mlp_ratio = 4.0;  // dense Mlp hidden and MoE expert hidden = int(mlp_ratio * D)
  int64_t num_classes = 1000;
  double class_dropout_prob = 0.1;
  bool learn_sigma = true;
  int64_t num_experts = 0;  // 0 = dense MLP
  int64_t top_k = 2;
  int64_t num_shared_experts = 0;  // shared SwiGLU of hidden num_shared_experts * D
  double aux_loss_coef = 0.01;     // expert-balance loss weight per MoE layer
  double capacity_factor = 0;      // MoE expert capacity (moe::MoEConfig); 0 = dropless
  bool aux_loss_global_counts = false;  // balance loss from the ep group's counts (moe::MoEConfig)
};

// Named configs (all with the defaults above for I = 32, C = 4, 1000 classes): "DiT-S/2",
// "DiT-S/4", "DiT-S/8", likewise B, L, XL, plus "DiT-G/2" (depth 40, D 1408, 16 heads), and
// "DiT-MoE-S/2-8E2A", "DiT-MoE-S/2-16E2A", "DiT-MoE-B/2-8E2A", "DiT-MoE-XL/2-8E2A",
// "DiT-MoE-G/2-16E2A" (E experts, top-2, 2 shared experts). Throws listing the known names.
DiTConfig dit_config(const std::string& name);
std::vector<std::string> dit_config_names();

// Trainable parameter count computed from the config alone (no allocation); include_pos_embed adds
// the frozen T x D position table. Equals DiT(cfg).num_parameters().
int64_t count_parameters(const DiTConfig& cfg, bool include_pos_embed = false);
// Parameters a token passes through: for MoE, everything but the E - k routed experts a token does
// not use (per layer); for dense DiT the same as count_parameters.
int64_t count_activated_parameters(const DiTConfig& cfg);

// Token outputs back to images: tokens [B, T, p*p*C] with T = G*G, each token's last dim ordered
// (patch row, patch col, channel) -> [B, C, G p, G p], pixel (c, g_h p + i, g_w p + j) =
// tokens[(g_h G + g_w), (i p + j) C + c] (§1.6).
Tensor unpatchify(const Tensor& tokens, int64_t patch_size, int64_t channels);

// One adaLN-Zero block. Children: "attn" (nn::MultiHeadAttention, or nn::ParallelAttention when
// parallel), "mlp" (nn::Mlp, or nn::ParallelMlp when parallel) or "moe" (moe::MoELayer,
// replicated), "adaLN_modulation" holding the Linear(D -> 6D) as "1".
class DiTBlock : public nn::Module {
 public:
  // parallel: nullptr for the single-rank block.
  DiTBlock(const DiTConfig& cfg, Generator& gen, const nn::ModelParallel* parallel = nullptr);

  struct Output {
    Tensor x;              // [B, T, D]
    Tensor aux_loss;       // MoE in training mode: scalar balance loss; else undefined
    Tensor expert_counts;  // MoE: i64 [E] assignments per expert; else undefined
  };
  // x [B, T, D], silu_c = SiLU(c) [B, D] (the activation is shared by all blocks, so the caller
  // applies it once). When parallel, x holds this rank's residual-stream tokens.
  Output forward(const Tensor& x, const Tensor& silu_c) const;

  bool is_moe() const { return moe_ != nullptr; }
  nn::MultiHeadAttention& attn() const;          // throws for a parallel block
  nn::ParallelAttention& parallel_attn() const;  // throws for a single-rank block
  nn::Linear& adaLN_modulation() const { return *ada_; }
  nn::Mlp& mlp() const;                   // throws for an MoE or a parallel block
  nn::ParallelMlp& parallel_mlp() const;  // throws for an MoE or a single-rank block
  moe::MoELayer& moe() const;             // throws for a dense block

 private:
  Tensor attention(const Tensor& z) const;
  Tensor feed_forward(const Tensor& z, Output* out) const;

  int64_t hidden_size_;
  nn::ModelParallel parallel_;  // default (no groups) when single-rank
  std::shared_ptr<nn::MultiHeadAttention> attn_;
  std::shared_ptr<nn::ParallelAttention> parallel_attn_;
  std::shared_ptr<nn::Mlp> mlp_;
  std::shared_ptr<nn::ParallelMlp> parallel_mlp_;
  std::shared_ptr<moe::MoELayer> moe_;
  std::shared_ptr<nn::Linear> ada_;
};

// adaLN-modulated LayerNorm then Linear(D -> p*p*C_out). Children "adaLN_modulation" (Linear(D ->
// 2D) as "1", order shift then scale) and "linear". Replicated when parallel: it runs on this
// rank's residual-stream tokens.
class FinalLayer : public nn::Module {
 public:
  FinalLayer(int64_t hidden_size, int64_t patch_size, int64_t out_channels, Generator& gen,
             const nn::ModelParallel* parallel = nullptr);

  // x [B, T, D], silu_c [B, D] -> [B, T, p*p*C_out] (T: this rank's tokens when parallel).
  Tensor forward(const Tensor& x, const Tensor& silu_c) const;

  nn::Linear& adaLN_modulation() const { return *ada_; }
  nn::Linear& linear() const { return *linear_; }

 private:
  int64_t hidden_size_;
  nn::ModelParallel parallel_;
  std::shared_ptr<nn::Linear> ada_, linear_;
};

class DiT : public nn::Module {
 public:
  // Validates the config (D divisible by heads and by 4, I by p, ...) and initializes per §1.7,
  // drawing from init_gen in construction order. parallel: nullptr for the single-rank model;
  // else its tp group must be set (sp may be null), tp * sp must divide num_heads, tp the MLP
  // width, and the token count T must split over the residual token groups. Construction does not
  // communicate.
  DiT(const DiTConfig& cfg, Generator& init_gen, const nn::ModelParallel* parallel = nullptr);

  struct Output {
    Tensor out;       // [B, C_out, I, I]; the first C channels are eps (or velocity)
    Tensor aux_loss;  // sum of the MoE balance losses over blocks: MoE in training mode only
    std::vector<Tensor> expert_counts;  // per MoE block, i64 [E]; empty for dense DiT
  };
  // x [B, C, I, I] floating (the model's dtype), t [B] floating (DDPM step index as float or RF t
  // in (0, 1), used as given), y [B] i32/i64 labels in [0, num_classes] (num_classes = null class,
  // when the table has it). label_dropout: generator for class dropout; nullptr, eval mode or
  // class_dropout_prob == 0 mean no dropout. When parallel, every rank of a tp x sp replica passes
  // the same x, t, y and label_dropout state and gets the same whole output; its collectives
  // (and those of backward) must be run by all of them together.
  Output forward(const Tensor& x, const Tensor& t, const Tensor& y,
                 Generator* label_dropout = nullptr) const;

  // Classifier-free guidance: runs the batch [x; x] with labels [y; null] (same t) and returns
  // [B, C_out, I, I] whose first C channels are eps_u + s (eps_c - eps_u) on ALL C channels and
  // whose variance channels (learn_sigma) are the conditional half's. The reference's
  // forward_with_cfg guides only the first 3 channels (ALGORITHMS.md §1.10, kept there "for exact
  // reproducibility") and returns the doubled batch; this is the standard form instead. Needs the
  // null class (class_dropout_prob > 0); no label dropout is applied.
  Tensor forward_with_cfg(const Tensor& x, const Tensor& t, const Tensor& y,
                          double cfg_scale) const;

  const DiTConfig& config() const { return cfg_; }
  int64_t out_channels() const {
    return cfg_.learn_sigma ? 2 * cfg_.in_channels : cfg_.in_channels;
  }
  int64_t num_tokens() const { return x_embedder_->num_tokens(); }
  PatchEmbed& x_embedder() const { return *x_embedder_; }
  TimestepEmbedder& t_embedder() const { return *t_embedder_; }
  LabelEmbedder& y_embedder() const { return *y_embedder_; }
  const std::vector<std::shared_ptr<DiTBlock>>& blocks() const { return blocks_; }
  FinalLayer& final_layer() const { return *final_layer_; }
  const Tensor& pos_embed() const { return pos_embed_; }  // [1, T, D] buffer
  bool is_parallel() const { return parallel_.tp != nullptr; }
  const nn::ModelParallel& parallel() const { return parallel_; }

  // Per-block activation checkpointing (train.activation_checkpointing): while recording a graph,
  // each block runs through loom::checkpoint, so only its inputs are kept for backward and its
  // intermediates are recomputed there (core/checkpoint.h). The same values either way, and the
  // same gradients up to the order in which the blocks' conditioning gradients are summed.
  void set_activation_checkpointing(bool on) { checkpoint_blocks_ = on; }
  bool activation_checkpointing() const { return checkpoint_blocks_; }

 private:
  // One block's forward, through checkpoint() when that is on and a graph is being recorded.
  DiTBlock::Output run_block(const DiTBlock& block, const Tensor& h, const Tensor& silu_c) const;

  DiTConfig cfg_;
  nn::ModelParallel parallel_;
  std::shared_ptr<PatchEmbed> x_embedder_;
  std::shared_ptr<TimestepEmbedder> t_embedder_;
  std::shared_ptr<LabelEmbedder> y_embedder_;
  std::vector<std::shared_ptr<DiTBlock>> blocks_;
  std::shared_ptr<FinalLayer> final_layer_;
  Tensor pos_embed_;
  bool checkpoint_blocks_ = false;
};

}  // namespace loom::dit
