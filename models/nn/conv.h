#pragma once
// Conv2d and Conv3d over NC[D]HW tensors (no dilation, no groups).
//   Conv2d: x [N, Cin, H, W]    -> [N, Cout, Ho, Wo],     weight [Cout, Cin, kH, kW]
//   Conv3d: x [N, Cin, D, H, W] -> [N, Cout, Do, Ho, Wo], weight [Cout, Cin, kD, kH, kW]
// with Ho = (H + 2 pad - k) / stride + 1 per spatial dim. Parameters "weight" and "bias" [Cout]
// (when bias is on).
//
// Initialization follows DiT's patch embedding (ALGORITHMS.md §1.7): Xavier-uniform on the weight
// viewed as the matrix [Cout, Cin * prod(k)] (fan_out = Cout, not Cout * prod(k) as
// init::xavier_uniform_ on the 4-D/5-D tensor would use), zero bias. PyTorch's default differs.
#include <array>

#include "core/rng.h"
#include "models/nn/module.h"

namespace loom::nn {

struct Conv2dConfig {
  int64_t in_channels = 0;
  int64_t out_channels = 0;
  std::array<int64_t, 2> kernel_size = {1, 1};
  std::array<int64_t, 2> stride = {1, 1};
  std::array<int64_t, 2> padding = {0, 0};
  bool bias = true;
};

struct Conv3dConfig {
  int64_t in_channels = 0;
  int64_t out_channels = 0;
  std::array<int64_t, 3> kernel_size = {1, 1, 1};
  std::array<int64_t, 3> stride = {1, 1, 1};
  std::array<int64_t, 3> padding = {0, 0, 0};
  bool bias = true;
};

class Conv2d : public Module {
 public:
  Conv2d(const Conv2dConfig& config, Generator& gen);

  // x [N, Cin, H, W] -> [N, Cout, Ho, Wo].
  Tensor forward(const Tensor& x) const;
  void reset_parameters(Generator& gen);

  const Conv2dConfig& config() const { return config_; }
  const Tensor& weight() const { return weight_; }
  const Tensor& bias() const { return bias_; }  // undefined without bias

 private:
  Conv2dConfig config_;
  Tensor weight_, bias_;
};

class Conv3d : public Module {
 public:
  Conv3d(const Conv3dConfig& config, Generator& gen);

  // x [N, Cin, D, H, W] -> [N, Cout, Do, Ho, Wo].
  Tensor forward(const Tensor& x) const;
  void reset_parameters(Generator& gen);

  const Conv3dConfig& config() const { return config_; }
  const Tensor& weight() const { return weight_; }
  const Tensor& bias() const { return bias_; }  // undefined without bias

 private:
  Conv3dConfig config_;
  Tensor weight_, bias_;
};

}  // namespace loom::nn
