#pragma once
// DataParallel: what a training loop does differently when it runs as several ranks
// (docs/PARALLEL.md): data-parallel replicas, each possibly split over tensor- and
// sequence-parallel ranks, with DiT-MoE's routed experts optionally split over expert-parallel
// groups of dp ranks. With one process it is the same code over a LocalCommunicator, so the
// single-rank path is not a separate branch.
//
// Construction validates the recipe's layout (parallel_plan.h, before any communication), then
// builds the world communicator (MPI under mpirun) and the ParallelGrid. It is collective. On
// CUDA with several ranks the world is a NCCL communicator over the MPI one
// (parallel/nccl_communicator.h): device tensors (gradients, model-parallel activations,
// optimizer shards) move over NCCL, host tensors (agreement, logged scalars, counts) over MPI, and
// every group of the grid is such a pair.
//
// Roles. World rank 0 is the root: it alone writes the run directory, metrics, sample grids,
// checkpoints and console lines (log() gives the other ranks a stream that drops everything).
// Every replica computes the same steps; the ranks of one replica hold their slices of its
// weights, EMA and optimizer state (model_parallel()), and with optim.shard_state the dp ranks
// divide the optimizer state among themselves (optimizer_group()).
//
// Model parallelism. model_parallel() is the ModelParallel of this rank's tp, sp and ep groups
// when parallel.tp * parallel.sp > 1 or parallel.ep > 1 (build the model with it), else nullptr.
// The ranks of a tp x sp replica share a dp rank, so everything below that is sharded by dp rank
// (data, draws) is the same on all of them, as the tensor- and sequence-parallel layers require.
// The ranks of an ep group are dp ranks with their own rows; the MoE layers exchange their tokens
// (docs/EXPERT_PARALLEL.md).
//
// Batches. train.batch_size is the global batch of one optimizer step, cut into grad_accum
// micro-batches of batch_size / grad_accum rows; dp rank r takes rows [r * n, (r + 1) * n) of
// each (n = micro_batch()), which is what the DataLoader's sharding yields with loader_config().
// A step's random draws are made for the whole global batch, identically on every rank, and
// local_rows(step_tensor, m) picks this rank's rows of micro-batch m (row m * batch_size /
// grad_accum + r * n onwards). So every example meets the same data, noise, timesteps and label
// dropout for any dp and grad_accum, and the per-step losses equal the one-rank run's up to the
// order of floating-point sums.
//
// Gradients. reduce_gradients(model) builds a parallel::DpReducer over the dp group (buckets of
// parallel.bucket_mb), which averages gradients over the ranks while backward runs. With
// parallel.ep > 1 the expert stacks (moe::split_expert_parameters) get a reducer of their own over
// the edp group (the ranks holding the same experts; their gradients already hold the ep group's
// mean), and the dp reducer takes every other parameter.
// begin_micro_batch(m) before micro-batch m's backward turns the reduction off for all but the
// last micro-batch of the step (accumulation stays local); finish_gradients() after the last
// backward waits for every bucket, after which each parameter's .grad is the gradient of the
// global batch's mean loss on every rank: clip and step after it.
//
// Agreement. check_same_job refuses to start when ranks were given different recipes, options or
// parameter layouts; broadcast_from_root makes the initial weights dp rank 0's (over dp only: tp
// peers hold different slices; expert stacks over edp only: ep peers hold different experts);
// average() and sum() reduce the logged scalars over dp so every rank sees the same numbers (this
// rank's expert counts summed over dp are the global batch's); world() is the group for decisions
// every rank must share (skipping a non-finite step: optim::all_finite over it); any_rank() agrees
// on a stop request.
//
// Every method that communicates is collective: all ranks call it in the same order.
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "data/loader.h"
#include "models/nn/model_parallel.h"
#include "models/nn/module.h"
#include "parallel/dp_reducer.h"
#include "parallel/grid.h"
#include "trainer/parallel_plan.h"
#include "trainer/run_dir.h"

namespace loom::trainer {

class DataParallel {
 public:
  // device: where this rank trains (device_from_recipe); a CUDA device with several ranks makes
  // the groups NCCL groups.
  DataParallel(const Recipe& recipe, const ModelSplits& model, Device device);

  const ParallelPlan& plan() const { return plan_; }
  int rank() const { return grid_->dp()->rank(); }  // dp rank
  int size() const { return grid_->dp()->size(); }  // dp size
  bool is_root() const { return grid_->world()->rank() == 0; }
  // The tp, sp and ep groups to build the model with; nullptr when tp * sp == 1 and ep == 1.
  const nn::ModelParallel* model_parallel() const {
    return model_parallel_ ? &*model_parallel_ : nullptr;
  }
  // The group a sharded optimizer divides its state over (optim.shard_state with dp > 1), else
  // nullptr.
  std::shared_ptr<parallel::Communicator> optimizer_group() const;
  parallel::Communicator& world() const { return *grid_->world(); }
  // out on the root; elsewhere a stream that writes nothing.
  std::ostream& log(std::ostream& out);
  // The stream for the redrawn progress bar: out in a single process, nothing under a launcher,
  // whose output forwarding makes stdout look like a terminal even when it goes to a file.
  std::ostream& progress(std::ostream& out);
  // One line for the run header: "dp 2 x tp 2 over 4 ranks (mpi), 4 examples per rank x 1
  // micro-batch per step, 1 gradient bucket".
  std::string describe() const;

  // base with this rank's share: batch_size = micro_batch(), rank and world_size from dp.
  data::LoaderConfig loader_config(data::LoaderConfig base) const;
  // Rows of step_tensor [batch_size, ...] that belong to this rank's micro-batch `micro`,
  // contiguous.
  Tensor local_rows(const Tensor& step_tensor, int64_t micro) const;

  // Throws on every rank (naming the differing rank) unless all ranks have the same resolved
  // recipe, run options and parameter names, shapes and dtypes.
  void check_same_job(const Recipe& recipe, const TrainOptions& options,
                      const std::vector<std::pair<std::string, Tensor>>& params) const;
  // Overwrites model's parameters and buffers with dp rank 0's values (expert stacks: edp rank
  // 0's).
  void broadcast_from_root(nn::Module& model) const;

  // Attaches the gradient reducers to model's parameters (collective over dp and edp).
  void reduce_gradients(nn::Module& model);
  void begin_micro_batch(int64_t micro);
  void finish_gradients();
  int64_t num_buckets() const;

  // Element-wise mean / sum over the dp ranks.
  std::vector<double> average(const std::vector<double>& values) const;
  std::vector<double> sum(const std::vector<double>& values) const;
  // value of every world rank, by rank.
  std::vector<double> all_ranks(double value) const;
  // True on every rank when flag is true on any rank of the world.
  bool any_rank(bool flag) const;
  // Waits until every rank of the world arrives (after the root wrote a checkpoint).
  void barrier() const;

 private:
  std::vector<double> reduce(const std::vector<double>& values, parallel::ReduceOp op) const;
  // A reducer averaging params over group, unless there is nothing to average.
  void add_reducer(const std::vector<std::pair<std::string, Tensor>>& params,
                   const std::shared_ptr<parallel::Communicator>& group);

  ParallelPlan plan_;
  std::unique_ptr<parallel::ParallelGrid> grid_;
  std::optional<nn::ModelParallel> model_parallel_;
  std::vector<std::unique_ptr<parallel::DpReducer>> reducers_;
  std::ostream null_{nullptr};
};

}  // namespace loom::trainer
