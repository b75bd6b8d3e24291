#include "optim/shard_plan.h"

#include <algorithm>
#include <numeric>

#include "core/error.h"
#include "optim/muon.h"

namespace loom::optim {

namespace {

// Muon's step is dominated by NS5; the factor 5 is common to every unit, so it does not change the
// plan, but it keeps the cost an honest FLOP count.
constexpr int64_t kNsSteps = 5;

ShardUnit whole_unit(size_t param, const Shape& shape, int64_t cost) {
  const int64_t n = numel_of(shape);
  return {.param = param,
          .begin = 0,
          .length = shape.empty() ? 1 : shape[0],
          .whole = true,
          .numel = n,
          .cost = cost};
}

}  // namespace

std::vector<ShardUnit> shard_units(const std::vector<Shape>& shapes, ShardCost cost) {
  std::vector<ShardUnit> units;
  for (size_t i = 0; i < shapes.size(); ++i) {
    const Shape& s = shapes[i];
    if (cost == ShardCost::numel) {
      units.push_back(whole_unit(i, s, numel_of(s)));
      continue;
    }
    LOOM_CHECK(s.size() >= 2, "[shard_plan] parameter #", i, " has shape ", shape_str(s),
               "; the newton_schulz cost needs matrices (rank >= 2)");
    const MuonMatrices m = muon_matrices(s);
    const int64_t flops = newton_schulz_flops(m.rows, m.cols, kNsSteps);
    if (s.size() != 3) {
      units.push_back(whole_unit(i, s, flops));
      continue;
    }
    for (int64_t j = 0; j < m.count; ++j)
      units.push_back({.param = i,
                       .begin = j,
                       .length = 1,
                       .whole = false,
                       .numel = m.rows * m.cols,
                       .cost = flops});
  }
  return units;
}

std::vector<int> balance_owners(const std::vector<int64_t>& costs, int ranks) {
  LOOM_CHECK(ranks >= 1, "[shard_plan] ranks must be >= 1, got ", ranks);
  for (size_t u = 0; u < costs.size(); ++u)
    LOOM_CHECK(costs[u] >= 0, "[shard_plan] unit ", u, " has negative cost ", costs[u]);
  std::vector<size_t> order(costs.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return costs[a] > costs[b]; });
  std::vector<int64_t> load(static_cast<size_t>(ranks), 0);
  std::vector<int> owner(costs.size(), 0);
  for (size_t u : order) {
    const int r = int(std::min_element(load.begin(), load.end()) - load.begin());
    owner[u] = r;
    load[size_t(r)] += costs[u];
  }
  return owner;
}

ShardPlan make_shard_plan(const std::vector<Shape>& shapes, ShardCost cost, int ranks) {
  ShardPlan plan;
  plan.units = shard_units(shapes, cost);
  std::vector<int64_t> costs;
  for (const ShardUnit& u : plan.units) costs.push_back(u.cost);
  plan.owner = balance_owners(costs, ranks);
  plan.rank_numel.assign(static_cast<size_t>(ranks), 0);
  plan.rank_cost.assign(static_cast<size_t>(ranks), 0);
  for (size_t u = 0; u < plan.units.size(); ++u) {
    plan.rank_numel[size_t(plan.owner[u])] += plan.units[u].numel;
    plan.rank_cost[size_t(plan.owner[u])] += plan.units[u].cost;
  }
  return plan;
}

}  // namespace loom::optim
