#include "optim/grad_clip.h"

#include <cmath>

#include "core/ops/elementwise.h"
#include "core/ops/reduce.h"

namespace loom::optim {

double grad_norm(const std::vector<Tensor>& params) {
  NoGradGuard guard;
  // Summed on the gradients' device in f64 and read once (one synchronization per step on CUDA).
  Tensor total;
  for (const Tensor& p : params) {
    const Tensor g = p.grad();
    if (!g.defined()) continue;
    const Tensor s = sum(square(g.to(DType::f64)));
    total = total.defined() ? total + s : s;
  }
  return total.defined() ? std::sqrt(total.item()) : 0.0;
}

double clip_grad_norm(const std::vector<Tensor>& params, double max_norm) {
  return clip_grads_to(params, grad_norm(params), max_norm);
}

double clip_grads_to(const std::vector<Tensor>& params, double norm, double max_norm) {
  if (max_norm <= 0 || !std::isfinite(norm) || norm <= max_norm) return norm;
  NoGradGuard guard;
  const double scale = max_norm / (norm + 1e-6);
  for (const Tensor& p : params) {
    const Tensor g = p.grad();
    if (g.defined()) copy_into(g, mul(g, scale));
  }
  return norm;
}

}  // namespace loom::optim
