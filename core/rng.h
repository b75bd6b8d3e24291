#pragma once
// Counter-based random numbers (Philox4x32-10). A Generator is (seed, stream, offset): each draw
// of n values reads counters offset .. offset + ceil(n / 4) - 1 and then advances the offset, so
// element i of a draw depends only on (seed, stream, offset, i): the same on CPU and GPU, for any
// thread count, and restorable from a checkpoint by saving the three integers.
// Give independent consumers (data order, dropout, diffusion noise, per-rank draws) distinct
// streams rather than distinct seeds.
#include <cstdint>

#include "core/tensor.h"

namespace loom {

class Generator {
 public:
  explicit Generator(uint64_t seed = 0, uint64_t stream = 0) : seed_(seed), stream_(stream) {}
  uint64_t seed() const { return seed_; }
  uint64_t stream() const { return stream_; }
  uint64_t offset() const { return offset_; }
  void set_offset(uint64_t offset) { offset_ = offset; }
  // Reserves ceil(n/4) counters and returns the first.
  uint64_t advance(int64_t n) {
    const uint64_t first = offset_;
    offset_ += uint64_t((n + 3) / 4);
    return first;
  }

 private:
  uint64_t seed_, stream_, offset_ = 0;
};

// Uniform [0, 1). On a CUDA device the values are drawn there (the same values as on the host).
Tensor rand(const Shape& shape, Generator& gen, DType dtype = DType::f32,
            Device device = Device::cpu());
// Standard normal (Box-Muller), likewise on either device.
Tensor randn(const Shape& shape, Generator& gen, DType dtype = DType::f32,
             Device device = Device::cpu());
// Uniform integers in [low, high).
Tensor randint(int64_t low, int64_t high, const Shape& shape, Generator& gen,
               DType dtype = DType::i64);
// A random permutation of 0..n-1 (i64).
Tensor randperm(int64_t n, Generator& gen);
// Bool tensor, true with probability p.
Tensor bernoulli(const Shape& shape, double p, Generator& gen);

}  // namespace loom
