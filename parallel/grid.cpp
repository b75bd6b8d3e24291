#include "parallel/grid.h"

namespace loom::parallel {

void ParallelGrid::validate(const GridDims& d, int world_size) {
  LOOM_CHECK(d.dp >= 1 && d.tp >= 1 && d.sp >= 1 && d.ep >= 1,
             "[ParallelGrid] sizes must be >= 1, got dp ", d.dp, ", tp ", d.tp, ", sp ", d.sp,
             ", ep ", d.ep);
  LOOM_CHECK(int64_t(d.dp) * d.tp * d.sp == world_size, "[ParallelGrid] dp ", d.dp, " x tp ", d.tp,
             " x sp ", d.sp, " = ", int64_t(d.dp) * d.tp * d.sp, " does not match the world size ",
             world_size);
  LOOM_CHECK(d.dp % d.ep == 0, "[ParallelGrid] ep ", d.ep, " must divide dp ", d.dp,
             " (expert-parallel groups are made of data-parallel ranks)");
}

GridCoords ParallelGrid::coords_of(int world_rank, const GridDims& d) {
  return GridCoords{
      .dp = world_rank / (d.tp * d.sp), .tp = world_rank % d.tp, .sp = (world_rank / d.tp) % d.sp};
}

int ParallelGrid::rank_of(const GridCoords& c, const GridDims& d) {
  return (c.dp * d.sp + c.sp) * d.tp + c.tp;
}

ParallelGrid::ParallelGrid(std::shared_ptr<Communicator> world, const GridDims& dims)
    : dims_(dims), world_(std::move(world)) {
  LOOM_CHECK(world_ != nullptr, "[ParallelGrid] the world communicator is null");
  validate(dims_, world_->size());
  coords_ = coords_of(world_->rank(), dims_);
  const GridDims& d = dims_;
  const GridCoords& c = coords_;
  // Colors number the groups; keys are the index along the group's own dimension, so group rank
  // equals that index. Every rank runs the same splits in the same order (they are collective).
  const int position = c.sp * d.tp + c.tp;  // (sp, tp) cell, shared by dp/ep/edp peers
  tp_ = world_->split(c.dp * d.sp + c.sp, c.tp, "tp");
  sp_ = world_->split(c.dp * d.tp + c.tp, c.sp, "sp");
  dp_ = world_->split(position, c.dp, "dp");
  ep_ = world_->split((c.dp / d.ep) * d.tp * d.sp + position, c.dp % d.ep, "ep");
  edp_ = world_->split((c.dp % d.ep) * d.tp * d.sp + position, c.dp / d.ep, "edp");
}

}  // namespace loom::parallel
