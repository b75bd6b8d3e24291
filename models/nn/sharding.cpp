#include "models/nn/sharding.h"

#include "core/ops/index.h"

namespace loom::nn {

namespace {

void check_spec(const ShardSpec& spec, size_t rank_of_tensor) {
  LOOM_CHECK(spec.dim >= 0 && size_t(spec.dim) < rank_of_tensor, "[sharding] dim ", spec.dim,
             " is out of range for a tensor with ", rank_of_tensor, " dims");
  LOOM_CHECK(spec.blocks >= 1 && spec.size >= 1 && spec.rank >= 0 && spec.rank < spec.size,
             "[sharding] need blocks >= 1 and 0 <= rank < size, got blocks ", spec.blocks,
             ", rank ", spec.rank, ", size ", spec.size);
}

// `shape` with dim replaced by (blocks, parts, shape[dim] / (blocks * parts)).
Shape split_dim(const Shape& shape, const ShardSpec& spec, int64_t parts) {
  Shape out(shape.begin(), shape.begin() + spec.dim);
  out.insert(out.end(), {spec.blocks, parts, shape[size_t(spec.dim)] / (spec.blocks * parts)});
  out.insert(out.end(), shape.begin() + spec.dim + 1, shape.end());
  return out;
}

}  // namespace

ShardSpec ShardSpec::over(const std::shared_ptr<parallel::Communicator>& group, int64_t dim,
                          int64_t blocks) {
  LOOM_CHECK(group != nullptr, "[sharding] the group is null");
  return ShardSpec{
      .dim = dim, .blocks = blocks, .rank = group->rank(), .size = group->size(), .group = group};
}

Shape shard_shape(const Shape& whole, const ShardSpec& spec) {
  check_spec(spec, whole.size());
  const int64_t n = whole[size_t(spec.dim)], parts = spec.blocks * spec.size;
  LOOM_CHECK(n % parts == 0, "[sharding] dim ", spec.dim, " of ", shape_str(whole), " has size ", n,
             ", which does not split into ", spec.blocks, " block(s) of ", spec.size,
             " pieces: not divisible by ", parts);
  Shape local = whole;
  local[size_t(spec.dim)] = n / spec.size;
  return local;
}

Shape whole_shape(const Shape& local, const ShardSpec& spec) {
  check_spec(spec, local.size());
  LOOM_CHECK(local[size_t(spec.dim)] % spec.blocks == 0, "[sharding] dim ", spec.dim, " of piece ",
             shape_str(local), " does not hold ", spec.blocks, " equal blocks");
  Shape whole = local;
  whole[size_t(spec.dim)] *= spec.size;
  return whole;
}

Tensor slice_shard(const Tensor& whole, const ShardSpec& spec) {
  LOOM_CHECK(whole.defined(), "[sharding] slice_shard of an undefined tensor");
  const Shape local = shard_shape(whole.shape(), spec);
  NoGradGuard no_grad;
  return whole.detach()
      .reshape(split_dim(whole.shape(), spec, spec.size))
      .narrow(spec.dim + 1, spec.rank, 1)
      .reshape(local)
      .clone();
}

Tensor join_shards(const std::vector<Tensor>& pieces, const ShardSpec& spec) {
  LOOM_CHECK(!pieces.empty() && int64_t(pieces.size()) == spec.size,
             "[sharding] join_shards needs ", spec.size, " pieces (one per rank), got ",
             pieces.size());
  const Shape local = pieces.at(0).shape();
  const Shape whole = whole_shape(local, spec);
  const Shape one = split_dim(local, spec, 1);  // a piece with a unit pieces axis
  std::vector<Tensor> views;
  NoGradGuard no_grad;
  for (const Tensor& p : pieces) {
    LOOM_CHECK(p.shape() == local, "[sharding] join_shards: pieces differ in shape, ",
               shape_str(local), " and ", shape_str(p.shape()));
    views.push_back(p.detach().reshape(one));
  }
  return cat(views, spec.dim + 1).reshape(whole);
}

Tensor gather_shard(const Tensor& local, const ShardSpec& spec) {
  LOOM_CHECK(spec.group != nullptr, "[sharding] gather_shard needs the spec's group");
  LOOM_CHECK(spec.group->size() == spec.size && spec.group->rank() == spec.rank,
             "[sharding] the spec says rank ", spec.rank, " of ", spec.size, " but its group is ",
             spec.group->describe());
  NoGradGuard no_grad;
  const Tensor mine = local.detach().contiguous();
  const Tensor all = empty({spec.size, mine.numel()}, mine.dtype(), mine.device());
  spec.group->all_gather(mine.reshape({1, mine.numel()}), all);
  std::vector<Tensor> pieces;
  for (int r = 0; r < spec.size; ++r) pieces.push_back(all.select(0, r).view(mine.shape()));
  return join_shards(pieces, spec);
}

Tensor ShardedModule::register_sharded_parameter(const std::string& name, const Tensor& whole,
                                                 ShardSpec spec) {
  Tensor piece = register_parameter(name, slice_shard(whole, spec));
  specs_.emplace_back(name, std::move(spec));
  return piece;
}

namespace {
void collect_specs(const Module& m, const std::string& prefix,
                   std::vector<std::pair<std::string, ShardSpec>>* out) {
  if (const auto* sharded = dynamic_cast<const ShardedModule*>(&m))
    for (const auto& [name, spec] : sharded->shard_specs()) out->emplace_back(prefix + name, spec);
  for (const auto& [name, child] : m.named_children())
    collect_specs(*child, prefix + name + ".", out);
}
}  // namespace

std::vector<std::pair<std::string, ShardSpec>> named_shard_specs(const Module& root) {
  std::vector<std::pair<std::string, ShardSpec>> out;
  collect_specs(root, "", &out);
  return out;
}

}  // namespace loom::nn
