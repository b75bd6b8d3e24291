#include "optim/ema.h"

#include <algorithm>

#include "core/error.h"
#include "core/ops/elementwise.h"
#include "kernels/cpu/elementwise.h"

namespace loom::optim {

Ema::Ema(std::vector<Tensor> params, double decay, bool warmup)
    : params_(std::move(params)), decay_(decay), warmup_(warmup) {
  LOOM_CHECK(decay >= 0 && decay <= 1, "[ema] decay must be in [0, 1], got ", decay);
  NoGradGuard guard;
  for (const Tensor& p : params_) {
    LOOM_CHECK(p.dtype() == DType::f32, "[ema] parameters must be f32, got ",
               dtype_name(p.dtype()), " on ", p.device().str());
    averages_.push_back(p.detach().clone());
  }
}

double Ema::current_decay() const {
  if (!warmup_) return decay_;
  return std::min(decay_, double(1 + updates_) / double(10 + updates_));
}

void Ema::update() {
  const float d = float(current_decay());
  ++updates_;
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor p = params_[i].contiguous();
    if (p.device().is_cuda()) {  // the same formula through device ops
      NoGradGuard guard;
      copy_into(averages_[i], averages_[i] * double(d) + p * (1.0 - double(d)));
      continue;
    }
    float* a = averages_[i].data<float>();
    const float* v = p.data<float>();
    kernels::cpu::parallel_for(0, p.numel(), 1 << 15, [&](int64_t b, int64_t e) {
      for (int64_t j = b; j < e; ++j) a[j] = d * a[j] + (1.0f - d) * v[j];
    });
  }
}

}  // namespace loom::optim
