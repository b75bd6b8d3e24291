#pragma once
// NaN/Inf protection for the optimizer step: skip a step whose gradients (or loss) are not finite,
// count it, and stop the run after N such steps in a row with an error naming the step.
//
// In a training loop, after the gradients are averaged (DpReducer::finish) and before clipping:
//
//   if (!guard.admit(optim::all_finite(params, {loss}, dp.get()), step)) {
//
// A loop that computes the global gradient norm anyway passes no params and the norm as a scalar
// instead (all_finite({}, {loss, norm}, group)): the f64 norm is finite exactly when every
// gradient element is, so the gradients are not scanned twice (the diffusion trainer does this).
//     optimizer.zero_grad();   // the skipped step's gradients are dropped
//     continue;                // no optimizer step, no EMA update
//   }
//
// The decision must be the same on every rank (a sharded optimizer's step is collective), which
// is why all_finite reduces one flag over the group instead of each rank judging alone.
#include <cstdint>
#include <initializer_list>
#include <span>
#include <vector>

#include "core/tensor.h"
#include "parallel/communicator.h"

namespace loom::optim {

// True when every element of every defined gradient of `params` and every value of `scalars` is
// finite, on every rank of `group`: one pass over the local gradients, then one all_reduce(max) of
// a single flag over `group` (null: this process alone). Collective when group is non-null.
bool all_finite(const std::vector<Tensor>& params, std::span<const double> scalars = {},
                parallel::Communicator* group = nullptr);
inline bool all_finite(const std::vector<Tensor>& params, std::initializer_list<double> scalars,
                       parallel::Communicator* group = nullptr) {
  return all_finite(params, std::span<const double>(scalars.begin(), scalars.size()), group);
}

class StepGuard {
 public:
  // Throws loom::Error unless max_consecutive_skips >= 1.
  explicit StepGuard(int64_t max_consecutive_skips);

  // Records `step` (the 1-based step number used in messages): returns true when `finite` (the
  // step should run; the run of skips ends), false when not (skip it; counted). Throws
  // loom::Error "[step_guard] ..." naming the step when it is the max_consecutive_skips-th
  // non-finite step in a row.
  bool admit(bool finite, int64_t step);

  int64_t max_consecutive_skips() const { return max_; }
  // Skipped steps: in the current run, and since construction.
  int64_t consecutive_skips() const { return consecutive_; }
  int64_t total_skips() const { return total_; }

 private:
  int64_t max_, consecutive_ = 0, total_ = 0;
};

}  // namespace loom::optim
