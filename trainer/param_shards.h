#pragma once
// The trainer's view of a model's sharded parameters (models/nn/sharding.h): tensor-parallel
// slices of matrices and expert-parallel slices of expert stacks. Tensors shaped like a parameter
// (EMA averages, optimizer moments) move between this rank's slice and the whole tensor a
// checkpoint stores, and Muon gets the splits it needs to orthogonalize whole matrices
// (optim/muon.h). Names are the model's parameter names. A model without sharded parameters (no
// tensor or expert parallelism; Ulysses sp alone shards nothing) has none: every function then
// returns its input and never communicates.
//
// whole() is collective over the parameter's group (its tp or ep group): every rank calls it for
// the same parameters in the same order.
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
  // Muon's splits for the sharded parameters whose matrices (last two dims) are cut; null when
  // there are none. An expert stack [E, F, D] split over ep on dim 0 holds whole [F, D] matrices,
  // which Muon orthogonalizes one by one as in one process: it needs no split.
  std::shared_ptr<const optim::MuonSplits> muon_splits() const;

 private:
  std::map<std::string, nn::ShardSpec> specs_;
  std::map<std::string, nn::ShardSpec> matrix_cuts_;  // the entries of specs_ that cut matrices
};

}  // namespace loom::trainer
