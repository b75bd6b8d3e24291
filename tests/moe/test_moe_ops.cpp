// The MoE ops of core/ops/moe_ops.h on the CPU against their composite references: grouped_linear
// (forward and gradients equal to one linear per expert, f64 finite differences including an
// expert without rows and a single expert) and swiglu (bitwise the composite silu(a) * b, forward
// and backward; finite differences). The CUDA twins are tests/gpu/test_cuda_moe.cpp.
#include <vector>

#include "core/ops/moe_ops.h"
#include "testing.h"

namespace loom {
namespace {

using testing::allclose;
using testing::expect_error;
using testing::gradcheck;
using testing::uniform;

// The composite reference: one linear per expert over its block of rows, concatenated.
Tensor per_expert_linear(const Tensor& x, const Tensor& w, const std::vector<int64_t>& counts) {
  std::vector<Tensor> ys;
  int64_t row = 0;
  for (size_t l = 0; l < counts.size(); ++l) {
    ys.push_back(linear(x.narrow(0, row, counts[l]), w.select(0, int64_t(l))));
    row += counts[l];
  }
  return cat(ys, 0);
}

int64_t total(const std::vector<int64_t>& counts) {
  int64_t n = 0;
  for (int64_t c : counts) n += c;
  return n;
}

struct Case {
  std::vector<int64_t> counts;
  int64_t d, f;
};
// Awkward sizes: an expert without rows (first, middle, last), one row, a single expert.
const std::vector<Case> kCases = {
    {{3, 0, 5, 1}, 7, 5}, {{0, 4}, 3, 6}, {{2, 1, 0}, 5, 2}, {{6}, 4, 3}, {{1}, 1, 1}};

TEST(GroupedLinear, ForwardEqualsOneLinearPerExpert) {
  uint64_t seed = 1;
  for (const Case& c : kCases) {
    const int64_t m = total(c.counts), l = int64_t(c.counts.size());
    for (DType dtype : {DType::f32, DType::f64}) {
      SCOPED_TRACE(shape_str(c.counts) + " " + dtype_name(dtype));
      const Tensor x = uniform({m, c.d}, -1, 1, ++seed, dtype);
      const Tensor w = uniform({l, c.f, c.d}, -1, 1, ++seed, dtype);
      const Tensor y = grouped_linear(x, w, c.counts);
      EXPECT_EQ(y.shape(), (Shape{m, c.f}));
      EXPECT_EQ(y.dtype(), dtype);
      const double tol = dtype == DType::f64 ? 1e-12 : 1e-6;
      EXPECT_TRUE(allclose(y, per_expert_linear(x, w, c.counts), tol, tol));
    }
  }
}

TEST(GroupedLinear, GradientsEqualOneLinearPerExpert) {
  const Case c = kCases[0];
  const int64_t m = total(c.counts), l = int64_t(c.counts.size());
  const Tensor x = uniform({m, c.d}, -1, 1, 11).set_requires_grad();
  const Tensor w = uniform({l, c.f, c.d}, -1, 1, 12).set_requires_grad();
  const Tensor g = uniform({m, c.f}, -1, 1, 13);
  sum(grouped_linear(x, w, c.counts) * g).backward();
  const Tensor dx = x.grad().clone(), dw = w.grad().clone();
  x.zero_grad();
  w.zero_grad();
  sum(per_expert_linear(x, w, c.counts) * g).backward();
  EXPECT_TRUE(allclose(dx, x.grad(), 1e-12, 1e-12));
  EXPECT_TRUE(allclose(dw, w.grad(), 1e-12, 1e-12));
  // The expert without rows gets an exactly zero gradient slice.
  EXPECT_TRUE(allclose(dw.select(0, 1), zeros({c.f, c.d}, DType::f64), 0, 0));
}

TEST(GroupedLinear, Gradcheck) {
  uint64_t seed = 20;
  for (const Case& c : kCases) {
    SCOPED_TRACE(shape_str(c.counts));
    const int64_t m = total(c.counts), l = int64_t(c.counts.size());
    const auto f = [&](const std::vector<Tensor>& in) {
      return grouped_linear(in[0], in[1], c.counts);
    };
    EXPECT_TRUE(
        gradcheck(f, {uniform({m, c.d}, -1, 1, ++seed), uniform({l, c.f, c.d}, -1, 1, ++seed)}));
  }
}

TEST(GroupedLinear, ChainOfTwoLikeTheExperts) {
  // x -> [M, F] -> [M, D] through two stacks, so the backward of a product feeds another's.
  const std::vector<int64_t> counts = {2, 0, 3};
  const auto f = [&](const std::vector<Tensor>& in) {
    return grouped_linear(tanh(grouped_linear(in[0], in[1], counts)), in[2], counts);
  };
  EXPECT_TRUE(gradcheck(f, {uniform({5, 4}, -1, 1, 31), uniform({3, 6, 4}, -1, 1, 32),
                            uniform({3, 4, 6}, -1, 1, 33)}));
}

TEST(GroupedLinear, Errors) {
  const Tensor x = zeros({5, 4}), w = zeros({2, 3, 4});
  expect_error([&] { grouped_linear(x, w, {5}); }, {"[grouped_linear]", "expected 2 row counts"});
  expect_error([&] { grouped_linear(x, w, {2, 2}); }, {"sum to 4", "[5, 4]"});
  expect_error([&] { grouped_linear(x, w, {6, -1}); }, "negative row count -1");
  expect_error([&] { grouped_linear(x, zeros({2, 3, 5}), {2, 3}); }, "[2, 3, 5]");
  expect_error([&] { grouped_linear(x, zeros({2, 3, 4}, DType::f64), {2, 3}); }, "dtypes f32");
}

TEST(SwiGlu, EqualsTheCompositeBitwise) {
  for (DType dtype : {DType::f32, DType::f64}) {
    SCOPED_TRACE(dtype_name(dtype));
    const Tensor a = uniform({3, 70001}, -6, 6, 41, dtype).set_requires_grad();
    const Tensor b = uniform({3, 70001}, -2, 2, 42, dtype).set_requires_grad();
    const Tensor g = uniform({3, 70001}, -1, 1, 43, dtype);
    const Tensor y = swiglu(a, b);
    sum(y * g).backward();
    const Tensor da = a.grad().clone(), db = b.grad().clone();
    a.zero_grad();
    b.zero_grad();
    const Tensor ref = silu(a) * b;
    sum(ref * g).backward();
    EXPECT_TRUE(allclose(y, ref, 0, 0));
    EXPECT_TRUE(allclose(da, a.grad(), 0, 0));
    EXPECT_TRUE(allclose(db, b.grad(), 0, 0));
  }
}

TEST(SwiGlu, GradcheckAndErrors) {
  const auto f = [](const std::vector<Tensor>& in) { return swiglu(in[0], in[1].transpose(0, 1)); };
  EXPECT_TRUE(gradcheck(f, {uniform({4, 5}, -3, 3, 51), uniform({5, 4}, -2, 2, 52)}));
  expect_error([] { swiglu(zeros({2, 3}), zeros({3, 2})); }, {"[swiglu]", "[2, 3]", "[3, 2]"});
  expect_error([] { swiglu(zeros({2}), zeros({2}, DType::f64)); }, "one floating dtype");
}

}  // namespace
}  // namespace loom
