#pragma once
// Convolutions and pooling over NC[D]HW tensors, via im2col + GEMM on the CPU.
#include <array>

#include "core/tensor.h"

namespace loom {

// x [N, Cin, H, W], weight [Cout, Cin, kH, kW], bias [Cout] or undefined -> [N, Cout, Ho, Wo].
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(),
              std::array<int64_t, 2> stride = {1, 1}, std::array<int64_t, 2> padding = {0, 0});
// x [N, Cin, D, H, W], weight [Cout, Cin, kD, kH, kW] -> [N, Cout, Do, Ho, Wo].
Tensor conv3d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(),
              std::array<int64_t, 3> stride = {1, 1, 1},
              std::array<int64_t, 3> padding = {0, 0, 0});
// Max over windows of [N, C, D, H, W]; padding counts as -inf. The gradient goes to the first
// maximum of each window.
Tensor max_pool3d(const Tensor& x, std::array<int64_t, 3> kernel, std::array<int64_t, 3> stride,
                  std::array<int64_t, 3> padding = {0, 0, 0});
// 2-D form of max_pool3d over [N, C, H, W].
Tensor max_pool2d(const Tensor& x, std::array<int64_t, 2> kernel, std::array<int64_t, 2> stride,
                  std::array<int64_t, 2> padding = {0, 0});

}  // namespace loom
