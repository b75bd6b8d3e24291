#pragma once
// Device-side element access for the CUDA kernels: the CUDA type of each DType, conversion to and
// from the compute type, and a runtime-dtype load/store for kernels whose operands may differ in
// dtype (the branch is uniform across a launch, so it costs little beside the memory access).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels/dtype.h"

namespace loom::kernels::cuda {

template <class T>
struct Compute {
  using type = float;
};
template <>
struct Compute<double> {
  using type = double;
};
// Integers compute in double: exact below 2^53, truncating division like C++'s, and every scalar
// function of kernels/scalar_fns.h has a device overload for it.
template <>
struct Compute<int32_t> {
  using type = double;
};
template <>
struct Compute<int64_t> {
  using type = double;
};

template <class C, class T>
__device__ __forceinline__ C to_compute(T v) {
  return static_cast<C>(v);
}
template <>
__device__ __forceinline__ float to_compute<float, __nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
template <>
__device__ __forceinline__ float to_compute<float, __half>(__half v) {
  return __half2float(v);
}
template <class T, class C>
__device__ __forceinline__ T from_compute(C v) {
  return static_cast<T>(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_compute<__nv_bfloat16, float>(float v) {
  return __float2bfloat16(v);
}
template <>
__device__ __forceinline__ __half from_compute<__half, float>(float v) {
  return __float2half(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_compute<__nv_bfloat16, double>(double v) {
  return __float2bfloat16(float(v));
}
template <>
__device__ __forceinline__ __half from_compute<__half, double>(double v) {
  return __float2half(float(v));
}

// Element i of a runtime-typed operand, as C.
template <class C>
__device__ __forceinline__ C load_as(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::f32: return C(static_cast<const float*>(p)[i]);
    case DType::f64: return C(static_cast<const double*>(p)[i]);
    case DType::bf16: return C(__bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]));
    case DType::f16: return C(__half2float(static_cast<const __half*>(p)[i]));
    case DType::i32: return C(static_cast<const int32_t*>(p)[i]);
    case DType::i64: return C(static_cast<const int64_t*>(p)[i]);
    case DType::boolean: return C(static_cast<const bool*>(p)[i]);
  }
  return C(0);
}
template <class C>
__device__ __forceinline__ void store_as(void* p, DType t, int64_t i, C v) {
  switch (t) {
    case DType::f32: static_cast<float*>(p)[i] = float(v); return;
    case DType::f64: static_cast<double*>(p)[i] = double(v); return;
    case DType::bf16: static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16(float(v)); return;
    case DType::f16: static_cast<__half*>(p)[i] = __float2half(float(v)); return;
    case DType::i32: static_cast<int32_t*>(p)[i] = int32_t(v); return;
    case DType::i64: static_cast<int64_t*>(p)[i] = int64_t(v); return;
    case DType::boolean: static_cast<bool*>(p)[i] = v != C(0); return;
  }
}

[[noreturn]] inline void unsupported_dtype(const char* kernel, DType t) {
  throw std::runtime_error(std::string("[cuda] ") + kernel + ": dtype #" +
                           std::to_string(int(t)) + " is not supported by this kernel");
}

// Calls f(T{}) with T the CUDA storage type of a floating dtype (float, double, __nv_bfloat16,
// __half); other dtypes throw naming the kernel.
template <class F>
void dispatch_float(DType t, const char* kernel, F&& f) {
  switch (t) {
    case DType::f32: f(float{}); return;
    case DType::f64: f(double{}); return;
    case DType::bf16: f(__nv_bfloat16{}); return;
    case DType::f16: f(__half{}); return;
    default: unsupported_dtype(kernel, t);
  }
}
// As dispatch_float, plus i32 and i64.
template <class F>
void dispatch_arith(DType t, const char* kernel, F&& f) {
  switch (t) {
    case DType::i32: f(int32_t{}); return;
    case DType::i64: f(int64_t{}); return;
    default: dispatch_float(t, kernel, f);
  }
}
// Calls f(I{}) with I the C++ type of an index dtype (i32 or i64); others throw naming the kernel.
template <class F>
void dispatch_index(DType t, const char* kernel, F&& f) {
  switch (t) {
    case DType::i32: f(int32_t{}); return;
    case DType::i64: f(int64_t{}); return;
    default: unsupported_dtype(kernel, t);
  }
}

}  // namespace loom::kernels::cuda
