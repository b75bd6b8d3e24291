#pragma once
// ShardedOptimizer: an optimizer whose work and state are divided over a data-parallel group, with
// results identical to running the inner optimizer on one rank (ALGORITHMS.md §8.4).
//
// Ownership. Every unit of the parameters (a whole parameter, or one matrix of a 3-D stack under
// the newton_schulz cost; shard_plan.h) has one owner rank, chosen by a deterministic greedy
// balance of its cost. Each rank builds the inner optimizer (AdamW, Muon, SGD: the factory) over
// the units it owns only, so only the owner keeps optimizer state for a unit and only the owner
// computes its update. Then every rank receives every updated unit (below), so all ranks end the
// step with bitwise identical parameters, equal to the single-rank optimizer's: the owner runs
// exactly the single-rank arithmetic on exactly the same values.
//   Distributed Muon  = ShardedOptimizer(Muon,  ShardCost::newton_schulz)  (distributed_muon)
//   ZeRO-1 AdamW      = ShardedOptimizer(AdamW, ShardCost::numel)          (zero1_adamw)
// Parameter groups: MultiOptimizer(..., dp) wraps each group's optimizer in one of these (each
// group balanced on its own cost), see param_groups.h.
//
// Gradients. step() reads each owned parameter's .grad, which must already hold the average over
// the group (DpReducer::finish): every rank has the whole averaged gradient and the owner uses
// its part. So this is ZeRO-1 in memory (optimizer state sharded, parameters and gradients
// replicated) with all-reduce + all-gather traffic, about 3x the parameter bytes per step against
// ZeRO's 2x for reduce-scatter + all-gather; a reduce-scatter would need the DpReducer to reduce
// each bucket to the units' owners, which it does not do yet. A parameter without a gradient is
// skipped by its owner and still sent (unchanged), so ranks never disagree on the collectives.
//
// Communication: one all-gather per step, not one broadcast per unit. Each rank packs its owned
// units (in unit order) into a flat f32 buffer padded to the largest shard; one all_gather gives
// every rank every shard, and each unit is copied back into its parameter. Broadcasting each unit
// from its owner instead pays one latency per unit (hundreds to thousands for DiT-MoE) and, with
// the large-message broadcast (scatter, then all-gather), about twice the all-gather's bandwidth
// time, since the owner's scatter comes first. The all-gather's only waste is the padding: none
// to speak of for the numel balance (AdamW), and for Muon small, because NS FLOPs per element
// (4 to 6 x min(r, c) per step) differ little between matrices whose short side is the same, as
// in a DiT. The gather buffers are transient: (ranks + 1) x the largest shard, f32, in step().
//
// Checkpoints: state() gathers the whole logical state of every parameter from the owners
// (collective: one all-reduce of the counters and presence flags, one all-gather per tensor
// kind); load_state() takes whole state, the same on every rank, and keeps the owned part (not
// collective). State saved at one group size therefore loads at any other, and in the plain inner
// optimizer (state_dict.h).
//
// Devices: the parameters must be f32 and on one device, CPU or CUDA; the gather buffers live
// there too (the MPI communicator gathers host buffers, the NCCL one device buffers), and
// units move in and out of them with copy ops. The units are views of the parameters' storage,
// so parameters must keep their storage after construction (loading a state dict copies in
// place, which is fine; moving the model to another device is not).
//
// Collectives: construction (one all-reduce that checks every rank has the same parameter shapes
// and plan), step() and state() are collective over `dp`, issued in the same order on every rank.
// Errors throw loom::Error "[sharded] ..." (the inner optimizer's own errors keep its prefix and
// name a stack's matrix as "<parameter>[j]").
#include <functional>
#include <memory>
#include <vector>

#include "optim/adamw.h"
#include "optim/muon.h"
#include "optim/optimizer.h"
#include "optim/shard_plan.h"
#include "parallel/communicator.h"

namespace loom::optim {

// Makes the inner optimizer over the tensors it is given (the owned units).
using OptimizerFactory = std::function<std::unique_ptr<Optimizer>(std::vector<Tensor>)>;

class ShardedOptimizer final : public Optimizer {
 public:
  // `make_inner` is first called with every parameter (every rank validates the same list, so a
  // bad parameter throws on every rank alike), then with the owned units. dp must be non-null. The
  // learning rate is the inner optimizer's at construction.
  ShardedOptimizer(std::vector<Tensor> params, const OptimizerFactory& make_inner, ShardCost cost,
                   std::shared_ptr<parallel::Communicator> dp);

  void step() override;
  StateKinds state_kinds(size_t i) const override;
  std::vector<ParamState> state() const override;
  void load_state(const std::vector<ParamState>& state) override;
  // The inner optimizer's state: this rank's shard only.
  int64_t state_bytes() const override;

  const ShardPlan& plan() const { return plan_; }
  const parallel::Communicator& communicator() const { return *dp_; }
  // The inner optimizer over this rank's units (in unit order).
  const Optimizer& inner() const { return *inner_; }

 private:
  // Every rank's owned units, rank-major (rank r's units in unit order, padded to the largest
  // shard), all-gathered in one collective in f32 on the parameters' device. pack(u) gives owned
  // unit u's values, any shape of its numel (undefined: zeros); unpack(u, values) receives every
  // unit's values as a flat view of the gathered buffer.
  void all_gather_units(const std::function<Tensor(size_t)>& pack,
                        const std::function<void(size_t, const Tensor&)>& unpack) const;
  // Unit u of `t` (a parameter-shaped tensor): the whole tensor or its rows.
  Tensor unit_of(const Tensor& t, size_t u) const;

  std::shared_ptr<parallel::Communicator> dp_;
  ShardPlan plan_;
  std::vector<Tensor> unit_views_;    // per unit: a detached view into its parameter
  std::vector<size_t> owned_;         // units this rank owns, in unit order
  std::vector<int64_t> inner_index_;  // per unit: its index in inner_, or -1
  StateKinds kinds_;
  std::unique_ptr<Optimizer> inner_;
};

// Distributed Muon: Muon sharded by Newton–Schulz FLOPs, expert stacks one matrix per unit.
std::unique_ptr<ShardedOptimizer> distributed_muon(std::vector<Tensor> params,
                                                   const MuonConfig& config,
                                                   std::shared_ptr<parallel::Communicator> dp);
// ZeRO-1 AdamW: AdamW sharded by element count.
std::unique_ptr<ShardedOptimizer> zero1_adamw(std::vector<Tensor> params, const AdamWConfig& config,
                                              std::shared_ptr<parallel::Communicator> dp);

}  // namespace loom::optim
