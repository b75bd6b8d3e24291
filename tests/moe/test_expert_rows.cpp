// dispatch_expert_rows and combine_expert_rows (core/ops/expert_rows.h) on the CPU against their
// composite references (index_select; index_add of the weighted rows): forward and gradients,
// with a capacity that drops slots (one token loses both), f64 finite differences, and the
// argument checks. The CUDA twins are in tests/gpu/test_cuda_moe.cpp.
#include <vector>

#include "core/ops/expert_rows.h"
#include "core/ops/moe_ops.h"
#include "testing.h"

namespace loom {
namespace {

using testing::allclose;
using testing::expect_error;
using testing::gradcheck;
using testing::uniform;

constexpr int64_t kTokens = 6, kTopK = 2, kExperts = 3, kWidth = 5;

// Token 5 picks expert 0 twice after everyone else did, so capacity 3 drops both of its slots.
ExpertDispatch dispatch_with(int64_t capacity) {
  const Tensor ids = from_vector<int64_t>({0, 1, 2, 0, 1, 2, 0, 1, 2, 1, 0, 0}, {kTokens, kTopK});
  return sort_by_expert(ids, kExperts, capacity);
}

TEST(ExpertRows, PositionInvertsTheOrder) {
  for (int64_t capacity : {0, 3}) {
    const ExpertDispatch d = dispatch_with(capacity);
    const std::vector<int64_t> order = d.order.to_vector<int64_t>(),
                               position = d.position.to_vector<int64_t>();
    ASSERT_EQ(int64_t(position.size()), kTokens * kTopK);
    int64_t dropped = 0;
    for (int64_t p = 0; p < kTokens * kTopK; ++p) {
      if (position[size_t(p)] < 0) {
        ++dropped;
        continue;
      }
      EXPECT_EQ(order[size_t(position[size_t(p)])], p) << "assignment " << p;
    }
    EXPECT_EQ(dropped, capacity == 0 ? 0 : 3) << "capacity " << capacity;
  }
}

TEST(ExpertRows, DispatchEqualsIndexSelectAndItsGradient) {
  for (int64_t capacity : {0, 3}) {
    SCOPED_TRACE("capacity " + std::to_string(capacity));
    const ExpertDispatch d = dispatch_with(capacity);
    const int64_t m = d.token.numel();
    const Tensor x = uniform({kTokens, kWidth}, -1, 1, 1, DType::f64).set_requires_grad();
    const Tensor x_ref = x.detach().clone().set_requires_grad();
    const Tensor w = uniform({m, kWidth}, -1, 1, 2, DType::f64);
    const Tensor y = dispatch_expert_rows(x, d.token, d.position);
    const Tensor y_ref = index_select(x_ref, 0, d.token);
    EXPECT_TRUE(allclose(y, y_ref, 0, 0));
    sum(y * w).backward();
    sum(y_ref * w).backward();
    EXPECT_TRUE(allclose(x.grad(), x_ref.grad(), 1e-14, 1e-14));
    if (capacity == 3) EXPECT_EQ(amax(abs(x.grad().select(0, 5))).item(), 0.0);
    EXPECT_TRUE(gradcheck(
        [&](const std::vector<Tensor>& in) {
          return dispatch_expert_rows(in[0], d.token, d.position);
        },
        {x.detach()}));
  }
}

TEST(ExpertRows, CombineEqualsIndexAddOfTheWeightedRows) {
  for (DType dtype : {DType::f64, DType::f32}) {
    for (int64_t capacity : {0, 3}) {
      SCOPED_TRACE(std::string(dtype_name(dtype)) + ", capacity " + std::to_string(capacity));
      const ExpertDispatch d = dispatch_with(capacity);
      const int64_t m = d.token.numel();
      std::vector<Tensor> in = {uniform({kTokens, kWidth}, -1, 1, 3, dtype),
                                uniform({m, kWidth}, -1, 1, 4, dtype),
                                uniform({m}, 0, 1, 5, dtype)};
      std::vector<Tensor> ref_in;
      for (Tensor& t : in) {
        ref_in.push_back(t.clone().set_requires_grad());
        t.set_requires_grad();
      }
      const Tensor out = combine_expert_rows(in[0], in[1], in[2], d.token, d.position);
      const Tensor ref = index_add(ref_in[0], 0, d.token, ref_in[1] * ref_in[2].unsqueeze(1));
      const double tol = dtype == DType::f64 ? 1e-14 : 1e-6;
      EXPECT_TRUE(allclose(out, ref, tol, tol));
      const Tensor g = uniform({kTokens, kWidth}, -1, 1, 6, dtype);
      sum(out * g).backward();
      sum(ref * g).backward();
      for (size_t i = 0; i < in.size(); ++i)
        EXPECT_TRUE(allclose(in[i].grad(), ref_in[i].grad(), tol, tol)) << "input " << i;
    }
  }
}

TEST(ExpertRows, CombineGradcheckAndAnotherRowDtype) {
  const ExpertDispatch d = dispatch_with(3);
  const int64_t m = d.token.numel();
  const auto f = [&](const std::vector<Tensor>& in) {
    return combine_expert_rows(in[0], in[1], in[2], d.token, d.position);
  };
  EXPECT_TRUE(gradcheck(
      f, {uniform({kTokens, kWidth}, -1, 1, 7, DType::f64),
          uniform({m, kWidth}, -1, 1, 8, DType::f64), uniform({m}, 0, 1, 9, DType::f64)}));
  // y in another dtype is cast to base's on the CPU first.
  const Tensor base = uniform({kTokens, kWidth}, -1, 1, 11, DType::f64);
  const Tensor y = uniform({m, kWidth}, -1, 1, 10), w = uniform({m}, 0, 1, 12, DType::f64);
  const Tensor out = combine_expert_rows(base, y, w, d.token, d.position);
  EXPECT_EQ(out.dtype(), DType::f64);
  EXPECT_TRUE(
      allclose(out, combine_expert_rows(base, y.to(DType::f64), w, d.token, d.position), 0, 0));
}

TEST(ExpertRows, ErrorsNameTheOperand) {
  const ExpertDispatch d = dispatch_with(0);
  const int64_t m = d.token.numel();
  const Tensor base = zeros({kTokens, kWidth}), y = zeros({m, kWidth}), w = zeros({m});
  expect_error(
      [&] {
        combine_expert_rows(base, zeros({m, 4}), w, d.token, d.position);
      },
      {"[combine_expert_rows]", "[12, 4]"});
  expect_error([&] { combine_expert_rows(base, y, zeros({m}, DType::f64), d.token, d.position); },
               "share one floating dtype");
  expect_error([&] { combine_expert_rows(base, y, w, d.token.to(DType::i32), d.position); },
               "must be i64");
  expect_error([&] { combine_expert_rows(base, y, w, d.token, d.position.narrow(0, 0, 7)); },
               "expected position [6 * k]");
  expect_error([&] { dispatch_expert_rows(zeros({kTokens}), d.token, d.position); },
               "[dispatch_expert_rows] expected x [N, D]");
}

}  // namespace
}  // namespace loom
