#pragma once
// Mlp (timm style, DiT's block MLP, ALGORITHMS.md §1.5): fc2(GELU_tanh(fc1(x))), both Linear with
// bias, no dropout. x [..., in] -> [..., out]. Children "fc1" (in -> hidden) and "fc2"
// (hidden -> out), so parameters are "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias".
// Init is Linear's (Xavier-uniform weights, zero biases). Forward is one gelu_mlp op
// (core/ops/fused_mlp.h: two GEMMs with fused epilogues on CUDA under bf16 autocast).
#include <memory>

#include "core/rng.h"
#include "models/nn/linear.h"

namespace loom::nn {

struct MlpConfig {
  int64_t in_features = 0;
  int64_t hidden_features = 0;
  int64_t out_features = 0;  // 0: same as in_features
};

class Mlp : public Module {
 public:
  Mlp(const MlpConfig& config, Generator& gen);

  // x [..., in] -> [..., out].
  Tensor forward(const Tensor& x) const;
  void reset_parameters(Generator& gen);

  Linear& fc1() const { return *fc1_; }
  Linear& fc2() const { return *fc2_; }

 private:
  std::shared_ptr<Linear> fc1_, fc2_;
};

}  // namespace loom::nn
