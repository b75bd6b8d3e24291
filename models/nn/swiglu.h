#pragma once
// SwiGLU feed-forward (DiT-MoE experts, ALGORITHMS.md §2.2):
//   y = down_proj(SiLU(gate_proj(x)) * up_proj(x)),  x [..., dim] -> [..., dim]
// Children "gate_proj" and "up_proj" (dim -> hidden_dim) and "down_proj" (hidden_dim -> dim), all
// Linear without bias (the names of DiT-MoE's MoeMLP, so its checkpoints map one to one).
// Init is Linear's (Xavier-uniform). The gate is the fused swiglu op (core/ops/moe_ops.h).
#include <memory>

#include "core/rng.h"
#include "models/nn/linear.h"

namespace loom::nn {

struct SwiGLUConfig {
  int64_t dim = 0;
  int64_t hidden_dim = 0;
};

class SwiGLU : public Module {
 public:
  SwiGLU(const SwiGLUConfig& config, Generator& gen);

  // x [..., dim] -> [..., dim].
  Tensor forward(const Tensor& x) const;
  void reset_parameters(Generator& gen);

  Linear& gate_proj() const { return *gate_proj_; }
  Linear& up_proj() const { return *up_proj_; }
  Linear& down_proj() const { return *down_proj_; }

 private:
  std::shared_ptr<Linear> gate_proj_, up_proj_, down_proj_;
};

}  // namespace loom::nn
