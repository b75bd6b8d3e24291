#include "core/ops/cuda_util.h"

namespace loom::ops {

Device common_device(std::initializer_list<const Tensor*> operands, const char* op) {
  const Tensor* first = nullptr;
  for (const Tensor* t : operands) {
    if (!t->defined() || is_host_scalar(*t)) continue;
    if (!first) {
      first = t;
    } else {
      LOOM_CHECK(t->device() == first->device(), "[", op, "] operands on different devices: ",
                 first->device().str(), " ", shape_str(first->shape()), " and ",
                 t->device().str(), " ", shape_str(t->shape()), "; move one with to()");
    }
  }
  return first ? first->device() : Device::cpu();
}

kernels::cuda::IterShape iter_shape(const Shape& shape, const char* op) {
  LOOM_CHECK(int(shape.size()) <= kernels::cuda::kMaxDims, "[", op, "] CUDA kernels take at most ",
             kernels::cuda::kMaxDims, " dims, got ", shape_str(shape));
  kernels::cuda::IterShape s;
  s.ndim = int(shape.size());
  for (int d = 0; d < s.ndim; ++d) s.sizes[d] = shape[size_t(d)];
  return s;
}

kernels::cuda::Operand operand(const Tensor& t, const Shape& shape) {
  kernels::cuda::Operand o;
  o.dtype = t.dtype();
  if (is_host_scalar(t)) {
    o.scalar = t.item();
    return o;
  }
  o.data = t.raw_data();
  const Strides st = broadcast_strides(t.shape(), t.strides(), shape);
  for (size_t d = 0; d < st.size(); ++d) o.strides[d] = st[d];
  return o;
}

}  // namespace loom::ops
