#pragma once
// What the CUDA tests share: the device they run on, a fixture that skips (and is reported as
// skipped) without a GPU, and the relative error they compare a CUDA result with its CPU twin by.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/tensor.h"
#include "kernels/cuda/runtime.h"

namespace loom::testing {

inline const Device kGpu = Device::cuda(0);

class CudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (kernels::cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device";
  }
};

// Relative error ||a - b|| / ||b|| over all elements (both moved to f64 on the host); a NaN in one
// but not the other is infinite error, NaNs in both are skipped.
inline double rel_error(const Tensor& a, const Tensor& b) {
  const auto va = a.to(Device::cpu()).to_vector<double>();
  const auto vb = b.to(Device::cpu()).to_vector<double>();
  EXPECT_EQ(va.size(), vb.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < va.size(); ++i) {
    if (std::isnan(va[i]) != std::isnan(vb[i])) return INFINITY;
    if (std::isnan(vb[i])) continue;
    num += (va[i] - vb[i]) * (va[i] - vb[i]);
    den += vb[i] * vb[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

}  // namespace loom::testing
