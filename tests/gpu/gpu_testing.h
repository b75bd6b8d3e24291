#pragma once
// What the CUDA tests share: the device they run on, a fixture that skips (and is reported as
// skipped) without a GPU, the relative error they compare a CUDA result with its CPU twin by, and
// the twin check of an op's forward and gradients.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "core/loom.h"
#include "kernels/cuda/runtime.h"
#include "tests/testing.h"

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

using TwinFn = std::function<Tensor(const std::vector<Tensor>&)>;

// f on f64 CPU inputs rounded to `dtype` (the reference) against f on CUDA copies in `dtype` (or
// in f32 under bf16 autocast when `autocast` is set): the output and, when it is floating, the
// gradient of every floating input of sum(f(x) * w), within `tol` (4 tol for gradients) relative
// error.
inline void expect_twin(const std::string& what, const TwinFn& f, const std::vector<Tensor>& inputs,
                        DType dtype = DType::f32, double tol = 1e-5, bool autocast = false) {
  SCOPED_TRACE(what + " (" + dtype_name(dtype) + (autocast ? ", autocast" : "") + ")");
  std::vector<Tensor> cpu, gpu;
  for (const Tensor& t : inputs) {
    const bool fl = is_floating(t.dtype());
    const DType on_gpu = autocast ? DType::f32 : dtype;
    // The reference sees the GPU's rounded operands, so only the arithmetic differs. detach: a
    // cast to the same dtype hands back t itself, which must not become a grad leaf shared by the
    // next call.
    Tensor c = fl ? t.to(dtype).to(DType::f64).detach() : t.detach();
    Tensor g = fl ? (autocast ? t.to(dtype).to(on_gpu) : t.to(on_gpu)).to(kGpu).detach()
                  : t.to(kGpu).detach();
    if (fl) {
      c.set_requires_grad(true);
      g.set_requires_grad(true);
    }
    cpu.push_back(c);
    gpu.push_back(g);
  }
  const Tensor yc = f(cpu);
  Tensor yg;
  {
    AutocastGuard guard(DType::bf16, autocast);
    yg = f(gpu);
  }
  ASSERT_EQ(yg.device(), kGpu);
  ASSERT_EQ(yc.shape(), yg.shape());
  EXPECT_LE(rel_error(yg, yc), tol) << "forward";
  if (!is_floating(yc.dtype())) return;
  const Tensor w = uniform(yc.shape(), 0.5, 1.5, 7);
  sum(yc * w).backward();
  sum(yg * w.to(yg.dtype()).to(kGpu)).backward();
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!cpu[i].requires_grad()) continue;
    ASSERT_TRUE(gpu[i].grad().defined()) << "input " << i << " got no gradient";
    EXPECT_EQ(gpu[i].grad().device(), kGpu);
    EXPECT_LE(rel_error(gpu[i].grad(), cpu[i].grad()), 4 * tol) << "gradient of input " << i;
  }
}

}  // namespace loom::testing
