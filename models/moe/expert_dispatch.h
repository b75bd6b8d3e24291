#pragma once
// Routing bookkeeping of the MoE layer (namespace loom::moe): which (token, slot) assignment goes
// to which row of the expert-sorted batch, and which assignments a capacity limit drops. Host-side
// integer work only (top-k indices carry no gradient); the layer turns the result into one
// index_select (dispatch) and one index_add (combine).
//
// Assignment p = n * k + j is slot j of token n. Sorting is a stable counting sort by expert id,
// so within an expert the assignments keep increasing p (token order, then slot). A capacity C
// keeps the first C assignments of each expert in that order and drops the rest (GShard's
// token-order priority); a dropped assignment is absent from the sorted rows and contributes
// nothing to the layer's output.
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace loom::moe {

// The kept assignments of one forward, sorted by expert id.
struct ExpertDispatch {
  Tensor order;                  // i64 [M]: assignment p at each sorted position (M = sum(counts))
  Tensor token;                  // i64 [M]: order / k, the token row of each sorted position
  std::vector<int64_t> counts;   // [E]: kept assignments per expert; expert e's rows follow e-1's
  std::vector<int64_t> dropped;  // [E]: assignments of expert e beyond the capacity (0 if none)
};

// Sorts top-k expert ids topk_idx (i64 or i32 [N, k], values in [0, n_experts)) by expert,
// keeping at most `capacity` assignments per expert (capacity 0: no limit). The result's tensors
// are on topk_idx's device. Throws naming the assignment for an id out of range, and for a
// negative capacity.
ExpertDispatch sort_by_expert(const Tensor& topk_idx, int64_t n_experts, int64_t capacity = 0);

// Assignments each expert may keep: ceil(capacity_factor * n_tokens * top_k / n_experts), or 0 (no
// limit) when capacity_factor is 0. Throws for a negative or non-finite factor.
int64_t expert_capacity(double capacity_factor, int64_t n_tokens, int64_t top_k, int64_t n_experts);

}  // namespace loom::moe
