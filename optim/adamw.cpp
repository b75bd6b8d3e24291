#include "optim/adamw.h"

#include <cmath>

namespace loom::optim {

AdamW::AdamW(std::vector<Tensor> params, const AdamWConfig& config)
    : Optimizer(std::move(params), config.lr, "adamw"), config_(config) {
  LOOM_CHECK(config.beta1 >= 0 && config.beta1 < 1, "[adamw] beta1 must be in [0, 1), got ",
             config.beta1);
  LOOM_CHECK(config.beta2 >= 0 && config.beta2 < 1, "[adamw] beta2 must be in [0, 1), got ",
             config.beta2);
  LOOM_CHECK(config.eps >= 0, "[adamw] eps must be >= 0, got ", config.eps);
  LOOM_CHECK(config.weight_decay >= 0, "[adamw] weight_decay must be >= 0, got ",
             config.weight_decay);
  state_.resize(params_.size());
}

void AdamW::step() {
  NoGradGuard no_grad;
  const double b1 = config_.beta1, b2 = config_.beta2;
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor g = grad_of(i);
    if (!g.defined()) continue;
    Tensor& p = params_[i];
    AdamWState& st = state_[i];
    if (!st.exp_avg.defined()) {
      st.exp_avg = zeros(p.shape());
      st.exp_avg_sq = zeros(p.shape());
    }
    // The state is writable (checkpoint loading), so check what the loop below assumes.
    for (const Tensor* s : {&st.exp_avg, &st.exp_avg_sq}) {
      LOOM_CHECK(s->defined() && s->shape() == p.shape() && s->dtype() == DType::f32 &&
                     s->is_contiguous() && s->device().is_cpu(),
                 "[adamw] state of parameter ", param_label(i), " ", shape_str(p.shape()),
                 " must be two contiguous f32 CPU tensors of its shape");
    }
    ++st.step;
    // Scalars in double, then rounded once, matching PyTorch's single-tensor path.
    const double bc1 = 1 - std::pow(b1, double(st.step));
    const double bc2_sqrt = std::sqrt(1 - std::pow(b2, double(st.step)));
    const float decay = float(1 - lr_ * config_.weight_decay);
    const float step_size = float(lr_ / bc1);
    const float bc2_sqrt_f = float(bc2_sqrt);
    const float eps = float(config_.eps);
    const float fb2 = float(b2);
    const float one_b1 = float(1 - b1), one_b2 = float(1 - b2);

    float* pd = p.data<float>();
    float* m = st.exp_avg.data<float>();
    float* v = st.exp_avg_sq.data<float>();
    const float* gd = g.data<float>();
    const int64_t n = p.numel();
    for (int64_t k = 0; k < n; ++k) {
      const float gk = gd[k];
      pd[k] *= decay;
      m[k] += one_b1 * (gk - m[k]);  // PyTorch's lerp form of beta1 * m + (1 - beta1) * g
      v[k] = fb2 * v[k] + one_b2 * gk * gk;
      pd[k] -= step_size * m[k] / (std::sqrt(v[k]) / bc2_sqrt_f + eps);
    }
  }
}

}  // namespace loom::optim
