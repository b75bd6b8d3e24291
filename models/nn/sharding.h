#pragma once
// Sharded parameters: how the tensor a rank holds relates to the whole (logical) tensor of the
// single-rank model, and the Module base that records it per parameter.
//
// ShardSpec. The whole tensor's dim `dim` is read as `blocks` equal blocks (1 for a plain split,
// 3 for a fused q/k/v weight), each block is cut into `size` equal pieces, and the rank with
// index `rank` in `group` holds piece `rank` of every block, blocks in order. Example, qkv.weight
// [3D, D] over tp = 2 (dim 0, blocks 3): rank 0 holds rows [0, D/2) of q, of k and of v, i.e.
// whole rows [0, D/2) ++ [D, 3D/2) ++ [2D, 5D/2), as a [3D/2, D] tensor; proj.weight [D, D]
// (dim 1) is split by columns. A parameter without a spec is replicated: every rank holds the
// whole tensor.
//
// The slicing functions are pure (they use spec.rank and spec.size, not the group), so they also
// slice optimizer state or EMA copies shaped like the parameter; gather_shard is the collective
// that rebuilds the whole tensor. None records autograd history.
//
// ShardedModule: a Module whose register_sharded_parameter slices a whole initial tensor for this
// rank, registers the piece under the usual name and records its spec. named_shard_specs walks any
// module tree and returns the spec of every sharded parameter under its dotted name; state-dict
// conversions live in sharded_state.h. Errors throw loom::Error "[sharding] ..." naming the
// shapes and sizes.
#include <string>
#include <utility>
#include <vector>

#include "models/nn/module.h"
#include "parallel/communicator.h"

namespace loom::nn {

struct ShardSpec {
  int64_t dim = 0;
  int64_t blocks = 1;
  int rank = 0;
  int size = 1;
  std::shared_ptr<parallel::Communicator> group;  // rank and size are this group's

  // The spec of a tensor split over `group` (rank and size taken from it).
  static ShardSpec over(const std::shared_ptr<parallel::Communicator>& group, int64_t dim,
                        int64_t blocks = 1);
};

// This rank's shape for a whole tensor of shape `whole`; throws unless whole[dim] is divisible by
// blocks * size.
Shape shard_shape(const Shape& whole, const ShardSpec& spec);
// The whole shape of a piece of shape `local`.
Shape whole_shape(const Shape& local, const ShardSpec& spec);
// This rank's piece of `whole`, a new contiguous tensor.
Tensor slice_shard(const Tensor& whole, const ShardSpec& spec);
// The whole tensor from every rank's piece (pieces[r] is rank r's, spec.size of them, equal
// shapes); spec.rank is ignored.
Tensor join_shards(const std::vector<Tensor>& pieces, const ShardSpec& spec);
// The whole tensor from this rank's piece: all-gather over spec.group, then join_shards.
// Collective over the group.
Tensor gather_shard(const Tensor& local, const ShardSpec& spec);

class ShardedModule : public Module {
 public:
  // (local parameter name, spec) in registration order.
  const std::vector<std::pair<std::string, ShardSpec>>& shard_specs() const { return specs_; }

 protected:
  // Registers slice_shard(whole, spec) as parameter `name` and records its spec.
  Tensor register_sharded_parameter(const std::string& name, const Tensor& whole, ShardSpec spec);

 private:
  std::vector<std::pair<std::string, ShardSpec>> specs_;
};

// (dotted parameter name, spec) of every sharded parameter under root, depth first in
// registration order (the order of Module::state_dict()).
std::vector<std::pair<std::string, ShardSpec>> named_shard_specs(const Module& root);

}  // namespace loom::nn
