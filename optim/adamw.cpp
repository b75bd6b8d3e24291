#include "optim/adamw.h"

#include <cmath>

#include "kernels/cuda/kernels.h"

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

StateKinds AdamW::state_kinds(size_t) const {
  return {.tensors = {"exp_avg", "exp_avg_sq"}, .counters = {"optim.step"}};
}

std::vector<ParamState> AdamW::state() const {
  std::vector<ParamState> out(params_.size());
  for (size_t i = 0; i < params_.size(); ++i) {
    const AdamWState& st = state_[i];
    out[i].counters["optim.step"] = st.step;
    if (st.exp_avg.defined()) out[i].tensors["exp_avg"] = st.exp_avg;
    if (st.exp_avg_sq.defined()) out[i].tensors["exp_avg_sq"] = st.exp_avg_sq;
  }
  return out;
}

void AdamW::load_state(const std::vector<ParamState>& state) {
  check_state_count(state);
  for (size_t i = 0; i < params_.size(); ++i) {
    const ParamState& s = state[i];
    check_param_state_of(i, s);
    const bool m = s.tensors.count("exp_avg"), v = s.tensors.count("exp_avg_sq");
    const int64_t step = s.counters.at("optim.step");
    const Device device = params_[i].device();
    LOOM_CHECK(m == v && step >= 0 && (step == 0 || m), "[adamw] parameter ", param_label(i),
               ": incomplete state (step ", step, ", exp_avg ", m ? "present" : "absent",
               ", exp_avg_sq ", v ? "present" : "absent", ")");
    state_[i] = {
        .step = step,
        .exp_avg = m ? copy_state_tensor(s.tensors.at("exp_avg"), device) : Tensor(),
        .exp_avg_sq = v ? copy_state_tensor(s.tensors.at("exp_avg_sq"), device) : Tensor()};
  }
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
      st.exp_avg = zeros(p.shape(), DType::f32, p.device());
      st.exp_avg_sq = zeros(p.shape(), DType::f32, p.device());
    }
    // The state is writable (checkpoint loading), so check what the loop below assumes.
    for (const Tensor* s : {&st.exp_avg, &st.exp_avg_sq}) {
      LOOM_CHECK(s->defined() && s->shape() == p.shape() && s->dtype() == DType::f32 &&
                     s->is_contiguous() && s->device() == p.device(),
                 "[adamw] state of parameter ", param_label(i), " ", shape_str(p.shape()),
                 " must be two contiguous f32 tensors of its shape on its device");
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

    if (p.device().is_cuda()) {
      kernels::cuda::adamw_step(p.data<float>(), g.data<float>(), st.exp_avg.data<float>(),
                                st.exp_avg_sq.data<float>(), p.numel(),
                                {.decay = decay,
                                 .step_size = step_size,
                                 .bc2_sqrt = bc2_sqrt_f,
                                 .eps = eps,
                                 .beta2 = fb2,
                                 .one_minus_beta1 = one_b1,
                                 .one_minus_beta2 = one_b2});
      continue;
    }
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
