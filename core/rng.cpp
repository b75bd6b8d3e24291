#include "core/rng.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "kernels/cpu/thread_pool.h"
#include "kernels/cuda/kernels.h"
#include "kernels/philox.h"

namespace loom {

namespace {

// Fills out[i] = f(word i of the draw) for i < n; words come 4 per counter.
template <class F>
void for_each_word(Generator& gen, int64_t n, F f) {
  const uint64_t first = gen.advance(n);
  const int64_t blocks = (n + 3) / 4;
  kernels::cpu::parallel_for(0, blocks, 4096, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const auto w = kernels::philox4x32(gen.seed(), first + uint64_t(b), gen.stream());
      for (int64_t j = 0; j < 4 && 4 * b + j < n; ++j) f(4 * b + j, w, j);
    }
  });
}

// The device path of rand/randn: one kernel over the draw's counters, then the dtype.
Tensor cuda_draw(const Shape& shape, Generator& gen, DType dtype, Device device,
                 kernels::cuda::Distribution dist) {
  Tensor out = empty(shape, DType::f32, device);
  const int64_t n = out.numel();
  kernels::cuda::philox_fill(out.data<float>(), n, gen.seed(), gen.stream(), gen.advance(n), dist);
  return out.to(dtype);
}

}  // namespace

Tensor rand(const Shape& shape, Generator& gen, DType dtype, Device device) {
  if (device.is_cuda())
    return cuda_draw(shape, gen, dtype, device, kernels::cuda::Distribution::uniform);
  const int64_t n = numel_of(shape);
  std::vector<float> v(static_cast<size_t>(n));
  for_each_word(gen, n, [&](int64_t i, const auto& w, int64_t j) {
    v[size_t(i)] = kernels::u32_to_unit(w[size_t(j)]);
  });
  return from_vector(v, shape, dtype);
}

Tensor randn(const Shape& shape, Generator& gen, DType dtype, Device device) {
  if (device.is_cuda())
    return cuda_draw(shape, gen, dtype, device, kernels::cuda::Distribution::normal);
  const int64_t n = numel_of(shape);
  std::vector<float> v(static_cast<size_t>(n));
  // Words (0,1) and (2,3) of a counter form two Box-Muller pairs: 4 normals per counter.
  for_each_word(gen, n, [&](int64_t i, const auto& w, int64_t j) {
    const int64_t pair = j / 2;
    const double r = std::sqrt(-2.0 * std::log(double(kernels::u32_to_unit_open0(w[2 * pair]))));
    const double theta = 2.0 * M_PI * double(kernels::u32_to_unit(w[2 * pair + 1]));
    v[size_t(i)] = float(j % 2 == 0 ? r * std::cos(theta) : r * std::sin(theta));
  });
  return from_vector(v, shape, dtype);
}

Tensor randint(int64_t low, int64_t high, const Shape& shape, Generator& gen, DType dtype) {
  LOOM_CHECK(high > low, "[randint] empty range [", low, ", ", high, ")");
  const int64_t n = numel_of(shape);
  const uint64_t range = uint64_t(high - low);
  std::vector<int64_t> v(static_cast<size_t>(n));
  // Two draws of words per element: 64 random bits keep the modulo bias negligible.
  const uint64_t first = gen.advance(2 * n);
  for (int64_t i = 0; i < n; ++i) {
    const auto w = kernels::philox4x32(gen.seed(), first + uint64_t(i / 2), gen.stream());
    const int64_t j = 2 * (i % 2);
    const uint64_t bits = (uint64_t(w[size_t(j)]) << 32) | w[size_t(j + 1)];
    v[size_t(i)] = low + int64_t(bits % range);
  }
  return from_vector(v, shape, dtype);
}

Tensor randperm(int64_t n, Generator& gen) {
  LOOM_CHECK(n >= 0, "[randperm] n must be >= 0, got ", n);
  std::vector<uint64_t> keys(static_cast<size_t>(n));
  const uint64_t first = gen.advance(2 * n);
  for (int64_t i = 0; i < n; ++i) {
    const auto w = kernels::philox4x32(gen.seed(), first + uint64_t(i / 2), gen.stream());
    const int64_t j = 2 * (i % 2);
    keys[size_t(i)] = (uint64_t(w[size_t(j)]) << 32) | w[size_t(j + 1)];
  }
  std::vector<int64_t> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(),
                   [&](int64_t a, int64_t b) { return keys[size_t(a)] < keys[size_t(b)]; });
  return from_vector(idx, {n});
}

Tensor bernoulli(const Shape& shape, double p, Generator& gen) {
  LOOM_CHECK(p >= 0 && p <= 1, "[bernoulli] p must be in [0, 1], got ", p);
  const int64_t n = numel_of(shape);
  std::vector<uint8_t> v(static_cast<size_t>(n));
  for_each_word(gen, n, [&](int64_t i, const auto& w, int64_t j) {
    v[size_t(i)] = double(kernels::u32_to_unit(w[size_t(j)])) < p ? 1 : 0;
  });
  return from_vector(v, shape, DType::boolean);
}

}  // namespace loom
