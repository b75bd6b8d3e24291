#pragma once
// Exponential moving average of parameters: after each optimizer step,
//   ema = d * ema + (1 - d) * param,   d = min(decay, (1 + n) / (10 + n)) with warmup, else decay
// where n counts the updates so far. The average starts equal to the parameters (DiT's recipe).
// Deviation from DiT (plain decay): the warmup keeps a short run's average from being dominated
// by the initial weights (with decay 0.9999 the zero-initialized output layer would still weigh
// 90% after 1000 steps, and sampling from such an average gives noise); for n >> 1/(1-decay) the
// two are identical. The EMA copy is a plain list of tensors in the order of the parameters it
// tracks; names come from the caller.
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace loom::optim {

class Ema {
 public:
  Ema(std::vector<Tensor> params, double decay, bool warmup = true);
  void update();
  // The decay the next update() uses.
  double current_decay() const;
  int64_t num_updates() const { return updates_; }
  void set_num_updates(int64_t n) { updates_ = n; }
  // The averaged tensors, one per parameter (same shapes, f32).
  const std::vector<Tensor>& averages() const { return averages_; }
  double decay() const { return decay_; }

 private:
  std::vector<Tensor> params_;
  std::vector<Tensor> averages_;
  double decay_;
  bool warmup_;
  int64_t updates_ = 0;
};

}  // namespace loom::optim
