#pragma once
// CPU convolution and max-pooling kernels over contiguous planes of 3-D volumes.
//
// Layout: x is [N, C, D, H, W] row-major, weight [Cout, C, kD, kH, kW], y [N, Cout, Do, Ho, Wo];
// 2-D callers use D = kD = 1, stride 1 and padding 0 along depth. A "plane" is one [D, H, W]
// volume of one sample and channel, so N*C planes lie back to back. Convolution runs as vol2col
// (im2col in 3-D) + GEMM (kernels/cpu/gemm.h, OpenBLAS); samples are processed in groups whose
// column buffer fits `workspace_bytes`, and the column copies run in parallel over the group's
// planes. Every output is overwritten, never accumulated. The copy and pooling kernels write each
// element from one chunk in a fixed order, so they do not depend on the thread count; sample
// contributions to dweight are summed in sample order.
#include <array>
#include <cstdint>

namespace loom::kernels::cpu {

// Geometry of one convolution or pooling window sweep (per plane).
struct ConvGeom {
  int64_t channels = 0;         // C: input channels (conv) or channels (pooling)
  std::array<int64_t, 3> in{};  // D, H, W
  std::array<int64_t, 3> kernel{1, 1, 1};
  std::array<int64_t, 3> stride{1, 1, 1};
  std::array<int64_t, 3> padding{};  // zero (conv) or -inf (pooling) on both sides
  std::array<int64_t, 3> out{};      // (in + 2 padding - kernel) / stride + 1

  int64_t in_numel() const { return in[0] * in[1] * in[2]; }
  int64_t out_numel() const { return out[0] * out[1] * out[2]; }
  int64_t kernel_numel() const { return kernel[0] * kernel[1] * kernel[2]; }
  // A 1x1x1 kernel with stride 1 and no padding: the columns are the input itself.
  bool is_pointwise() const;
};

// Output extent of one dim, or -1 when the kernel does not fit into the padded input.
inline int64_t conv_out_size(int64_t in, int64_t kernel, int64_t stride, int64_t padding) {
  const int64_t span = in + 2 * padding - kernel;
  return span < 0 ? -1 : span / stride + 1;
}

inline constexpr int64_t kConvWorkspaceBytes = int64_t(64) << 20;

// cols [planes * kD*kH*kW, Do*Ho*Wo] from x [planes, D, H, W]; padded taps read 0.
template <class T>
void vol2col(const ConvGeom& g, int64_t planes, const T* x, T* cols);
// dx [planes, D, H, W] = the sum of every column entry into the input element it was read from
// (the adjoint of vol2col).
template <class T>
void col2vol(const ConvGeom& g, int64_t planes, const T* cols, T* dx);

// y [n, cout, out] = weight [cout, C*k] * cols(x) (+ bias [cout] when bias is not null).
template <class T>
void conv_forward(const ConvGeom& g, int64_t n, int64_t cout, const T* x, const T* weight,
                  const T* bias, T* y, int64_t workspace_bytes = kConvWorkspaceBytes);
// dx [n, C, in] = col2vol(weight^T * dy[i]) for each sample i.
template <class T>
void conv_backward_input(const ConvGeom& g, int64_t n, int64_t cout, const T* dy, const T* weight,
                         T* dx, int64_t workspace_bytes = kConvWorkspaceBytes);
// dweight [cout, C*k] = sum over samples i (in order) of dy[i] * cols(x[i])^T.
template <class T>
void conv_backward_weight(const ConvGeom& g, int64_t n, int64_t cout, const T* dy, const T* x,
                          T* dweight, int64_t workspace_bytes = kConvWorkspaceBytes);

// y [planes, out] = window maxima of x [planes, in]; argmax [planes, out] is the flat index
// (d*H*W + h*W + w) in its plane of the first maximum (a NaN counts as the maximum). Every
// window must hold at least one real (unpadded) element.
template <class T>
void max_pool_forward(const ConvGeom& g, int64_t planes, const T* x, T* y, int64_t* argmax);
// dx [planes, in] = the sum of dy [planes, out] routed to the argmax positions.
template <class T>
void max_pool_backward(const ConvGeom& g, int64_t planes, const T* dy, const int64_t* argmax,
                       T* dx);

}  // namespace loom::kernels::cpu
