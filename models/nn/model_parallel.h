#pragma once
// ModelParallel: the groups a model is split over inside one data-parallel replica, and the two
// rules that keep every rank's gradients exact (docs/PARALLEL.md).
//
//   tp                 tensor parallelism (Megatron): attention heads and MLP hidden units are
//                      split over tp (parallel_linear.h, parallel_attention.h, parallel_mlp.h).
//   sp                 Ulysses sequence parallelism: a rank holds T / sp of the tokens everywhere
//                      except inside attention, where an all-to-all swaps token shards for head
//                      shards (parallel_attention.h).
//   sequence_parallel  Megatron sequence parallelism on tp: the residual stream (norms,
//                      modulation, residual adds, the final layer) holds T / (sp * tp) tokens;
//                      column-parallel linears all-gather tokens over tp, row-parallel ones
//                      reduce-scatter them.
//
// Token layout. The residual stream of the rank at (sp index s, tp index t) holds tokens
// [k n, (k + 1) n) with k = s * tp + t and n = T / (sp * tp) under sequence_parallel, else k = s
// and n = T / sp: shard_tokens() and gather_tokens() move between that and the whole sequence.
//
// Gradient rules. (1) Crossing between replicated and split activations goes through a conjugate
// pair (collectives.h), so activation gradients are exact. (2) A tensor that is the same on every
// rank of a group but meets only this rank's tokens (a weight inside a token-split region, or the
// adaLN modulation vectors computed from the replicated conditioning) gets only this rank's part
// of its gradient; sum_grad_over() puts a copy_to (identity forward, all-reduce backward) over
// each such group in front of the use. After backward every rank therefore holds the exact
// gradient of its parameters (the whole one for replicated parameters, its slice for sharded
// ones), and data-parallel averaging over grid.dp() is all that remains. Every rank of a tp x sp
// replica must see the same batch and compute the same loss from the gathered output.
//
// A default-constructed ModelParallel (null groups) is a single rank: every helper returns its
// input unchanged.
#include <vector>

#include "parallel/collectives.h"
#include "parallel/grid.h"

namespace loom::nn {

struct ModelParallel {
  parallel::Group tp;  // null: no tensor parallelism
  parallel::Group sp;  // null: no Ulysses sequence parallelism
  bool sequence_parallel = false;
  parallel::Group ep;  // null: MoE experts replicated; else split over it (moe::MoELayer)

  // The grid's tp and sp groups, and its ep group when ep > 1 (no communication).
  static ModelParallel from_grid(const parallel::ParallelGrid& grid, bool sequence_parallel);
  // Both groups LocalCommunicators of one rank: the parallel layers run in one process with the
  // single-rank results (tests).
  static ModelParallel local(bool sequence_parallel = false);

  int tp_size() const { return tp ? tp->size() : 1; }
  int sp_size() const { return sp ? sp->size() : 1; }
  // The groups the residual stream's tokens are split over, outer first: sp, then tp under
  // sequence_parallel. Groups of one rank are left out.
  std::vector<parallel::Group> residual_token_groups() const;
  // The groups the tokens inside a tensor-parallel region (between a column- and a row-parallel
  // linear, where tp ranks hold every token of their sp shard) are split over: sp, when > 1.
  std::vector<parallel::Group> tp_region_token_groups() const;
  // Tokens per rank in the residual stream for a sequence of `tokens`; throws naming the sizes
  // when they do not divide.
  int64_t residual_tokens(int64_t tokens) const;

  // x [B, T, ...], the same on every rank -> this rank's residual-stream tokens [B, T / k, ...]
  // (scatter_to over each residual token group; the gradient is all-gathered).
  Tensor shard_tokens(const Tensor& x) const;
  // The inverse: x [B, T / k, ...] -> [B, T, ...] (gather_from, inner group first; the gradient
  // is this rank's slice, exact when what consumes the result is the same on every rank).
  Tensor gather_tokens(const Tensor& x) const;
  // Forward t; backward the gradient of t summed over each of `groups` (copy_to per group).
  static Tensor sum_grad_over(const Tensor& t, const std::vector<parallel::Group>& groups);
};

}  // namespace loom::nn
