#pragma once
// What the diffusion processes (GaussianDiffusion, RectifiedFlow) need from a network, so that they
// do not depend on the DiT class.
//
// A ModelFn maps a noisy batch x_t [B, C, ...] (usually [B, C, H, W]) and the per-sample value the
// network is conditioned on, t_model [B] f32, to its prediction [B, C_out, ...] of x_t's dtype.
// For Gaussian diffusion t_model is the original DDPM step index as a float (also for a respaced
// process) and the output is ε̂ (C_out = C) or ε̂ followed by the variance interpolation v
// (C_out = 2C, learned sigma). For rectified flow t_model is t in (0, 1) and the first C output
// channels are the velocity (extra channels are ignored).
//
// Class conditioning and classifier-free guidance live in the network, not here: the trainer
// captures the labels y [B] in the lambda, and the process only ever sees a batch of B.
//   without guidance:  [&](const Tensor& x, const Tensor& t) { return dit.forward(x, t, y).out; }
//   with scale s:      [&](const Tensor& x, const Tensor& t) {
//                        return dit.forward_with_cfg(x, t, y, s);
//                      }
// forward_with_cfg runs [x; x] with labels [y; null] internally and returns [B, C_out, ...] with
// ε̂ (or v̂) = out_u + s·(out_c - out_u). The reference instead samples a doubled batch [z; z]
// and keeps its first half; since its forward_with_cfg reads only the first half of its input,
// both give the same distribution. (The reference's Gaussian-diffusion CFG guides only the first
// 3 of 4 ε channels, DiT-MoE's rectified flow all channels: ALGORITHMS.md §1.10, §2.5. That
// choice belongs to forward_with_cfg too.) Guidance is for sampling; training uses the plain
// forward with label dropout.
#include <cstdint>
#include <functional>

#include "core/tensor.h"

namespace loom::diffusion {

using ModelFn = std::function<Tensor(const Tensor& x_t, const Tensor& t_model)>;

// Called by the samplers after each step with the number of steps done (1..total).
using ProgressFn = std::function<void(int64_t step, int64_t total)>;

// Training losses of one batch: `loss` is what to backpropagate (a scalar, the mean over the
// batch of the per-sample objective); `mse` and `vb` are scalar batch means of its two parts, for
// logging (they share loss's graph; read them with item()). vb is 0 where a process has no
// variational-bound term.
struct Losses {
  Tensor loss;
  Tensor mse;
  Tensor vb;
};

}  // namespace loom::diffusion
