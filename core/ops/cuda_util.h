#pragma once
// Helpers for the CUDA branches of core/ops/*.cpp: device checks and the kernels' operand
// descriptors (kernels/cuda/kernels.h). Not part of the public API.
#include "core/tensor.h"
#include "kernels/cuda/kernels.h"

namespace loom::ops {

// A 0-dim host tensor, which a CUDA op reads as a scalar argument (x * 2.0 on a CUDA x).
inline bool is_host_scalar(const Tensor& t) {
  return t.device().is_cpu() && t.dim() == 0;
}

// The device an op on these operands runs on: the one device of every operand that is not a host
// scalar. Throws naming `op` when two operands live on different devices.
Device common_device(std::initializer_list<const Tensor*> operands, const char* op);

// The kernels' iteration shape; throws naming `op` beyond kernels::cuda::kMaxDims dims.
kernels::cuda::IterShape iter_shape(const Shape& shape, const char* op);
// t read over `shape` (t's shape broadcasts to it); a host scalar becomes a scalar operand.
kernels::cuda::Operand operand(const Tensor& t, const Shape& shape);

}  // namespace loom::ops
