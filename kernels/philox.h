#pragma once
// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11): a
// counter-based generator. philox(key = seed, counter, stream) returns four 32-bit words; the
// same (seed, stream, counter) gives the same words on any device and thread, which is what makes
// loom's random draws reproducible across runs, devices and rank counts.
#include <array>
#include <cstdint>

#include "kernels/hd.h"

namespace loom::kernels {

LOOM_HD std::array<uint32_t, 4> philox4x32(uint64_t seed, uint64_t counter, uint64_t stream) {
  uint32_t c0 = uint32_t(counter), c1 = uint32_t(counter >> 32);
  uint32_t c2 = uint32_t(stream), c3 = uint32_t(stream >> 32);
  uint32_t k0 = uint32_t(seed), k1 = uint32_t(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = uint64_t(0xD2511F53u) * c0;
    const uint64_t p1 = uint64_t(0xCD9E8D57u) * c2;
    const uint32_t hi0 = uint32_t(p0 >> 32), lo0 = uint32_t(p0);
    const uint32_t hi1 = uint32_t(p1 >> 32), lo1 = uint32_t(p1);
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return {c0, c1, c2, c3};
}

// Uniform in [0, 1) with 24 random bits, and in (0, 1] for logarithms.
LOOM_HD float u32_to_unit(uint32_t x) {
  return float(x >> 8) * (1.0f / 16777216.0f);
}
LOOM_HD float u32_to_unit_open0(uint32_t x) {
  return float((x >> 8) + 1) * (1.0f / 16777216.0f);
}

}  // namespace loom::kernels
