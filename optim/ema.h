#pragma once
// Exponential moving average of parameters: after each optimizer step,
//   ema = decay * ema + (1 - decay) * param
// The average starts equal to the parameters (DiT's recipe). The EMA copy is a plain list of
// tensors in the order of the parameters it tracks; names come from the caller.
#include <vector>

#include "core/tensor.h"

namespace loom::optim {

class Ema {
 public:
  Ema(std::vector<Tensor> params, double decay);
  void update();
  // The averaged tensors, one per parameter (same shapes, f32).
  const std::vector<Tensor>& averages() const { return averages_; }
  double decay() const { return decay_; }
  // Copies the averages into `targets` (e.g. a second model used for sampling), in order.
  void copy_to(const std::vector<Tensor>& targets) const;

 private:
  std::vector<Tensor> params_;
  std::vector<Tensor> averages_;
  double decay_;
};

}  // namespace loom::optim
