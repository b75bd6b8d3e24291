#include "models/nn/conv.h"

#include "core/ops/conv.h"
#include "models/nn/init.h"

namespace loom::nn {

namespace {

// Shared by both ranks: validates the config and registers [Cout, Cin, k...] and [Cout].
template <size_t N>
void setup(Module& m, const char* name, int64_t cin, int64_t cout,
           const std::array<int64_t, N>& kernel, const std::array<int64_t, N>& stride,
           const std::array<int64_t, N>& padding, bool bias, Tensor* weight, Tensor* b) {
  LOOM_CHECK(cin > 0 && cout > 0, "[", name,
             "] in_channels and out_channels must be positive, got ", cin, " and ", cout);
  Shape shape{cout, cin};
  for (size_t i = 0; i < N; ++i) {
    LOOM_CHECK(kernel[i] > 0 && stride[i] > 0 && padding[i] >= 0, "[", name,
               "] kernel_size and stride must be positive and padding non-negative, got kernel ",
               kernel[i], ", stride ", stride[i], ", padding ", padding[i], " in spatial dim ", i);
    shape.push_back(kernel[i]);
  }
  *weight = m.register_parameter("weight", empty(shape));
  if (bias) *b = m.register_parameter("bias", empty({cout}));
}

void reset(const Tensor& weight, const Tensor& bias, Generator& gen) {
  // The matrix view gives DiT's fans (fan_out = Cout); see the header.
  init::xavier_uniform_(weight.detach().view({weight.size(0), -1}), gen);
  if (bias.defined()) init::zeros_(bias);
}

void check_input(const Tensor& x, int64_t rank, int64_t cin, const char* name) {
  LOOM_CHECK(x.dim() == rank + 2 && x.size(1) == cin, "[", name, "] expected input with ", rank + 2,
             " dims and ", cin, " channels in dim 1, got ", shape_str(x.shape()));
}

}  // namespace

Conv2d::Conv2d(const Conv2dConfig& config, Generator& gen) : config_(config) {
  setup<2>(*this, "Conv2d", config.in_channels, config.out_channels, config.kernel_size,
           config.stride, config.padding, config.bias, &weight_, &bias_);
  reset_parameters(gen);
}

void Conv2d::reset_parameters(Generator& gen) {
  reset(weight_, bias_, gen);
}

Tensor Conv2d::forward(const Tensor& x) const {
  check_input(x, 2, config_.in_channels, "Conv2d");
  return conv2d(x, weight_, bias_, config_.stride, config_.padding);
}

Conv3d::Conv3d(const Conv3dConfig& config, Generator& gen) : config_(config) {
  setup<3>(*this, "Conv3d", config.in_channels, config.out_channels, config.kernel_size,
           config.stride, config.padding, config.bias, &weight_, &bias_);
  reset_parameters(gen);
}

void Conv3d::reset_parameters(Generator& gen) {
  reset(weight_, bias_, gen);
}

Tensor Conv3d::forward(const Tensor& x) const {
  check_input(x, 3, config_.in_channels, "Conv3d");
  return conv3d(x, weight_, bias_, config_.stride, config_.padding);
}

}  // namespace loom::nn
