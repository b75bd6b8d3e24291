#include "models/moe/expert_parameters.h"

#include <unordered_set>

#include "models/moe/grouped_experts.h"

namespace loom::moe {

ExpertParameterSplit split_expert_parameters(nn::Module& root) {
  std::unordered_set<const TensorImpl*> expert_tensors;
  for (const auto& [path, module] : root.named_modules()) {
    if (dynamic_cast<const GroupedExperts*>(module) == nullptr) continue;
    for (const Tensor& p : module->parameters()) expert_tensors.insert(p.impl_ptr());
  }
  ExpertParameterSplit split;
  for (auto& item : root.named_parameters())
    (expert_tensors.count(item.second.impl_ptr()) ? split.experts : split.replicated)
        .push_back(std::move(item));
  return split;
}

}  // namespace loom::moe
