// Multi-rank checks of parallel/sp_collectives.h under mpirun (2 and 4 ranks): each function's
// forward and backward per rank against index arithmetic on rank-dependent values (the conjugate
// of each is exercised by its backward), and argument errors.
#include <functional>

#include "mpi_harness.h"
#include "parallel/sp_collectives.h"

namespace loom::parallel {
using testing::allclose;

namespace {

Group world() {
  return testing::mpi_world();
}

// A f64 tensor of `shape` whose element at multi-index idx is f(idx).
Tensor make(const Shape& shape, const std::function<double(const std::vector<int64_t>&)>& f) {
  std::vector<double> v(static_cast<size_t>(numel_of(shape)));
  std::vector<int64_t> idx(shape.size(), 0);
  for (double& x : v) {
    x = f(idx);
    for (int64_t d = int64_t(shape.size()) - 1; d >= 0; --d) {
      if (++idx[size_t(d)] < shape[size_t(d)]) break;
      idx[size_t(d)] = 0;
    }
  }
  return from_vector<double>(v, shape);
}

// A value that names its rank and position: r * 1000 + a * 100 + b * 10 + c.
double tag(int64_t r, int64_t a, int64_t b, int64_t c) {
  return double(r * 1000 + a * 100 + b * 10 + c);
}

// y = f(x) with x requiring grad, then backward(seed): (y, x.grad).
std::pair<Tensor, Tensor> run(const Tensor& x0, const std::function<Tensor(const Tensor&)>& f,
                              const Tensor& seed) {
  Tensor x = x0.clone().set_requires_grad();
  Tensor y = f(x);
  y.backward(seed);
  return {y.detach(), x.grad()};
}

}  // namespace

TEST(MpiSequenceCollectives, AllToAllAlongSwapsTokenShardsForHeadShards) {
  const int64_t r = world()->rank(), S = world()->size();
  // x [2, 3, 2 S] on rank r: tokens [3 r, 3 r + 3) of every head. y [2, 3 S, 2]: every token of
  // heads [2 r, 2 r + 2), token j * 3 + i coming from rank j.
  const Tensor x = make({2, 3, 2 * S}, [&](const auto& i) { return tag(r, i[0], i[1], i[2]); });
  const Tensor seed = make({2, 3 * S, 2}, [&](const auto& i) { return -tag(r, i[0], i[1], i[2]); });
  auto [y, g] = run(
      x, [](const Tensor& t) { return all_to_all_along(t, world(), 2, 1); }, seed);
  EXPECT_TRUE(
      allclose(y,
               make({2, 3 * S, 2},
                    [&](const auto& i) { return tag(i[1] / 3, i[0], i[1] % 3, 2 * r + i[2]); }),
               0, 0));
  // The gradient of x's element (b, i, head q * 2 + h) is rank q's seed at (b, r * 3 + i, h).
  EXPECT_TRUE(
      allclose(g,
               make({2, 3, 2 * S},
                    [&](const auto& i) { return -tag(i[2] / 2, i[0], 3 * r + i[1], i[2] % 2); }),
               0, 0));
  // The two directions undo each other, on a 4-D layout as attention uses it.
  const Tensor x4 = make({2, 4, 2 * S, 3}, [&](const auto& i) { return tag(r, i[1], i[2], i[3]); });
  const Tensor there = all_to_all_along(x4, world(), 2, 1);
  EXPECT_EQ(there.shape(), (Shape{2, 4 * S, 2, 3}));
  EXPECT_TRUE(allclose(all_to_all_along(there, world(), 1, 2), x4, 0, 0));
}

TEST(MpiSequenceCollectives, AllGatherAlongAndReduceScatterAlong) {
  const int64_t r = world()->rank(), S = world()->size();
  // all_gather_along dim 1: x [2, 2, 3] -> [2, 2 S, 3], token q * 2 + i from rank q; the gradient
  // is this rank's tokens of the sum of every rank's seed.
  const Tensor x = make({2, 2, 3}, [&](const auto& i) { return tag(r, i[0], i[1], i[2]); });
  const Tensor seed =
      make({2, 2 * S, 3}, [&](const auto& i) { return (r + 1.0) * tag(0, i[0], i[1], i[2]); });
  const double ranks = double(S * (S + 1) / 2);
  auto [y1, g1] = run(
      x, [](const Tensor& t) { return all_gather_along(t, world(), 1); }, seed);
  EXPECT_TRUE(allclose(
      y1, make({2, 2 * S, 3}, [&](const auto& i) { return tag(i[1] / 2, i[0], i[1] % 2, i[2]); }),
      0, 0));
  EXPECT_TRUE(allclose(
      g1, make({2, 2, 3}, [&](const auto& i) { return ranks * tag(0, i[0], 2 * r + i[1], i[2]); }),
      0, 0));
  // reduce_scatter_along dim 1: x [2, 2 S, 3] = (r + 1) * base -> this rank's tokens of the sum;
  // the gradient is every rank's seed side by side.
  const Tensor base = make({2, 2 * S, 3}, [](const auto& i) { return tag(0, i[0], i[1], i[2]); });
  const Tensor seed2 = make({2, 2, 3}, [&](const auto& i) { return -tag(r, i[0], i[1], i[2]); });
  auto [y2, g2] = run(
      base * double(r + 1), [](const Tensor& t) { return reduce_scatter_along(t, world(), 1); },
      seed2);
  EXPECT_TRUE(allclose(y2, base.narrow(1, 2 * r, 2) * ranks, 0, 0));
  EXPECT_TRUE(allclose(
      g2, make({2, 2 * S, 3}, [&](const auto& i) { return -tag(i[1] / 2, i[0], i[1] % 2, i[2]); }),
      0, 0));
}

TEST(MpiSequenceCollectives, ErrorsNameTheShapeAndTheGroup) {
  const int S = world()->size();
  const Tensor odd = zeros({2, S + 1, 4}, DType::f64);
  testing::expect_error([&] { all_to_all_along(odd, world(), 1, 2); },
                        {"[all_to_all_along] group world", "has size " + std::to_string(S + 1),
                         "not divisible by the group size " + std::to_string(S)});
  testing::expect_error([&] { all_to_all_along(odd, world(), 2, -1); },
                        {"[all_to_all_along]", "scatter_dim and gather_dim are both 2"});
  testing::expect_error([&] { reduce_scatter_along(odd, world(), 1); },
                        {"[reduce_scatter_along]", "not divisible by the group size"});
  testing::expect_error([&] { all_gather_along(odd, world(), 3); },
                        {"[all_gather_along]", "dim 3 is out of range"});
}

}  // namespace loom::parallel

int main(int argc, char** argv) {
  return loom::testing::run_mpi_tests(argc, argv);
}
