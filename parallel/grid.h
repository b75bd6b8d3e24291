#pragma once
// ParallelGrid: the world split into data- (dp), tensor- (tp), sequence- (sp) and expert-parallel
// (ep) groups. Built once from the world communicator and passed explicitly to whatever needs a
// group (never global). World size must equal dp * tp * sp; ep splits dp (ep divides dp), so an
// expert-parallel group is a set of ranks that are also data-parallel peers.
//
// Rank layout: tp varies fastest, then sp, then dp:
//   world_rank = (dp_index * sp + sp_index) * tp + tp_index.
// Each group holds the ranks that differ only in its own index:
//   tp group: same (dp_index, sp_index);   sp group: same (dp_index, tp_index);
//   dp group: same (sp_index, tp_index);
//   ep group: ep consecutive dp indices at the same (sp_index, tp_index), i.e. dp_index / ep equal;
//   edp group (expert data parallel, where expert gradients are averaged): same (sp_index,
//     tp_index, dp_index % ep), size dp / ep.
// Group ranks follow the index (tp rank = tp_index, dp rank = dp_index, ep rank = dp_index % ep,
// edp rank = dp_index / ep). Example, dp = 2, tp = 2, sp = 2 (world 8), ep = 2:
//
//   world rank  0  1  2  3  4  5  6  7
//   dp index    0  0  0  0  1  1  1  1
//   sp index    0  0  1  1  0  0  1  1
//   tp index    0  1  0  1  0  1  0  1
//
//   tp groups {0,1} {2,3} {4,5} {6,7}   sp groups {0,2} {1,3} {4,6} {5,7}
//   dp groups {0,4} {1,5} {2,6} {3,7}   ep groups = dp groups here (ep = dp), edp groups are single
// With dp = 4, tp = 2, sp = 1, ep = 2 (world 8): dp groups {0,2,4,6} {1,3,5,7}, ep groups {0,2}
// {4,6} {1,3} {5,7}, edp groups {0,4} {2,6} {1,5} {3,7}.
//
// Construction is collective over the world (five splits, in a fixed order); misconfiguration
// throws loom::Error "[ParallelGrid] ..." naming the sizes before any split.
#include <memory>

#include "parallel/communicator.h"

namespace loom::parallel {

struct GridDims {
  int dp = 1, tp = 1, sp = 1, ep = 1;
};

struct GridCoords {
  int dp = 0, tp = 0, sp = 0;
};

class ParallelGrid {
 public:
  ParallelGrid(std::shared_ptr<Communicator> world, const GridDims& dims);
  ParallelGrid(std::shared_ptr<Communicator> world, int dp, int tp, int sp, int ep = 1)
      : ParallelGrid(std::move(world), GridDims{dp, tp, sp, ep}) {}

  const GridDims& dims() const { return dims_; }
  // This rank's position in the grid.
  const GridCoords& coords() const { return coords_; }

  const std::shared_ptr<Communicator>& world() const { return world_; }
  const std::shared_ptr<Communicator>& dp() const { return dp_; }
  const std::shared_ptr<Communicator>& tp() const { return tp_; }
  const std::shared_ptr<Communicator>& sp() const { return sp_; }
  const std::shared_ptr<Communicator>& ep() const { return ep_; }
  const std::shared_ptr<Communicator>& edp() const { return edp_; }

  // Throws loom::Error when a size is < 1, dp * tp * sp != world_size, or ep does not divide dp.
  static void validate(const GridDims& dims, int world_size);
  // The layout above, as pure functions (dims assumed valid).
  static GridCoords coords_of(int world_rank, const GridDims& dims);
  static int rank_of(const GridCoords& coords, const GridDims& dims);

 private:
  GridDims dims_;
  GridCoords coords_;
  std::shared_ptr<Communicator> world_, dp_, tp_, sp_, ep_, edp_;
};

}  // namespace loom::parallel
