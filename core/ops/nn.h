#pragma once
// Neural-network ops: softmax family, normalizations, embedding, dropout, losses and the
// reference attention. Normalizations and softmax are fused primitives with hand-written
// backward; the rest are composed from other ops. Floating inputs are f32 or f64 on the CPU;
// index inputs are i32 or i64. Misuse throws loom::Error prefixed with the op name.
#include <optional>

#include "core/rng.h"
#include "core/tensor.h"

namespace loom {

// Softmax / log-softmax along `dim`, computed with the max subtracted (stable); sums accumulate
// in double. Entries equal to -inf get probability 0; a slice that is entirely -inf gives NaN
// (as in PyTorch).
Tensor softmax(const Tensor& x, int64_t dim = -1);
Tensor log_softmax(const Tensor& x, int64_t dim = -1);

// LayerNorm over the last dim: (x - mean) / sqrt(var + eps) [* weight + bias]. weight and bias
// are [C] or undefined (no affine; either may be given alone), of x's dtype. Biased variance, as
// in PyTorch. x is [..., C] with C >= 1; eps >= 0.
Tensor layer_norm(const Tensor& x, const Tensor& weight = Tensor(), const Tensor& bias = Tensor(),
                  double eps = 1e-5);
// RMSNorm over the last dim: x / sqrt(mean(x^2) + eps) [* weight].
Tensor rms_norm(const Tensor& x, const Tensor& weight = Tensor(), double eps = 1e-6);

// Rows of `table` [V, C] picked by integer `indices` [...] -> [..., C]. Throws for an index
// outside [0, V). The table's gradient sums the rows of repeated indices (deterministically).
Tensor embedding(const Tensor& indices, const Tensor& table);

// [..] integer class ids -> [.., num_classes] one-hot of `dtype` (f32 by default). Not
// differentiable; throws for an id outside [0, num_classes).
Tensor one_hot(const Tensor& indices, int64_t num_classes, DType dtype = DType::f32);

// Inverted dropout: zeroes each element with probability p and scales the rest by 1/(1-p).
// Identity (the same tensor, no draw from gen) when !training or p == 0; zeros when p == 1. The
// keep mask is drawn with bernoulli(shape, 1 - p, gen), so it is reproducible from gen's state.
// Gradient: g * mask / (1 - p).
Tensor dropout(const Tensor& x, double p, bool training, Generator& gen);

// Mean cross-entropy of logits [N, K] against integer targets [N] (more generally logits
// [..., K] and targets [...]); targets equal to ignore_index are skipped (and excluded from the
// mean); other targets outside [0, K) throw. When every target is ignored the result is NaN, as
// in PyTorch. Computed as log_softmax followed by picking the target entries.
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index = -100);
// Mean squared error over all elements; input and target must have the same shape and dtype.
Tensor mse_loss(const Tensor& input, const Tensor& target);

// Reference attention: softmax(q k^T * scale + mask) v with q [.., Tq, D], k [.., Tk, D],
// v [.., Tk, Dv]. `mask` (bool, broadcastable to [.., Tq, Tk]) keeps positions where true.
// scale defaults to 1/sqrt(D). Masked positions get -inf before the softmax, so a query whose
// keys are all masked gives NaN. Composed from matmul/where/softmax (the oracle for the fused
// kernels); on CUDA, unmasked bf16/f16 [B, H, T, D] inputs (bf16 under autocast) take loom's flash
// attention kernels instead (core/ops/flash_attention.h).
Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    const Tensor& mask = Tensor(),
                                    std::optional<double> scale = std::nullopt);

}  // namespace loom
