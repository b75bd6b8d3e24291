#pragma once
// Parameter groups: parameters split by name patterns, one optimizer per group, all behind the
// single Optimizer interface (MultiOptimizer), e.g. Muon for a DiT's hidden matrices and AdamW
// for its embeddings, final layer, routers and biases (ALGORITHMS.md §8.2).
//
// Matching: a parameter's name is its dotted module path ("blocks.3.attn.qkv.weight", the
// Tensor::name the trainer sets). A pattern matches the whole name; '*' matches any run of
// characters, dots included ("blocks.*.weight" matches "blocks.0.attn.qkv.weight"), every other
// character matches itself. A group with no patterns is the catch-all: it takes every parameter
// no other group matches (at most one catch-all). Assignment throws loom::Error naming the
// offenders when a parameter matches two groups, when a parameter matches none and there is no
// catch-all, when a group with patterns matches no parameter (a typo would otherwise silently
// move everything to the catch-all), or when names are empty or repeated.
//
// MultiOptimizer: params() is the full list in the given order (so checkpoint names line up and
// zero_grad covers everything); each group's optimizer gets its parameters in that same relative
// order. Learning rate: lr() is the schedule's value for `base_lr` (the recipe's optim.lr); at
// each step() group g runs at spec.lr * lr() / base_lr, so one schedule shapes every group alike
// and keeps their ratios. The group rates are applied in step() because Optimizer::set_lr is not
// virtual; group_lr() reports the rate the next step will use.
//
// Data parallel: given a dp communicator, each group's optimizer is a ShardedOptimizer over that
// group (sharded.h), balanced by Newton–Schulz FLOPs for a Muon group and by element count
// otherwise; each group then owns, steps and all-gathers its own units, and the result equals the
// single-rank MultiOptimizer. Construction, step() and state() are then collective over dp.
// State: state() and load_state() go through the groups, so checkpoint keys are those of each
// group's optimizer (state_dict.h) whatever the grouping or sharding.
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "optim/muon.h"
#include "optim/optimizer.h"
#include "parallel/communicator.h"

namespace loom::optim {

struct ParamGroupSpec {
  std::string name;
  std::vector<std::string> patterns;  // empty: the catch-all group
  std::string optimizer = "adamw";    // "adamw" | "muon" | "sgd"
  double lr = 1e-3;
  double weight_decay = 0;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;  // adamw
  double momentum = 0.95;                         // muon, sgd
  bool nesterov = true;                           // muon, sgd
  MuonScale muon_scale = MuonScale::rows_cols;    // muon
  // muon: parameters that hold slices of split matrices (tensor parallelism, muon.h)
  std::shared_ptr<const MuonSplits> muon_splits = nullptr;
};

// The optimizer a group spec names ("adamw", "muon", "sgd") over `params`; with a non-null dp, a
// ShardedOptimizer of it over dp (collective). Throws for an unknown optimizer name.
std::unique_ptr<Optimizer> make_group_optimizer(const ParamGroupSpec& spec,
                                                std::vector<Tensor> params,
                                                const std::shared_ptr<parallel::Communicator>& dp);

// Whole-name match with '*' as "any run of characters" (see above).
bool glob_match(std::string_view pattern, std::string_view name);

// "a, b ,c" -> {"a", "b", "c"}: comma-separated, whitespace trimmed, empty items dropped.
std::vector<std::string> split_patterns(std::string_view text);

// For each group, the indices into `names` of the parameters it takes (ascending). Throws as
// described above.
std::vector<std::vector<size_t>> assign_param_groups(const std::vector<ParamGroupSpec>& groups,
                                                     const std::vector<std::string>& names);

class MultiOptimizer final : public Optimizer {
 public:
  // Names come from each parameter's Tensor::name. Throws loom::Error for base_lr <= 0, an
  // unknown optimizer name, an assignment error, or a group optimizer's own configuration error
  // (prefixed with the group's name). A non-null dp shards every group over it (see above).
  MultiOptimizer(std::vector<Tensor> params, std::vector<ParamGroupSpec> groups, double base_lr,
                 std::shared_ptr<parallel::Communicator> dp = nullptr);

  void step() override;
  StateKinds state_kinds(size_t i) const override;
  std::vector<ParamState> state() const override;
  void load_state(const std::vector<ParamState>& state) override;
  // The sum over the groups (this rank's shards when sharded).
  int64_t state_bytes() const override;

  double base_lr() const { return base_lr_; }
  size_t num_groups() const { return groups_.size(); }
  const ParamGroupSpec& group(size_t g) const { return groups_.at(g).spec; }
  // Indices into params() of group g's parameters.
  const std::vector<size_t>& group_indices(size_t g) const { return groups_.at(g).indices; }
  const Optimizer& group_optimizer(size_t g) const { return *groups_.at(g).optimizer; }
  Optimizer& group_optimizer(size_t g) { return *groups_.at(g).optimizer; }
  // spec.lr scaled by the schedule factor lr() / base_lr().
  double group_lr(size_t g) const { return group(g).lr * lr_ / base_lr_; }

 private:
  struct Group {
    ParamGroupSpec spec;
    std::vector<size_t> indices;
    std::unique_ptr<Optimizer> optimizer;
  };
  std::vector<Group> groups_;
  std::vector<std::pair<size_t, size_t>> slot_;  // per parameter: (group, index in the group)
  double base_lr_;
};

// A table of the groups for the training log: name, optimizer, current lr, weight decay,
// parameter and element counts, and the first few parameter names with their shapes.
std::string describe_groups(const MultiOptimizer& opt);

}  // namespace loom::optim
