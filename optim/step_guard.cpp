#include "optim/step_guard.h"

#include <cmath>
#include <limits>

namespace loom::optim {

namespace {

// Branch-free, so the scan vectorizes: NaN fails the comparison as well as +-Inf.
template <class T>
bool span_finite(const T* x, int64_t n) {
  bool bad = false;
  for (int64_t k = 0; k < n; ++k) bad |= !(std::fabs(x[k]) <= std::numeric_limits<T>::max());
  return !bad;
}

// Scanned on the host (a device tensor is copied there first).
bool tensor_finite(const Tensor& t_in) {
  const Tensor t = t_in.to(Device::cpu());
  if (t.dtype() == DType::f64) {
    const Tensor c = t.contiguous();
    return span_finite(c.data<double>(), c.numel());
  }
  const Tensor c = t.dtype() == DType::f32 ? t.contiguous() : t.to(DType::f32).contiguous();
  return span_finite(c.data<float>(), c.numel());
}

}  // namespace

bool all_finite(const std::vector<Tensor>& params, std::span<const double> scalars,
                parallel::Communicator* group) {
  NoGradGuard no_grad;
  bool ok = span_finite(scalars.data(), int64_t(scalars.size()));
  for (size_t i = 0; i < params.size() && ok; ++i) {
    const Tensor g = params[i].grad();
    if (g.defined()) ok = tensor_finite(g);
  }
  if (!group) return ok;
  Tensor bad = full({1}, ok ? 0 : 1, DType::i32);
  group->all_reduce(bad, parallel::ReduceOp::max);
  return bad.item() == 0;
}

StepGuard::StepGuard(int64_t max_consecutive_skips) : max_(max_consecutive_skips) {
  LOOM_CHECK(max_ >= 1, "[step_guard] max_consecutive_skips must be >= 1, got ", max_);
}

bool StepGuard::admit(bool finite, int64_t step) {
  if (finite) {
    consecutive_ = 0;
    return true;
  }
  ++consecutive_;
  ++total_;
  LOOM_CHECK(consecutive_ < max_, "[step_guard] ", consecutive_,
             " steps in a row had a non-finite gradient or loss (steps ", step - consecutive_ + 1,
             " to ", step, "); stopping at step ", step, " (", total_, " skipped in all)");
  return false;
}

}  // namespace loom::optim
