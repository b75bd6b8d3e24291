#pragma once
// Which parameters of a model are expert weights, for the two gradient reductions of expert
// parallelism (docs/EXPERT_PARALLEL.md):
//   experts     the stacks of every GroupedExperts module (experts.w_gate/w_up/w_down of each MoE
//               layer): each rank holds other experts than its ep peers, so their gradients are
//               averaged over the edp group (ParallelGrid::edp(), ranks holding the same experts);
//   replicated  everything else (router, shared expert, attention, embedders, ...): averaged over
//               the dp group as in plain data parallelism.
// The trainer builds one parallel::DpReducer per list:
//   const ExpertParameterSplit split = split_expert_parameters(model);
//   DpReducer dense(split.replicated, grid.dp()), experts(split.experts, grid.edp());
//   ... backward ...; dense.finish(); experts.finish();
// Expert gradients arrive already scaled by 1 / ep (grouped_experts.h), so both reducers average
// (ReduceOp::avg) and the result equals the single-process gradient of the mean loss. At ep = 1
// the edp group is the dp group and one reducer over named_parameters() does the same.
#include <string>
#include <utility>
#include <vector>

#include "models/nn/module.h"

namespace loom::moe {

struct ExpertParameterSplit {
  // (dotted name, parameter), each list in Module::named_parameters() order; together they are
  // named_parameters() exactly.
  std::vector<std::pair<std::string, Tensor>> experts, replicated;
};

// Splits root.named_parameters() by whether a parameter belongs to a moe::GroupedExperts module
// anywhere under root (root itself included). Does not communicate.
ExpertParameterSplit split_expert_parameters(nn::Module& root);

}  // namespace loom::moe
