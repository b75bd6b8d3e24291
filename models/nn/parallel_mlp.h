#pragma once
// ParallelMlp: nn::Mlp (DiT's block MLP, fc2(GELU_tanh(fc1(x)))) split by hidden width over tp
// (model_parallel.h): fc1 is a ColumnParallelLinear(in -> hidden), fc2 a RowParallelLinear(hidden
// -> out), so the rank computes hidden / tp of the hidden units and the only collectives are the
// linears' (parallel_linear.h): copy_to and reduce_from, or under sequence_parallel an all-gather
// and a reduce-scatter of tokens. Same children, parameter names and init draws as nn::Mlp.
// x [B, Tx, in] -> [B, Tx, out] with Tx the residual-stream token count.
#include <memory>

#include "core/rng.h"
#include "models/nn/mlp.h"
#include "models/nn/model_parallel.h"
#include "models/nn/parallel_linear.h"

namespace loom::nn {

class ParallelMlp : public Module {
 public:
  // Throws unless hidden_features is divisible by tp.
  ParallelMlp(const MlpConfig& config, const ModelParallel& parallel, Generator& gen);

  Tensor forward(const Tensor& x) const;

  ColumnParallelLinear& fc1() const { return *fc1_; }
  RowParallelLinear& fc2() const { return *fc2_; }

 private:
  std::shared_ptr<ColumnParallelLinear> fc1_;
  std::shared_ptr<RowParallelLinear> fc2_;
};

}  // namespace loom::nn
