#pragma once
// DiT-MoE sparse mixture-of-experts feed-forward layer (ALGORITHMS.md §2.2–§2.3), namespace
// loom::moe. It replaces the DiT block MLP: h [B, T, D] (or [N, D]) -> y of the same shape, run as
// route -> dispatch -> experts -> combine (+ shared expert):
//   s = softmax(h W_r^T) over the E routed experts, computed in fp32 (fp64 for fp64 inputs);
//   (w, idx) = topk(s, k), no renormalization (the k weights of a token sum to < 1);
//   y = sum_{j in idx} s_j E_j(h) + Shared(h),  E_j(x) = (SiLU(x Wg_j^T) * (x Wu_j^T)) Wd_j^T.
// There is no capacity limit, token dropping or router noise.
//
// Dispatch sorts the N*k (token, slot) assignments by expert id (a stable counting sort on the
// host; top-k indices carry no gradient), gathers the token rows into expert-contiguous order,
// runs each expert as one GEMM chain over its contiguous slice of rows, scales the rows by their
// routing weights and index_adds them back onto the shared expert's output (or zeros). Equal
// assignments therefore meet in a fixed order, so results do not depend on the thread count.
//
// Parameters (checkpoint and optimizer names):
//   router.weight     [E, D]      kaiming_uniform(a = sqrt(5)): U(-1/sqrt(D), 1/sqrt(D))
//   experts.w_gate    [E, F, D]   each expert's [F, D] slice Xavier-uniform, as nn.Linear(D -> F)
//   experts.w_up      [E, F, D]   same
//   experts.w_down    [E, D, F]   each [D, F] slice Xavier-uniform, as nn.Linear(F -> D)
//   shared.{gate_proj,up_proj,down_proj}.weight   nn::SwiGLU(D, shared_hidden), when enabled
// Experts are stored stacked along dim 0 so a grouped GEMM or expert-parallel sharding can slice
// them. Draw order from the init generator: router, then expert 0's gate, up, down slices, expert
// 1's, ..., then the shared expert.
//
// Gradients of the stacked expert weights: after a backward through a forward with N >= 1 tokens
// the gradients of w_gate/w_up/w_down are always defined (whole [E, ...] tensors); the slices of
// experts that received no token in that forward are exactly zero. (PyTorch's DiT-MoE training
// path calls such an expert on an empty batch, which gives the same zero gradients.)
//
// Balance loss (training mode only, per layer): with c_i = count_i / (N k) the fraction of the
// assignments that went to expert i, f_i = E c_i (a constant) and P_i = mean over tokens of s_i,
//   aux_loss = alpha * sum_i f_i P_i,
// differentiable through P only. It equals alpha exactly when the router is uniform. The trainer
// adds every layer's aux_loss to the diffusion loss (not averaged over layers) and logs the
// diffusion loss without it.
#include <memory>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"
#include "models/nn/module.h"
#include "models/nn/swiglu.h"

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
};

// The (token, slot) assignments of one forward, sorted by expert id. Assignment p = n * k + j is
// slot j of token n. The sort is stable: within an expert, assignments keep increasing p.
struct ExpertDispatch {
  Tensor order;  // i64 [N*k]: assignment p at each sorted position
  Tensor token;  // i64 [N*k]: order / k, the token row of each sorted position
  std::vector<int64_t>
      counts;  // [E]: assignments per expert (sorted rows of expert e follow e-1's)
};

// Sorts top-k expert ids idx (i64 or i32 [N, k], values in [0, n_experts)) by expert. Host-side;
// throws for an id out of range.
ExpertDispatch sort_by_expert(const Tensor& topk_idx, int64_t n_experts);

// Router: probabilities s = softmax(x W_r^T) [N, E] of x [N, D], in f32 (f64 when x is f64).
class Router : public nn::Module {
 public:
  Router(int64_t d_model, int64_t n_experts, Generator& init_gen);
  Tensor forward(const Tensor& x) const;
  const Tensor& weight() const { return weight_; }

 private:
  Tensor weight_;
};

// E SwiGLU experts with stacked weights, applied to rows already sorted by expert.
class GroupedExperts : public nn::Module {
 public:
  GroupedExperts(int64_t d_model, int64_t d_ff, int64_t n_experts, Generator& init_gen);
  // x_sorted [M, D] with counts[e] consecutive rows for expert e (sum(counts) == M) -> [M, D]:
  // row r of expert e becomes E_e(x_sorted[r]). Experts with count 0 are not run.
  Tensor forward(const Tensor& x_sorted, const std::vector<int64_t>& counts) const;
  const Tensor& w_gate() const { return w_gate_; }  // [E, F, D]
  const Tensor& w_up() const { return w_up_; }      // [E, F, D]
  const Tensor& w_down() const { return w_down_; }  // [E, D, F]

 private:
  Tensor w_gate_, w_up_, w_down_;
};

class MoELayer : public nn::Module {
 public:
  // Throws loom::Error for a non-positive d_model or n_experts, top_k outside [1, E], a negative
  // d_ff or shared_hidden, or a negative aux_loss_coef.
  MoELayer(const MoEConfig& cfg, Generator& init_gen);

  struct Output {
    Tensor y;              // [.., D], same shape and dtype as h
    Tensor aux_loss;       // scalar (router dtype), defined only in training mode (is_training())
    Tensor expert_counts;  // i64 [E]: (token, slot) assignments per expert in this call
  };
  // h [B, T, D] or [N, D] (any rank >= 2, leading dims flattened into N >= 1 tokens), of the
  // parameters' dtype. Throws for another last dim, rank or dtype, or no tokens.
  Output forward(const Tensor& h) const;

  // The config with d_ff resolved (4 * d_model when given as 0).
  const MoEConfig& config() const { return cfg_; }
  Router& router() const { return *router_; }
  GroupedExperts& experts() const { return *experts_; }
  nn::SwiGLU* shared() const { return shared_.get(); }  // nullptr without a shared expert

 private:
  MoEConfig cfg_;
  std::shared_ptr<Router> router_;
  std::shared_ptr<GroupedExperts> experts_;
  std::shared_ptr<nn::SwiGLU> shared_;
};

}  // namespace loom::moe
