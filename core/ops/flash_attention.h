#pragma once
// The fused attention path of scaled_dot_product_attention on CUDA: softmax(scale q k^T) v without
// the score matrix in memory, forward and backward, by cuDNN's fused attention where it serves the
// call (kernels/cuda/attention_cudnn.h; LOOM_ATTENTION=loom turns it off) and loom's flash
// attention kernels otherwise (kernels/cuda/attention.h). Internal to
// core/ops; the public entry stays scaled_dot_product_attention, whose composite form is the
// oracle this path is tested against.
#include "core/tensor.h"

namespace loom::ops {

// Whether q, k, v [B, H, T, D] (any strides with D contiguous) take the fused kernels: CUDA,
// one 16-bit floating dtype, no mask, 4 dims with matching batch and heads.
bool flash_attention_applies(const Tensor& q, const Tensor& k, const Tensor& v,
                             const Tensor& mask);
// [B, H, Tq, Dv] attention output; differentiable in q, k and v. The result is a view of
// [B, Tq, H, D] memory, so the usual transpose(1, 2).reshape back to tokens is free.
Tensor flash_attention(const Tensor& q, const Tensor& k, const Tensor& v, double scale);

}  // namespace loom::ops
