#pragma once
// In-place parameter initializers (loom::nn::init), named after torch.nn.init with the trailing
// underscore that marks an in-place write. They write through the handle into its storage, so a
// view (e.g. a conv weight viewed as a matrix) initializes the viewed elements. Random ones draw
// from a counter-based Generator: the values depend only on (seed, stream, offset) and the shape,
// and each call advances the generator, so a fixed construction order reproduces a model exactly.
// Draws are made in row-major order of the tensor's logical shape, in fp64, then converted.
//
// Fans follow PyTorch: for a weight [out, in, k...], fan_in = in * prod(k), fan_out = out *
// prod(k).
#include "core/rng.h"
#include "core/tensor.h"

namespace loom::nn::init {

// Uniform on [lo, hi).
void uniform_(const Tensor& t, Generator& gen, double lo, double hi);
// Normal with the given mean and standard deviation.
void normal_(const Tensor& t, Generator& gen, double mean = 0.0, double std = 1.0);
void zeros_(const Tensor& t);
void ones_(const Tensor& t);
// Uniform on [-b, b) with b = gain * sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio). Needs dim
// >= 2.
void xavier_uniform_(const Tensor& t, Generator& gen, double gain = 1.0);
// Uniform on [-b, b) with b = sqrt(6 / ((1 + a^2) fan_in)): He init for leaky-ReLU slope a, fan_in
// mode. a = sqrt(5) is PyTorch's default for Linear/Conv weights (bound 1/sqrt(fan_in)).
void kaiming_uniform_(const Tensor& t, Generator& gen, double a = 0.0);

}  // namespace loom::nn::init
