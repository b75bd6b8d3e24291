#pragma once
// Helpers shared by the CPU op implementations in core/ops/*.cpp: the device check and the
// dispatch over the arithmetic dtypes. Not part of the public API.
#include "core/tensor.h"

namespace loom::ops {

// Throws "[op] CUDA tensors are not supported ..." unless t lives on the host.
inline void check_cpu(const Tensor& t, const char* op) {
  LOOM_CHECK(t.device().is_cpu(), "[", op, "] CUDA tensors are not supported by this build's ",
             "CPU op; move the tensor with to(Device::cpu())");
}

// Calls f(T{}) with T the C++ type of `t` among f32, f64 and (unless float_only) i32, i64;
// throws naming `op` and the dtype otherwise.
template <class F>
void dispatch_arith(DType t, bool float_only, const char* op, F&& f) {
  switch (t) {
    case DType::f32:
      f(float{});
      return;
    case DType::f64:
      f(double{});
      return;
    case DType::i32:
      if (!float_only) {
        f(int32_t{});
        return;
      }
      break;
    case DType::i64:
      if (!float_only) {
        f(int64_t{});
        return;
      }
      break;
    default:
      break;
  }
  LOOM_FAIL("[", op, "] dtype ", dtype_name(t), " is not supported on the CPU",
            float_only ? " (f32 or f64 expected)" : " (f32, f64, i32 or i64 expected)");
}

}  // namespace loom::ops
