#pragma once
// The adaLN kernels of the DiT block on CUDA (core/ops/adaln.h):
//   layer_norm_modulate: y = (x - mean) * rstd * (1 + scale) + shift   (LayerNorm, no affine)
//   gated_residual:      out = x + gate * y
// and their backward. Plain C++ like kernels.h; adaln.cu implements it, stub.cpp makes each
// entry throw in CPU-only builds. CPU twins with the same formulas: kernels/cpu/adaln.h.
//
// Layout: x, y, out and their gradients are [B, T, C] contiguous (device pointers to element 0);
// shift, scale, gate and their gradients are [B, C] contiguous, one vector per batch item
// broadcast over its T tokens; mean and rstd are [B * T]. C <= kAdalnMaxCols.
// dtypes: `x_dtype` is that of x, out, dx and dout; `y_dtype` that of y (the modulated output, or
// the gated branch) and dy. They are equal (f32, f64, bf16 or f16), or x is f32 and y bf16/f16.
// shift, scale, gate, their gradients, mean and rstd are in the compute dtype: f64 when x is f64,
// f32 otherwise; all arithmetic runs in it. Every output is overwritten; none may alias an input.
//
// Launch shape: a block owns one batch item's columns over a tile of tokens and keeps the
// modulation vectors and up to 16 elements of the current row per thread in registers, so x and
// dy are read once and y, dx written once: 16-byte packs when C fills whole packs and every
// [B, T, C] pointer is 16-byte aligned, element by element otherwise. Sums over a row combine in
// a fixed order. Sums over tokens go into per-tile partials that a second pass adds in tile order;
// the tiling depends only on (B, T, C), so every result is bitwise reproducible run to run.
// All work is enqueued on compute_stream(); launches are checked.
#include <cstdint>

#include "kernels/dtype.h"

namespace loom::kernels::cuda {

// Longest row (C) the kernels take; the ops fall back to their composite beyond it.
constexpr int64_t kAdalnMaxCols = 4096;

// y = LN(x) * (1 + scale) + shift; writes the row statistics mean and rstd.
void layer_norm_modulate_forward(const void* x, const void* shift, const void* scale, void* y,
                                 void* mean, void* rstd, DType x_dtype, DType y_dtype,
                                 int64_t batch, int64_t tokens, int64_t cols, double eps);
// With g = dy, gz = g * (1 + scale) and x_hat = (x - mean) * rstd:
//   dx = rstd * (gz - mean_C(gz) - x_hat * mean_C(gz * x_hat)),
//   dshift[b] = sum_t g,  dscale[b] = sum_t g * x_hat.
// dres (x's dtype, may be null) is added to dx: the gradient of a residual use of x, summed here
// instead of in a separate pass.
void layer_norm_modulate_backward(const void* x, const void* scale, const void* mean,
                                  const void* rstd, const void* dy, const void* dres, void* dx,
                                  void* dshift, void* dscale, DType x_dtype, DType y_dtype,
                                  int64_t batch, int64_t tokens, int64_t cols);

// out = x + gate * y.
void gated_residual_forward(const void* x, const void* gate, const void* y, void* out,
                            DType x_dtype, DType y_dtype, int64_t batch, int64_t tokens,
                            int64_t cols);
// dy = dout * gate, dgate[b] = sum_t dout * y (dx is dout itself: nothing to compute).
void gated_residual_backward(const void* gate, const void* y, const void* dout, void* dy,
                             void* dgate, DType x_dtype, DType y_dtype, int64_t batch,
                             int64_t tokens, int64_t cols);

}  // namespace loom::kernels::cuda
