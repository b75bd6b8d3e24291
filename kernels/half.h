#pragma once
// 16-bit floating types as plain host structs: bf16 (upper half of an f32) and IEEE f16. Both
// convert to and from float with round-to-nearest-even. Shared by core (storage types) and the
// kernels (conversion loops); no arithmetic operators on purpose: compute in float.
#include <cstdint>
#include <cstring>

namespace loom {

// bfloat16: upper half of an IEEE f32, round-to-nearest-even on conversion.
struct bf16 {
  uint16_t bits = 0;
  bf16() = default;
  explicit bf16(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
      bits = uint16_t((u >> 16) | 0x40);  // quiet NaN
    } else {
      u += 0x7fffu + ((u >> 16) & 1u);
      bits = uint16_t(u >> 16);
    }
  }
  explicit operator float() const {
    uint32_t u = uint32_t(bits) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
};

// IEEE half precision, round-to-nearest-even on conversion.
struct f16 {
  uint16_t bits = 0;
  f16() = default;
  explicit f16(float f);
  explicit operator float() const;
};

}  // namespace loom
