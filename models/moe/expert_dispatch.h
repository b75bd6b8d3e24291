#pragma once
// Routing bookkeeping of the MoE layer (namespace loom::moe): which (token, slot) assignment goes
// to which row of the expert-sorted batch, and which assignments a capacity limit drops. The sort
// itself is the core op loom::sort_by_expert (core/ops/moe_ops.h: a stable counting sort, on the
// device for CUDA indices), re-exported here with its result type; the layer turns the result into
// dispatch_expert_rows and combine_expert_rows (core/ops/expert_rows.h).
//
// Assignment p = n * k + j is slot j of token n. Within an expert the sorted assignments keep
// increasing p (token order, then slot). A capacity C keeps the first C assignments of each expert
// in that order and drops the rest (GShard's token-order priority); a dropped assignment is absent
// from the sorted rows and contributes nothing to the layer's output.
#include <cstdint>

#include "core/ops/moe_ops.h"

namespace loom::moe {

using loom::ExpertDispatch;
using loom::sort_by_expert;

// Assignments each expert may keep: ceil(capacity_factor * n_tokens * top_k / n_experts), or 0 (no
// limit) when capacity_factor is 0. Throws for a negative or non-finite factor.
int64_t expert_capacity(double capacity_factor, int64_t n_tokens, int64_t top_k, int64_t n_experts);

}  // namespace loom::moe
