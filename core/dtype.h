#pragma once
// Element types. f32/f64 compute everywhere on the CPU (f64 exists for gradient checks); bf16 and
// f16 are storage types on the CPU (convert with to(DType::f32) to compute) and compute types on
// CUDA. Integer and bool tensors hold indices, labels and masks.
#include <cstdint>
#include <string>

#include "kernels/dtype.h"
#include "kernels/half.h"

namespace loom {

size_t dtype_size(DType t);
const char* dtype_name(DType t);
bool is_floating(DType t);

// Maps a C++ type to its DType: dtype_of<float>() == DType::f32.
template <class T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() {
  return DType::f32;
}
template <>
constexpr DType dtype_of<double>() {
  return DType::f64;
}
template <>
constexpr DType dtype_of<bf16>() {
  return DType::bf16;
}
template <>
constexpr DType dtype_of<f16>() {
  return DType::f16;
}
template <>
constexpr DType dtype_of<int32_t>() {
  return DType::i32;
}
template <>
constexpr DType dtype_of<int64_t>() {
  return DType::i64;
}
template <>
constexpr DType dtype_of<bool>() {
  return DType::boolean;
}

}  // namespace loom

// Runs the body with `scalar_t` bound to the C++ type of `dtype`, for every dtype the list allows.
// Unsupported dtypes throw loom::Error naming `op`.
#define LOOM_DTYPE_CASE(enum_v, type, ...) \
  case ::loom::DType::enum_v: {            \
    using scalar_t = type;                 \
    __VA_ARGS__();                         \
    break;                                 \
  }

#define LOOM_DISPATCH_FLOAT(dtype, op, ...)                                                 \
  switch (dtype) {                                                                          \
    LOOM_DTYPE_CASE(f32, float, __VA_ARGS__)                                                \
    LOOM_DTYPE_CASE(f64, double, __VA_ARGS__)                                               \
    default:                                                                                \
      LOOM_FAIL("[", op, "] dtype ", ::loom::dtype_name(dtype),                             \
                " is not supported on the CPU (use f32 or f64; cast with to(DType::f32))"); \
  }

#define LOOM_DISPATCH_ALL(dtype, op, ...)                       \
  switch (dtype) {                                              \
    LOOM_DTYPE_CASE(f32, float, __VA_ARGS__)                    \
    LOOM_DTYPE_CASE(f64, double, __VA_ARGS__)                   \
    LOOM_DTYPE_CASE(i32, int32_t, __VA_ARGS__)                  \
    LOOM_DTYPE_CASE(i64, int64_t, __VA_ARGS__)                  \
    LOOM_DTYPE_CASE(boolean, bool, __VA_ARGS__)                 \
    default:                                                    \
      LOOM_FAIL("[", op, "] dtype ", ::loom::dtype_name(dtype), \
                " is not supported on the CPU for this op");    \
  }

#define LOOM_DISPATCH_INDEX(dtype, op, ...)                                                    \
  switch (dtype) {                                                                             \
    LOOM_DTYPE_CASE(i32, int32_t, __VA_ARGS__)                                                 \
    LOOM_DTYPE_CASE(i64, int64_t, __VA_ARGS__)                                                 \
    default:                                                                                   \
      LOOM_FAIL("[", op, "] index dtype must be i32 or i64, got ", ::loom::dtype_name(dtype)); \
  }
