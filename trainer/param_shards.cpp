#include "trainer/param_shards.h"

namespace loom::trainer {

ParamShards::ParamShards(const nn::Module& root) {
  std::map<std::string, int64_t> dims;
  for (const auto& [name, p] : root.named_parameters()) dims.emplace(name, p.dim());
  for (auto& [name, spec] : nn::named_shard_specs(root)) {
    if (spec.dim >= dims.at(name) - 2) matrix_cuts_.emplace(name, spec);
    specs_.emplace(name, std::move(spec));
  }
}

Tensor ParamShards::whole(const std::string& name, const Tensor& local) const {
  const auto it = specs_.find(name);
  return it == specs_.end() ? local : nn::gather_shard(local, it->second);
}

Tensor ParamShards::local(const std::string& name, const Tensor& whole) const {
  const auto it = specs_.find(name);
  return it == specs_.end() ? whole : nn::slice_shard(whole, it->second);
}

std::shared_ptr<const optim::MuonSplits> ParamShards::muon_splits() const {
  if (matrix_cuts_.empty()) return nullptr;
  auto splits = std::make_shared<optim::MuonSplits>();
  for (const auto& [name, spec] : matrix_cuts_) {
    (*splits)[name] = {.gather = [spec](const Tensor& t) { return nn::gather_shard(t, spec); },
                       .slice = [spec](const Tensor& t) { return nn::slice_shard(t, spec); }};
  }
  return splits;
}

}  // namespace loom::trainer
