#include "models/nn/sharded_state.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "core/ops/elementwise.h"
#include "core/ops/reduce.h"

namespace loom::nn {

namespace {
std::map<std::string, ShardSpec> spec_map(const Module& root) {
  std::map<std::string, ShardSpec> out;
  for (auto& [name, spec] : named_shard_specs(root)) out.emplace(name, std::move(spec));
  return out;
}
}  // namespace

StateDict gather_state_dict(const Module& root) {
  const auto specs = spec_map(root);
  StateDict out;
  for (const auto& [name, t] : root.state_dict()) {
    auto it = specs.find(name);
    out.insert(name, it == specs.end() ? t : gather_shard(t, it->second));
  }
  return out;
}

void load_sharded_state_dict(Module& root, const StateDict& whole, bool strict) {
  const auto specs = spec_map(root);
  const StateDict own = root.state_dict();
  StateDict local;
  for (const auto& [name, t] : whole) {
    auto it = specs.find(name);
    if (it == specs.end()) {
      local.insert(name, t);
      continue;
    }
    const Shape expected = whole_shape(own.at(name).shape(), it->second);
    LOOM_CHECK(t.defined() && t.shape() == expected, "[load_sharded_state_dict] '", name,
               "' must be the whole tensor ", shape_str(expected), " (this rank holds ",
               shape_str(own.at(name).shape()), "), got ",
               t.defined() ? shape_str(t.shape()) : std::string("an undefined tensor"));
    local.insert(name, slice_shard(t, it->second));
  }
  root.load_state_dict(local, strict);
}

StateDict gather_gradients(const Module& root) {
  const auto specs = spec_map(root);
  StateDict out;
  for (const auto& [name, p] : root.named_parameters()) {
    const Tensor g = p.grad();
    if (!g.defined()) continue;
    auto it = specs.find(name);
    out.insert(name, it == specs.end() ? g : gather_shard(g, it->second));
  }
  return out;
}

double sharded_grad_norm(const Module& root) {
  const auto specs = spec_map(root);
  double replicated = 0;
  // Sums of squares of sharded gradients per group, in first-use order (the order every rank
  // reduces them in).
  std::vector<std::pair<std::shared_ptr<parallel::Communicator>, double>> per_group;
  NoGradGuard no_grad;
  for (const auto& [name, p] : root.named_parameters()) {
    const Tensor g = p.grad();
    if (!g.defined()) continue;
    const double sq = sum(square(g.to(DType::f64))).item();
    auto it = specs.find(name);
    if (it == specs.end()) {
      replicated += sq;
      continue;
    }
    auto slot = std::find_if(per_group.begin(), per_group.end(),
                             [&](const auto& e) { return e.first == it->second.group; });
    if (slot == per_group.end()) slot = per_group.insert(per_group.end(), {it->second.group, 0.0});
    slot->second += sq;
  }
  double total = replicated;
  for (const auto& [group, sq] : per_group) {
    const Tensor t = full({1}, sq, DType::f64);
    group->all_reduce(t, parallel::ReduceOp::sum);
    total += t.item();
  }
  return std::sqrt(total);
}

}  // namespace loom::nn
