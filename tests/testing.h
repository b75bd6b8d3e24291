#pragma once
// Shared test helpers: tensor comparison and the fp64 finite-difference gradient check.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <type_traits>
#include <vector>

#include "core/loom.h"

namespace loom::testing {

// Random f64 tensor in [lo, hi) from a fixed stream (tests are deterministic).
inline Tensor uniform(const Shape& shape, double lo = -1, double hi = 1, uint64_t seed = 1,
                      DType dtype = DType::f64) {
  Generator gen(seed, 77);
  return (rand(shape, gen, DType::f64) * (hi - lo) + lo).to(dtype);
}

// Max |a - b| / (atol + rtol |b|) <= 1 elementwise, with a message naming the first offender.
inline ::testing::AssertionResult allclose(const Tensor& a, const Tensor& b, double atol = 1e-6,
                                           double rtol = 1e-5) {
  if (a.shape() != b.shape())
    return ::testing::AssertionFailure()
           << "shapes differ: " << shape_str(a.shape()) << " vs " << shape_str(b.shape());
  const auto va = a.to_vector<double>(), vb = b.to_vector<double>();
  for (size_t i = 0; i < va.size(); ++i) {
    const double err = std::abs(va[i] - vb[i]);
    if (!(err <= atol + rtol * std::abs(vb[i])))
      return ::testing::AssertionFailure()
             << "element " << i << ": " << va[i] << " vs " << vb[i] << " (|diff| " << err << ")";
  }
  return ::testing::AssertionSuccess();
}

// Expects f() to throw loom::Error whose message contains every one of `parts`.
template <class F>
void expect_error(F&& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "expected loom::Error containing \"" << (parts.empty() ? "" : parts[0])
                  << "\"";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& part : parts)
      EXPECT_NE(msg.find(part), std::string::npos) << "missing \"" << part << "\" in: " << msg;
  }
}
// One part; a template so that a braced list {"a", "b"} always picks the overload above.
template <class F, class S>
  requires std::is_convertible_v<const S&, std::string>
void expect_error(F&& f, const S& part) {
  expect_error(std::forward<F>(f), std::vector<std::string>{std::string(part)});
}

// Checks the analytic gradient of every floating input of f against central differences of
// sum(f(x) * w) for a fixed random w. Inputs should be f64 and contiguous; f may take views.
inline ::testing::AssertionResult gradcheck(
    const std::function<Tensor(const std::vector<Tensor>&)>& f, std::vector<Tensor> inputs,
    double eps = 1e-6, double atol = 1e-6, double rtol = 1e-4) {
  for (Tensor& t : inputs) {
    t = t.contiguous().detach();
    if (is_floating(t.dtype())) t.set_requires_grad(true);
  }
  const Tensor out = f(inputs);
  const Tensor w = uniform(out.shape(), 0.5, 1.5, 99, out.dtype()).to(out.device());
  sum(mul(out, w)).backward();
  NoGradGuard guard;
  auto loss_at = [&]() { return sum(mul(f(inputs), w)).item(); };
  for (size_t k = 0; k < inputs.size(); ++k) {
    Tensor& x = inputs[k];
    if (!is_floating(x.dtype())) continue;
    LOOM_CHECK(x.dtype() == DType::f64, "gradcheck wants f64 inputs");
    const Tensor g = x.grad();
    if (!g.defined()) return ::testing::AssertionFailure() << "input " << k << " got no gradient";
    const auto analytic = g.to_vector<double>();
    // Element i is set through a one-element view, so inputs may live on any device.
    const Tensor flat = x.reshape({-1});
    const auto values = x.to_vector<double>();
    auto set = [&](int64_t i, double v) { copy_into(flat.narrow(0, i, 1), full({1}, v, x.dtype())); };
    for (int64_t i = 0; i < x.numel(); ++i) {
      const double orig = values[size_t(i)];
      set(i, orig + eps);
      const double lp = loss_at();
      set(i, orig - eps);
      const double lm = loss_at();
      set(i, orig);
      const double numeric = (lp - lm) / (2 * eps);
      const double err = std::abs(numeric - analytic[size_t(i)]);
      if (!(err <= atol + rtol * std::abs(numeric)))
        return ::testing::AssertionFailure()
               << "input " << k << " " << shape_str(x.shape()) << " element " << i << ": analytic "
               << analytic[size_t(i)] << " vs numeric " << numeric;
    }
  }
  return ::testing::AssertionSuccess();
}

}  // namespace loom::testing
