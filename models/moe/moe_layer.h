#pragma once
// DiT-MoE sparse mixture-of-experts feed-forward layer (ALGORITHMS.md §2.2–§2.3), namespace
// loom::moe. It replaces the DiT block MLP: h [B, T, D] (or [N, D]) -> y of the same shape, run as
// route -> dispatch -> experts -> combine (+ shared expert):
//   s = softmax(h W_r^T) over the E routed experts, computed in fp32 (fp64 for fp64 inputs);
//   (w, idx) = topk(s, k), no renormalization (the k weights of a token sum to < 1);
//   y = sum_{j in idx} s_j E_j(h) + Shared(h),  E_j(x) = (SiLU(x Wg_j^T) * (x Wu_j^T)) Wd_j^T.
// There is no router noise. By default there is no capacity limit (dropless, as the reference);
// capacity_factor > 0 keeps at most ceil(capacity_factor * N k / E) assignments per expert, in
// token order (expert_dispatch.h), and a dropped assignment adds nothing to y (its weight is not
// given to the token's other experts).
//
// Dispatch sorts the N*k (token, slot) assignments by expert id (a stable counting sort, on the
// device for CUDA inputs, whose only host transfer is the E counts; top-k indices carry no
// gradient), gathers the token rows into expert-contiguous order, runs the experts as grouped
// GEMMs over their contiguous slices of rows (GroupedExperts), and adds each token's rows, scaled
// by their routing weights, onto the shared expert's output (or zeros) in slot order
// (core/ops/expert_rows.h: gathers both ways, no atomics). Results are therefore deterministic
// and do not depend on the thread count.
//
// Expert parallelism (docs/EXPERT_PARALLEL.md). Given an ep group of P > 1 ranks, each rank holds
// the experts [r E/P, (r+1) E/P) (GroupedExperts); router, shared expert and everything else are
// replicated. Between the sort and the weighting, the expert-sorted rows travel to the ranks that
// hold their experts and back (parallel/ep_all_to_all.h), so every rank's y is the single-rank
// layer's y for its own tokens. forward is then collective over ep: every rank of the group calls
// it (and backward) in the same order, with its own tokens (any N >= 1, zero received rows
// included). Without a group, or with a group of one rank, this is the single-rank layer.
//
// Parameters (checkpoint and optimizer names):
//   router.weight     [E, D]      kaiming_uniform(a = sqrt(5)): U(-1/sqrt(D), 1/sqrt(D))
//   experts.w_gate    [E, F, D]   GroupedExperts (grouped_experts.h); [E/P, ...] under ep
//   experts.w_up      [E, F, D]
//   experts.w_down    [E, D, F]
//   shared.{gate_proj,up_proj,down_proj}.weight   nn::SwiGLU(D, shared_hidden), when enabled
// Experts are stored stacked along dim 0 so a grouped GEMM or expert-parallel sharding can slice
// them. Draw order from the init generator: router, then expert 0's gate, up, down slices, expert
// 1's, ..., then the shared expert (also under ep, so every ep size starts from the same model).
//
// Gradients of the stacked expert weights: after a backward through a forward with N >= 1 tokens
// the gradients of w_gate/w_up/w_down are always defined (whole local stacks); the slices of
// experts that received no token in that forward are exactly zero. (PyTorch's DiT-MoE training
// path calls such an expert on an empty batch, which gives the same zero gradients.) Under ep an
// expert slice's gradient is the gradient of the ep group's mean loss (grouped_experts.h).
//
// Balance loss (training mode only, per layer): with c_i = count_i / (N k) the fraction of the
// assignments that went to expert i (before any capacity drop), f_i = E c_i (a constant) and
// P_i = mean over tokens of s_i,
//   aux_loss = alpha * sum_i f_i P_i,
// differentiable through P only. It equals alpha exactly when the router is uniform. The trainer
// adds every layer's aux_loss to the diffusion loss (not averaged over layers) and logs the
// diffusion loss without it. Counts and N are this rank's by default; with
// aux_loss_global_counts and an ep group they are summed over the ep group (one all-reduce) while
// P stays this rank's, so the mean of the ranks' aux_loss is the balance loss of the group's whole
// batch when the ranks hold equally many tokens.
#include <memory>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"
#include "models/moe/expert_dispatch.h"
#include "models/moe/grouped_experts.h"
#include "models/nn/module.h"
#include "models/nn/swiglu.h"
#include "parallel/communicator.h"

namespace loom::moe {

struct MoEConfig {
  int64_t d_model;    // D
  int64_t n_experts;  // E routed experts
  int64_t top_k;      // k active routed experts per token, 1 <= k <= E
  int64_t d_ff = 0;   // F, each routed expert's intermediate width; 0 -> 4 * d_model
  // Intermediate width of the always-active shared expert (n_shared * D; DiT-MoE uses 2D);
  // 0 = no shared expert.
  int64_t shared_hidden = 0;
  double aux_loss_coef = 0.01;  // alpha of the balance loss
  // Assignments an expert keeps per forward: ceil(capacity_factor * N k / E) of this rank's N
  // tokens, the rest dropped in token order; 0 = no limit (dropless, the reference).
  double capacity_factor = 0;
  // Balance loss from the counts of the whole ep group instead of this rank's (see above).
  bool aux_loss_global_counts = false;
};

// Router: probabilities s = softmax(x W_r^T) [N, E] of x [N, D], in f32 (f64 when x is f64).
class Router : public nn::Module {
 public:
  Router(int64_t d_model, int64_t n_experts, Generator& init_gen);
  Tensor forward(const Tensor& x) const;
  const Tensor& weight() const { return weight_; }

 private:
  Tensor weight_;
};

class MoELayer : public nn::Module {
 public:
  // ep: the expert-parallel group (ParallelGrid::ep()); null for the single-rank layer. Throws
  // loom::Error for a non-positive d_model or n_experts, top_k outside [1, E], a negative d_ff,
  // shared_hidden, aux_loss_coef or capacity_factor, or an ep size that does not divide E.
  // Construction does not communicate.
  MoELayer(const MoEConfig& cfg, Generator& init_gen,
           std::shared_ptr<parallel::Communicator> ep = nullptr);

  struct Output {
    Tensor y;              // [.., D], h's shape, the parameters' dtype
    Tensor aux_loss;       // scalar (router dtype), defined only in training mode (is_training())
    Tensor expert_counts;  // i64 [E]: this rank's (token, slot) assignments per expert, routed
    Tensor dropped;        // i64 [E]: of those, the ones over capacity (zeros when dropless)
  };
  // h [B, T, D] or [N, D] (any rank >= 2, leading dims flattened into N >= 1 tokens), of the
  // parameters' dtype or, on CUDA under autocast, the autocast dtype. Throws for another last dim,
  // rank or dtype, or no tokens. Collective over the ep group when there is one.
  Output forward(const Tensor& h) const;

  // The config with d_ff resolved (4 * d_model when given as 0).
  const MoEConfig& config() const { return cfg_; }
  Router& router() const { return *router_; }
  GroupedExperts& experts() const { return *experts_; }
  nn::SwiGLU* shared() const { return shared_.get(); }  // nullptr without a shared expert
  // The ep group when it has more than one rank, else null.
  const std::shared_ptr<parallel::Communicator>& ep() const { return ep_; }

 private:
  // Routed expert outputs [M, D] of x_sorted [M, D] (rows sorted by expert, counts[e] of expert
  // e), through the ep exchange when there is one.
  Tensor run_experts(const Tensor& x_sorted, const std::vector<int64_t>& counts) const;
  // f_i = E c_i [E] of the balance loss, of `dtype` on d.routed's device, from this rank's routed
  // counts and n tokens (or the group's: a host all-reduce).
  Tensor load_fractions(const ExpertDispatch& d, int64_t n, DType dtype) const;

  MoEConfig cfg_;
  std::shared_ptr<parallel::Communicator> ep_;
  std::shared_ptr<Router> router_;
  std::shared_ptr<GroupedExperts> experts_;
  std::shared_ptr<nn::SwiGLU> shared_;
};

}  // namespace loom::moe
