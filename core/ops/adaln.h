#pragma once
// The adaLN ops of the DiT block, fused: the modulated LayerNorm in front of attention and the MLP,
// and the gated residual behind them,
//   h = gated_residual(x, gate, Attn(layer_norm_modulate(x, shift, scale))),
// each one kernel forward and backward on CPU and CUDA instead of a chain of elementwise passes
// (kernels/cpu/adaln.h, kernels/cuda/adaln.h). Their composites are kept beside them as the test
// oracle and as the CUDA path for rows longer than kernels::cuda::kAdalnMaxCols.
//
// Shapes: x and y are [B, T, C]; shift, scale and gate are [B, 1, C] (the adaLN chunks) or [B, C],
// one vector per batch item broadcast over its T tokens. Each gradient comes back in its input's
// shape and dtype. The modulation vectors may have any floating dtype (bf16 under autocast); they
// are read, and their gradients summed over tokens, in f32 (f64 when x is f64). The backwards are
// hand-written and first order: a gradient of them is not supported.
#include "core/tensor.h"

namespace loom {

// y = (x - mean) / sqrt(var + eps) * (1 + scale) + shift, the LayerNorm (no affine, biased
// variance) over the last dim. x is floating (f32 or f64 on the CPU). y has x's dtype, except
// under autocast (core/autocast.h), where an f32 CUDA x gives the autocast dtype directly: the
// consumer is a linear layer, which would cast anyway. The backward reads x, scale and the row
// statistics mean and rstd ([B * T], f32) kept by the forward, never a normalized copy of x:
// dx, dshift = sum_t dy, dscale = sum_t dy * x_hat.
Tensor layer_norm_modulate(const Tensor& x, const Tensor& shift, const Tensor& scale,
                           double eps = 1e-6);

// layer_norm_modulate together with x itself, for a block that adds x back as its residual:
//   {normed, residual} = layer_norm_modulate_residual(x, shift, scale);
//   out = gated_residual(residual, gate, branch(normed));
// Values: normed is layer_norm_modulate(x, shift, scale) and residual is x (its storage, not a
// copy). What differs is the backward: the gradient reaching `residual` is added to x's gradient
// by the LayerNorm backward kernel, where otherwise the autograd engine would sum x's two
// gradients in a separate pass over the (f32) residual stream.
struct NormedAndResidual {
  Tensor normed, residual;
};
NormedAndResidual layer_norm_modulate_residual(const Tensor& x, const Tensor& shift,
                                               const Tensor& scale, double eps = 1e-6);

// out = x + gate * y in x's dtype. On CUDA, y may be bf16 or f16 beside an f32 x (a linear's
// output under autocast); other dtype mixes cast y to x's dtype first. Backward: dx is the output
// gradient itself (no copy), dy = dout * gate in y's dtype, dgate = sum_t dout * y.
Tensor gated_residual(const Tensor& x, const Tensor& gate, const Tensor& y);

// The composites, built from layer_norm, mul and add with their own autograd: the oracles of the
// fused ops (same arguments; the result follows those ops' dtype rules).
Tensor layer_norm_modulate_reference(const Tensor& x, const Tensor& shift, const Tensor& scale,
                                     double eps = 1e-6);
Tensor gated_residual_reference(const Tensor& x, const Tensor& gate, const Tensor& y);

}  // namespace loom
