#pragma once
// Which rank owns which piece of the parameters in an owner-sharded optimizer (sharded.h): a pure
// function of the parameter shapes, the cost model and the number of ranks, so every rank computes
// the same plan without talking to the others.
//
// Units. A unit is what one rank updates on its own: a whole parameter, or (with the
// newton_schulz cost) one matrix of a 3-D stack [n, rows, cols] (MoE experts), since Muon
// orthogonalizes each matrix of a stack independently. Units are listed in parameter order, the
// matrices of a stack in order, and are the rows [begin, begin + length) of dim 0 of their
// parameter (whole: the whole tensor, any rank, including 0-D).
//
// Costs (int64, exact, so the plan is the same on every machine):
//   numel:          the unit's element count. AdamW and SGD do a fixed amount of work and keep a
//                   fixed amount of state per element, so this balances both.
//   newton_schulz:  the FLOPs of Muon's NS5 on the unit's matrices (newton_schulz_flops, muon.h:
//                   per step 4 r^2 c + 2 r^3 for the wide orientation r <= c), which dominate
//                   Muon's step; the elementwise momentum work is ignored.
//
// Balance. Greedy longest-processing-time: units by decreasing cost (ties: lower unit index
// first) each go to the rank with the least cost so far (ties: lower rank). The busiest rank
// carries at most 4/3 of the optimal makespan (Graham's bound), and within the largest unit's cost
// of the mean.
#include <cstdint>
#include <vector>

#include "core/shape.h"

namespace loom::optim {

enum class ShardCost { numel, newton_schulz };

struct ShardUnit {
  size_t param = 0;
  int64_t begin = 0, length = 0;  // rows of dim 0 (whole parameter: 0 and size(0), or 1 for 0-D)
  bool whole = true;
  int64_t numel = 0;
  int64_t cost = 0;
};

struct ShardPlan {
  std::vector<ShardUnit> units;
  std::vector<int> owner;           // per unit, in [0, ranks)
  std::vector<int64_t> rank_numel;  // per rank: elements of the units it owns
  std::vector<int64_t> rank_cost;   // per rank: cost of the units it owns
};

// The units of parameters with these shapes under `cost`.
std::vector<ShardUnit> shard_units(const std::vector<Shape>& shapes, ShardCost cost);
// The greedy owner of each cost (see above). Throws for ranks < 1 or a negative cost.
std::vector<int> balance_owners(const std::vector<int64_t>& costs, int ranks);
// Units, owners and per-rank totals.
ShardPlan make_shard_plan(const std::vector<Shape>& shapes, ShardCost cost, int ranks);

}  // namespace loom::optim
