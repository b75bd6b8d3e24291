#pragma once
// The element types, shared by core (tensors) and the kernels (which take a dtype beside each
// device pointer). Core's dtype.h adds names, sizes and dispatch over them.
#include <cstdint>

namespace loom {

enum class DType : uint8_t { f32, f64, bf16, f16, i32, i64, boolean };

// Bytes per element.
constexpr int dtype_bytes(DType t) {
  switch (t) {
    case DType::f64:
    case DType::i64:
      return 8;
    case DType::f32:
    case DType::i32:
      return 4;
    case DType::bf16:
    case DType::f16:
      return 2;
    case DType::boolean:
      return 1;
  }
  return 0;
}

}  // namespace loom
