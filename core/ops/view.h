#pragma once
// View ops (share storage, differentiable) and the copy op behind contiguous/clone/to.
// Tensor's member functions (reshape, permute, slice, expand, to, ...) call these; use those.
#include "core/tensor.h"

namespace loom::ops {

// A view with the new shape when the strides allow it; otherwise a copy when allow_copy, else
// an error. One dim may be -1 (inferred).
Tensor reshape(const Tensor& x, const Shape& shape, bool allow_copy);
Tensor permute(const Tensor& x, const std::vector<int64_t>& dims);
// Elements start, start+step, ... < end along dim (start/end clamped like Python slices).
Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end, int64_t step);
Tensor expand(const Tensor& x, const Shape& shape);
// A contiguous copy converted to dtype on device. Gradient converts back.
Tensor copy(const Tensor& x, DType dtype, Device device);

}  // namespace loom::ops
