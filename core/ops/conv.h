#pragma once
// Convolutions and max pooling over NC[D]HW tensors (CPU, f32 or f64).
//
// Output extent per spatial dim: (in + 2 * padding - kernel) / stride + 1 (floor), which must be
// at least 1. Convolution pads with zeros and runs as im2col (vol2col in 3-D) + GEMM; the 2-D
// forms are the 3-D ones with depth 1. A DiT patch embedding (kernel = stride = p, no padding)
// is that same path, where the im2col step is a plain reshape copy. Gradients flow to x, weight
// and bias (first order: the gradient ops throw if asked for their own gradient). Inputs may be
// non-contiguous (they are copied); every error is a loom::Error naming the op and the shapes.
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
// Max over windows of [N, C, D, H, W]; padding counts as -inf and may be at most half the kernel
// (so every window holds a real element). The gradient goes to the first maximum of each window
// (row-major order inside the window); a NaN counts as the maximum.
Tensor max_pool3d(const Tensor& x, std::array<int64_t, 3> kernel, std::array<int64_t, 3> stride,
                  std::array<int64_t, 3> padding = {0, 0, 0});
// 2-D form of max_pool3d over [N, C, H, W].
Tensor max_pool2d(const Tensor& x, std::array<int64_t, 2> kernel, std::array<int64_t, 2> stride,
                  std::array<int64_t, 2> padding = {0, 0});

}  // namespace loom
