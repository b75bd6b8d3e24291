#pragma once
// Neural-network ops: softmax family, normalizations, embedding, dropout, losses and the
// reference attention. Normalizations and softmax are fused primitives with hand-written
// backward; the rest are composed from other ops.
#include <optional>

#include "core/rng.h"
#include "core/tensor.h"

namespace loom {

// Softmax / log-softmax along `dim`, computed with the max subtracted (stable).
Tensor softmax(const Tensor& x, int64_t dim = -1);
Tensor log_softmax(const Tensor& x, int64_t dim = -1);

// LayerNorm over the last dim: (x - mean) / sqrt(var + eps) [* weight + bias]. weight and bias
// are [C] or undefined (no affine). Biased variance, as in PyTorch.
Tensor layer_norm(const Tensor& x, const Tensor& weight = Tensor(), const Tensor& bias = Tensor(),
                  double eps = 1e-5);
// RMSNorm over the last dim: x / sqrt(mean(x^2) + eps) [* weight].
Tensor rms_norm(const Tensor& x, const Tensor& weight = Tensor(), double eps = 1e-6);

// Rows of `table` [V, C] picked by integer `indices` [...] -> [..., C]. Throws for an index
// outside [0, V).
Tensor embedding(const Tensor& indices, const Tensor& table);

// [..] integer class ids -> [.., num_classes] float one-hot (dtype f32 by default).
Tensor one_hot(const Tensor& indices, int64_t num_classes, DType dtype = DType::f32);

// Inverted dropout: zeroes each element with probability p and scales the rest by 1/(1-p).
// Identity when !training or p == 0.
Tensor dropout(const Tensor& x, double p, bool training, Generator& gen);

// Mean cross-entropy of logits [N, K] against integer targets [N]; targets equal to
// ignore_index are skipped (and excluded from the mean).
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index = -100);
// Mean squared error over all elements.
Tensor mse_loss(const Tensor& input, const Tensor& target);

// Reference attention: softmax(q k^T * scale + mask) v with q [.., Tq, D], k [.., Tk, D],
// v [.., Tk, Dv]. `mask` (bool, broadcastable to [.., Tq, Tk]) keeps positions where true.
// scale defaults to 1/sqrt(D). Composed from matmul/softmax: the oracle for fused kernels.
Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    const Tensor& mask = Tensor(),
                                    std::optional<double> scale = std::nullopt);

}  // namespace loom
