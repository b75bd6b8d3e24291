#pragma once
// GroupedExperts: the E routed SwiGLU experts of the MoE layer with stacked weights, applied to
// rows already sorted by expert (namespace loom::moe).
//
//   experts.w_gate  [E, F, D]   each expert's [F, D] slice Xavier-uniform, as nn.Linear(D -> F)
//   experts.w_up    [E, F, D]   same
//   experts.w_down  [E, D, F]   each [D, F] slice Xavier-uniform, as nn.Linear(F -> D)
// E_e(x) = (SiLU(x Wg_e^T) * (x Wu_e^T)) Wd_e^T. Draw order from the init generator: expert 0's
// gate, up, down slices, then expert 1's, ...
//
// Compute: three grouped_linear calls over all local experts (gate, up, down; core/ops/moe_ops.h:
// one grouped GEMM each on CUDA, and two each in backward) around one fused swiglu; under autocast
// the rows are cast to bf16 once for the gate and up products.
//
// Expert parallelism. Given an ep group of P > 1 ranks (E divisible by P), the rank with ep rank
// r holds the L = E / P experts [r L, (r + 1) L) as [L, ...] stacks registered under the same
// names, with an nn::ShardSpec over the group on dim 0 (so nn::gather_state_dict,
// nn::load_sharded_state_dict and nn::gather_gradients see whole [E, ...] tensors). The whole
// stacks are drawn as in one process and sliced, so a sharded module built from the same generator
// state holds exactly the single-rank experts. Under ep the weight gradients are scaled by 1 / P:
// an expert slice then holds the gradient of the ep group's mean loss (its rows come from every ep
// rank), and averaging over the edp group completes the data-parallel average
// (docs/EXPERT_PARALLEL.md). A null group or a group of one rank is the unsharded module.
//
// Gradients. forward runs every expert, also on zero rows, so after a backward each weight
// gradient is defined (whole local stacks) and an expert that received no row gets exactly zero;
// the output also stays connected to the input, which keeps the collectives of an expert-parallel
// backward running on a rank that received nothing. Misuse throws loom::Error "[MoELayer] ...".
#include <cstdint>
#include <memory>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"
#include "models/nn/sharding.h"
#include "parallel/communicator.h"

namespace loom::moe {

class GroupedExperts : public nn::ShardedModule {
 public:
  // Throws when ep has more than one rank and does not divide n_experts.
  GroupedExperts(int64_t d_model, int64_t d_ff, int64_t n_experts, Generator& init_gen,
                 std::shared_ptr<parallel::Communicator> ep = nullptr);
  // x_sorted [M, D] with counts[l] consecutive rows for local expert l (counts has one entry per
  // local expert, sum(counts) == M) -> [M, D]: row i of local expert l becomes E_l(x_sorted[i]).
  // The result has the dtype of the products (bf16 under autocast on CUDA).
  Tensor forward(const Tensor& x_sorted, const std::vector<int64_t>& counts) const;

  // Global id of local expert 0: r L under ep, else 0.
  int64_t first_expert() const { return first_expert_; }
  // The local stacks.
  const Tensor& w_gate() const { return w_gate_; }  // [L, F, D]
  const Tensor& w_up() const { return w_up_; }      // [L, F, D]
  const Tensor& w_down() const { return w_down_; }  // [L, D, F]

 private:
  // w itself, or under ep a view whose gradient is scaled by grad_scale_.
  Tensor scaled(const Tensor& w) const;

  int64_t first_expert_ = 0;
  double grad_scale_ = 1;
  Tensor w_gate_, w_up_, w_down_;
};

}  // namespace loom::moe
