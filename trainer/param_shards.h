#pragma once
// The trainer's view of a tensor-parallel model's sharded parameters (models/nn/sharding.h):
// tensors shaped like a parameter (EMA averages, optimizer moments) moved between this rank's
// slice and the whole tensor a checkpoint stores, and the splits Muon needs to orthogonalize whole
// matrices (optim/muon.h). Names are the model's parameter names. A model without sharded
// parameters (no tensor parallelism; Ulysses sp alone shards nothing) has none: every function
// then returns its input and never communicates.
//
// whole() is collective over the parameter's group (its tp group): every rank of the group calls
// it for the same parameters in the same order.
#include <map>
#include <memory>
#include <string>

#include "models/nn/module.h"
#include "models/nn/sharding.h"
#include "optim/muon.h"

namespace loom::trainer {

class ParamShards {
 public:
  // No sharded parameters.
  ParamShards() = default;
  // The specs of root's sharded parameters (no communication).
  explicit ParamShards(const nn::Module& root);

  bool empty() const { return specs_.empty(); }
  // `local` (shaped like parameter `name` on this rank) as the whole tensor: gathered when the
  // parameter is sharded, else `local` itself.
  Tensor whole(const std::string& name, const Tensor& local) const;
  // This rank's slice of `whole` (shaped like the whole parameter `name`): sliced when the
  // parameter is sharded, else `whole` itself. Throws naming the shapes when whole does not split.
  Tensor local(const std::string& name, const Tensor& whole) const;
  // Muon's splits for the sharded parameters; null when there are none.
  std::shared_ptr<const optim::MuonSplits> muon_splits() const;

 private:
  std::map<std::string, nn::ShardSpec> specs_;
};

}  // namespace loom::trainer
