#pragma once
// Autocast: mixed precision by casting at the ops that pay for it. While an AutocastGuard lives on
// this thread, matmul (and so linear, convolution and attention) casts its floating CUDA operands
// to the guard's dtype (bf16 by default) and returns that dtype; every other op runs in the dtype
// its inputs have. With f32 parameters this gives the usual recipe: f32 master weights, gradients
// and optimizer state (the cast is differentiable, so gradients reach the weights in f32); GEMMs
// and attention in bf16 with f32 accumulation; norms (f32 statistics), softmax, losses and
// reductions in f32 wherever their input is the f32 residual stream, and binary ops promote a bf16
// branch meeting an f32 tensor to f32. CPU tensors are never cast (the CPU computes in f32/f64).
// A nested AutocastGuard(DType::f32) keeps a region in f32 (the MoE router).
#include <optional>

#include "core/tensor.h"

namespace loom {

class AutocastGuard {
 public:
  explicit AutocastGuard(DType dtype = DType::bf16, bool enabled = true);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  std::optional<DType> prev_;
};

// The dtype the innermost live guard on this thread casts to, if any.
std::optional<DType> autocast_dtype();
// t cast to the autocast dtype when a guard is live and t is a floating CUDA tensor of another
// dtype; t itself otherwise.
Tensor autocast(const Tensor& t);

}  // namespace loom
