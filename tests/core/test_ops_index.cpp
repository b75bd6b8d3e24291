#include <cmath>
#include <limits>

#include "kernels/cpu/thread_pool.h"
#include "testing.h"

namespace loom {
using testing::allclose;
using testing::gradcheck;
using testing::uniform;

namespace {

// Runs f, expecting a loom::Error whose message contains every one of `parts`.
using loom::testing::expect_error;

Tensor i64s(const std::vector<int64_t>& v, const Shape& shape) {
  return from_vector<int64_t>(v, shape);
}

Tensor f64s(const std::vector<double>& v, const Shape& shape) {
  return from_vector<double>(v, shape);
}

// Restores the thread count a test changed.
struct ThreadCount {
  int saved = kernels::cpu::num_threads();
  ~ThreadCount() { kernels::cpu::set_num_threads(saved); }
};

}  // namespace

// ---- cat / stack ------------------------------------------------------------------------------

TEST(Cat, ValuesAlongLastDim) {
  const Tensor a = f64s({1, 2}, {2, 1});
  const Tensor b = f64s({3, 4, 5, 6, 7, 8}, {2, 3});
  EXPECT_TRUE(allclose(cat({a, b}, -1), f64s({1, 3, 4, 5, 2, 6, 7, 8}, {2, 4})));
  EXPECT_TRUE(allclose(cat({b, b}, 0), f64s({3, 4, 5, 6, 7, 8, 3, 4, 5, 6, 7, 8}, {4, 3})));
}

TEST(Cat, IntegerAndNonContiguousPieces) {
  const Tensor a = from_vector<int32_t>({1, 2, 3, 4}, {2, 2}).t();  // [[1, 3], [2, 4]]
  const Tensor b = from_vector<int32_t>({9, 8}, {1, 2});
  const Tensor out = cat({a, b}, 0);
  EXPECT_EQ(out.dtype(), DType::i32);
  EXPECT_EQ(out.to_vector<int32_t>(), (std::vector<int32_t>{1, 3, 2, 4, 9, 8}));
}

TEST(Cat, EmptyPieceIsSkipped) {
  const Tensor a = f64s({1, 2}, {1, 2});
  const Tensor e = zeros({0, 2}, DType::f64);
  EXPECT_TRUE(allclose(cat({e, a, e}, 0), a));
}

TEST(Cat, GradcheckMiddleDimDifferentSizes) {
  // Pieces of 1, 3 and 2 along dim 1; the middle one is a transposed view.
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& in) {
        return cat({in[0], in[1].transpose(0, 1), in[2]}, 1);
      },
      {uniform({2, 1, 3}, -1, 1, 1), uniform({3, 2, 3}, -1, 1, 2), uniform({2, 2, 3}, -1, 1, 3)}));
}

TEST(Cat, GradcheckOnlySomeInputsRequireGrad) {
  const Tensor c = uniform({4, 1}, -1, 1, 5);
  Tensor a = uniform({4, 2}, -1, 1, 6).set_requires_grad();
  sum(cat({c, a}, 1) * 3.0).backward();
  EXPECT_TRUE(allclose(a.grad(), full({4, 2}, 3.0, DType::f64)));
  EXPECT_TRUE(gradcheck(
      [&](const std::vector<Tensor>& in) {
        return cat({c, in[0], c}, -1);
      },
      {uniform({4, 3}, -1, 1, 7)}));
}

TEST(Cat, Errors) {
  expect_error([] { cat({zeros({2, 3}), zeros({3, 3})}, 1); }, {"[cat]", "[2, 3]", "[3, 3]"});
  expect_error([] { cat({zeros({2, 3}), zeros({2, 3, 1})}, 0); }, {"[cat]", "[2, 3, 1]"});
  expect_error([] { cat({zeros({2}), zeros({2}, DType::f64)}); }, {"[cat]", "dtype"});
  expect_error([] { cat({}); }, {"[cat]"});
  expect_error([] { cat({zeros({2}), zeros({2})}, 1); }, {"[cat]", "dim 1"});
  expect_error([] { cat({scalar(1.0), scalar(2.0)}); }, {"[cat]", "zero-dim"});
}

TEST(Stack, ValuesAndNewDim) {
  const Tensor a = f64s({1, 2, 3}, {3}), b = f64s({4, 5, 6}, {3});
  EXPECT_TRUE(allclose(stack({a, b}), f64s({1, 2, 3, 4, 5, 6}, {2, 3})));
  EXPECT_TRUE(allclose(stack({a, b}, -1), f64s({1, 4, 2, 5, 3, 6}, {3, 2})));
  EXPECT_TRUE(
      allclose(stack({scalar(1.0, DType::f64), scalar(2.0, DType::f64)}), f64s({1, 2}, {2})));
}

TEST(Stack, GradcheckMiddleDimNonContiguous) {
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& in) {
        return stack({in[0].t(), in[1], in[0].t()}, 1);
      },
      {uniform({3, 2}, -1, 1, 1), uniform({2, 3}, -1, 1, 2)}));
}

TEST(Stack, UnequalShapesThrow) {
  expect_error([] { stack({zeros({2, 3}), zeros({3, 2})}); }, {"[stack]", "[3, 2]"});
}

// ---- split / chunk ----------------------------------------------------------------------------

TEST(Split, PiecesAreViewsWithGivenSizes) {
  const Tensor x = arange(0, 12, 1, DType::f64).reshape({2, 6});
  const auto p = split(x, {1, 0, 3, 2}, 1);
  ASSERT_EQ(p.size(), 4u);
  EXPECT_EQ(p[1].shape(), (Shape{2, 0}));
  EXPECT_TRUE(allclose(p[0], f64s({0, 6}, {2, 1})));
  EXPECT_TRUE(allclose(p[2], f64s({1, 2, 3, 7, 8, 9}, {2, 3})));
  EXPECT_TRUE(allclose(p[3], f64s({4, 5, 10, 11}, {2, 2})));
  EXPECT_EQ(p[2].storage(), x.storage());  // a view, not a copy
}

TEST(Split, Gradcheck) {
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& in) {
        const auto p = split(in[0].t(), {2, 1, 2}, 0);
        return cat({p[2] * 2.0, p[0], p[1] * p[1]}, 0);
      },
      {uniform({3, 5}, -1, 1, 4)}));
}

TEST(Split, Errors) {
  expect_error([] { split(zeros({5}), {2, 2}); }, {"[split]", "sum to 4", "[5]"});
  expect_error([] { split(zeros({5}), {6, -1}); }, {"[split]", "negative"});
}

TEST(Chunk, SizesFollowCeilDivision) {
  const Tensor x = arange(0, 5, 1, DType::f64);
  const auto p = chunk(x, 4);
  ASSERT_EQ(p.size(), 3u);  // 2, 2, 1
  EXPECT_TRUE(allclose(p[0], f64s({0, 1}, {2})));
  EXPECT_TRUE(allclose(p[1], f64s({2, 3}, {2})));
  EXPECT_TRUE(allclose(p[2], f64s({4}, {1})));
  const auto q = chunk(zeros({2, 6}), 3, -1);
  ASSERT_EQ(q.size(), 3u);
  for (const Tensor& t : q) EXPECT_EQ(t.shape(), (Shape{2, 2}));
  const auto e = chunk(zeros({0, 2}), 3, 0);
  ASSERT_EQ(e.size(), 3u);
  EXPECT_EQ(e[2].shape(), (Shape{0, 2}));
  expect_error([] { chunk(zeros({4}), 0); }, {"[chunk]"});
}

TEST(Chunk, Gradcheck) {
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& in) {
        const auto p = chunk(in[0], 3, 1);
        return p[0] * 2.0 + p[1] * p[2];
      },
      {uniform({2, 3, 2}, -1, 1, 8).reshape({2, 6})}));
}

// ---- index_select / index_add -----------------------------------------------------------------

TEST(IndexSelect, Values) {
  const Tensor x = f64s({1, 2, 3, 4, 5, 6}, {3, 2});
  EXPECT_TRUE(allclose(index_select(x, 0, i64s({2, 0, 2}, {3})), f64s({5, 6, 1, 2, 5, 6}, {3, 2})));
  const Tensor idx32 = from_vector<int32_t>({1, 1, 0}, {3});
  EXPECT_TRUE(allclose(index_select(x, 1, idx32), f64s({2, 2, 1, 4, 4, 3, 6, 6, 5}, {3, 3})));
  EXPECT_EQ(index_select(x, 0, i64s({}, {0})).shape(), (Shape{0, 2}));
}

TEST(IndexSelect, IntegerAndBoolData) {
  const Tensor xi = from_vector<int64_t>({10, 20, 30}, {3});
  EXPECT_EQ(index_select(xi, 0, i64s({2, 2, 0}, {3})).to_vector<int64_t>(),
            (std::vector<int64_t>{30, 30, 10}));
  const Tensor xb = from_vector<int32_t>({1, 0}, {2}, DType::boolean);
  EXPECT_EQ(index_select(xb, 0, i64s({1, 0, 1}, {3})).to_vector<int32_t>(),
            (std::vector<int32_t>{0, 1, 0}));
}

TEST(IndexSelect, GradcheckRepeatedIndicesNonContiguous) {
  const Tensor idx = i64s({3, 0, 3, 1, 3}, {5});
  EXPECT_TRUE(gradcheck(
      [&](const std::vector<Tensor>& in) { return index_select(in[0].transpose(0, 2), 1, idx); },
      {uniform({2, 4, 3}, -1, 1, 9)}));
  const Tensor one = from_vector<int32_t>({0, 0}, {2});
  EXPECT_TRUE(gradcheck([&](const std::vector<Tensor>& in) { return index_select(in[0], 1, one); },
                        {uniform({3, 1, 2}, -1, 1, 10)}));
}

TEST(IndexSelect, Errors) {
  const Tensor x = zeros({3, 2});
  expect_error(
      [&] {
        index_select(x, 0, i64s({0, 3}, {2}));
      },
      {"[index_select]", "index 3", "[0, 3)", "[3, 2]"});
  expect_error([&] { index_select(x, 1, i64s({-1}, {1})); }, {"[index_select]", "-1"});
  expect_error([&] { index_select(x, 0, zeros({2})); }, {"[index_select]", "i32 or i64", "f32"});
  expect_error([&] { index_select(x, 0, i64s({0, 1}, {1, 2})); }, {"[index_select]", "1-D"});
  expect_error([&] { index_select(x, 2, i64s({0}, {1})); }, {"[index_select]", "dim 2"});
}

TEST(IndexAdd, ValuesWithRepeatedIndices) {
  const Tensor x = f64s({1, 1, 1, 1, 1, 1}, {3, 2});
  const Tensor src = f64s({1, 2, 10, 20, 100, 200, 1000, 2000}, {4, 2});
  const Tensor out = index_add(x, 0, i64s({2, 0, 2, 2}, {4}), src);
  EXPECT_TRUE(allclose(out, f64s({11, 21, 1, 1, 1102, 2203}, {3, 2})));
  const Tensor outi =
      index_add(from_vector<int32_t>({0, 0, 0}, {1, 3}), 1, from_vector<int32_t>({1, 1}, {2}),
                from_vector<int32_t>({4, 5}, {1, 2}));
  EXPECT_EQ(outi.to_vector<int32_t>(), (std::vector<int32_t>{0, 9, 0}));
  EXPECT_TRUE(allclose(x, full({3, 2}, 1.0, DType::f64)));  // the input is not modified
}

TEST(IndexAdd, GradcheckRepeatedIndicesNonContiguous) {
  const Tensor idx = i64s({1, 0, 1, 1}, {4});
  EXPECT_TRUE(gradcheck(
      [&](const std::vector<Tensor>& in) {
        return index_add(in[0], 1, idx, in[1].transpose(0, 1));
      },
      {uniform({3, 2, 2}, -1, 1, 11), uniform({4, 3, 2}, -1, 1, 12)}));
}

TEST(IndexAdd, Errors) {
  const Tensor x = zeros({3, 2});
  expect_error(
      [&] {
        index_add(x, 0, i64s({0, 5}, {2}), zeros({2, 2}));
      },
      {"[index_add]", "index 5", "[0, 3)"});
  expect_error(
      [&] {
        index_add(x, 0, i64s({0, 1}, {2}), zeros({2, 3}));
      },
      {"[index_add]", "[2, 3]", "[2, 2]"});
  expect_error(
      [&] {
        index_add(x, 0, i64s({0}, {1}), zeros({1, 2}, DType::f64));
      },
      {"[index_add]", "dtype"});
  expect_error([&] { index_add(x, 0, zeros({1}), zeros({1, 2})); }, {"[index_add]", "i32 or i64"});
}

// ---- gather / scatter_add ---------------------------------------------------------------------

TEST(Gather, Values) {
  const Tensor x = f64s({1, 2, 3, 4}, {2, 2});
  EXPECT_TRUE(allclose(gather(x, 1, i64s({0, 0, 1, 0}, {2, 2})), f64s({1, 1, 4, 3}, {2, 2})));
  // Index smaller than x in the other dim, larger along the gathered dim.
  const Tensor y = f64s({1, 2, 3, 4, 5, 6}, {2, 3});
  EXPECT_TRUE(
      allclose(gather(y, 0, i64s({1, 0, 1, 1, 0, 0}, {3, 2})), f64s({4, 2, 4, 5, 1, 2}, {3, 2})));
  const Tensor yi = from_vector<int32_t>({1, 2, 3, 4, 5, 6}, {2, 3});
  EXPECT_EQ(gather(yi, 1, from_vector<int32_t>({2, 2, 0}, {1, 3})).to_vector<int32_t>(),
            (std::vector<int32_t>{3, 3, 1}));
}

TEST(Gather, GradcheckRepeatedIndices) {
  // Along a middle dim, x transposed, index smaller than x in dims 0 and 2.
  const Tensor idx = i64s({0, 2, 2, 2, 1, 0, 1, 1, 2, 0, 0, 0}, {2, 3, 2});
  EXPECT_TRUE(gradcheck(
      [&](const std::vector<Tensor>& in) { return gather(in[0].transpose(0, 2), 1, idx); },
      {uniform({4, 3, 3}, -1, 1, 13)}));
  const Tensor idx0 = from_vector<int32_t>({1, 1, 1, 0}, {4, 1});
  EXPECT_TRUE(gradcheck([&](const std::vector<Tensor>& in) { return gather(in[0], 0, idx0); },
                        {uniform({2, 1}, -1, 1, 14)}));
}

TEST(Gather, Errors) {
  const Tensor x = zeros({2, 3});
  expect_error(
      [&] {
        gather(x, 1, i64s({0, 3}, {1, 2}));
      },
      {"[gather]", "index 3", "[0, 1]", "[0, 3)"});
  expect_error([&] { gather(x, 1, i64s({0, 1}, {2})); }, {"[gather]", "dims"});
  expect_error([&] { gather(x, 1, i64s({0, 0, 0}, {3, 1})); }, {"[gather]", "dim 0"});
  expect_error([&] { gather(x, 0, zeros({1, 1}, DType::f64)); }, {"[gather]", "i32 or i64", "f64"});
}

TEST(ScatterAdd, ValuesWithRepeatedIndices) {
  const Tensor x = f64s({0, 0, 0, 0, 0, 0}, {2, 3});
  const Tensor idx = i64s({0, 0, 2, 1, 1, 1}, {2, 3});
  const Tensor src = f64s({1, 2, 4, 8, 16, 32}, {2, 3});
  EXPECT_TRUE(allclose(scatter_add(x, 1, idx, src), f64s({3, 0, 4, 0, 56, 0}, {2, 3})));
  // Along dim 0 with src larger than the index: only src[:1, :2] is used.
  const Tensor ones23 = full({2, 3}, 1.0, DType::f64);
  EXPECT_TRUE(allclose(scatter_add(ones23, 0, i64s({1, 1}, {1, 2}), src),
                       f64s({1, 1, 1, 2, 3, 1}, {2, 3})));
}

TEST(ScatterAdd, GradcheckRepeatedIndicesLargerSrc) {
  // x [3, 2, 2]; scatter along dim 0 with index [4, 2, 1] (repeats) and src [4, 3, 2] (larger in
  // dims 1 and 2, and a transposed view).
  const Tensor idx = i64s({2, 0, 2, 2, 0, 1, 2, 2}, {4, 2, 1});
  EXPECT_TRUE(gradcheck(
      [&](const std::vector<Tensor>& in) {
        return scatter_add(in[0], 0, idx, in[1].transpose(1, 2));
      },
      {uniform({3, 2, 2}, -1, 1, 15), uniform({4, 2, 3}, -1, 1, 16)}));
  const Tensor idx1 = from_vector<int32_t>({0, 0, 0}, {1, 3});
  EXPECT_TRUE(
      gradcheck([&](const std::vector<Tensor>& in) { return scatter_add(in[0], 1, idx1, in[1]); },
                {uniform({1, 1}, -1, 1, 17), uniform({1, 3}, -1, 1, 18)}));
}

TEST(ScatterAdd, Errors) {
  const Tensor x = zeros({2, 3});
  expect_error(
      [&] {
        scatter_add(x, 1, i64s({0, 3}, {1, 2}), zeros({1, 2}));
      },
      {"[scatter_add]", "index 3", "[0, 3)"});
  expect_error(
      [&] {
        scatter_add(x, 1, i64s({0, 1}, {1, 2}), zeros({1, 1}));
      },
      {"[scatter_add]", "src shape [1, 1]"});
  expect_error(
      [&] {
        scatter_add(x, 0, i64s({0, 1}, {2}), zeros({2}));
      },
      {"[scatter_add]", "dims"});
  expect_error(
      [&] {
        scatter_add(x, 0, zeros({1, 1}), zeros({1, 1}));
      },
      {"[scatter_add]", "i32 or i64"});
}

// ---- determinism of the accumulating kernels --------------------------------------------------

TEST(IndexDeterminism, AccumulationIsSerialOrderForAnyThreadCount) {
  ThreadCount restore;
  Generator gen(3, 0);
  const int64_t rows = 32, n = 5, m = 2000, inner = 40;
  const Tensor src = randn({rows, m, inner}, gen);
  const Tensor idx = randint(0, n, {m}, gen, DType::i64);
  const Tensor x = zeros({rows, n, inner});
  // Reference: a plain loop that adds in index order, in f32 as the kernel does.
  std::vector<float> ref(size_t(rows * n * inner), 0.0f);
  const auto s = src.to_vector<float>();
  const auto ix = idx.to_vector<int64_t>();
  for (int64_t o = 0; o < rows; ++o) {
    for (int64_t j = 0; j < m; ++j) {
      for (int64_t c = 0; c < inner; ++c) {
        ref[size_t((o * n + ix[size_t(j)]) * inner + c)] += s[size_t((o * m + j) * inner + c)];
      }
    }
  }
  // scatter_add along dim 1 with the index broadcast over rows and columns computes the same sums.
  const Tensor idx3 = idx.reshape({1, m, 1}).expand({rows, m, inner}).contiguous();
  for (int threads : {1, 2, 5}) {
    kernels::cpu::set_num_threads(threads);
    EXPECT_EQ(index_add(x, 1, idx, src).to_vector<float>(), ref) << threads << " threads";
    EXPECT_EQ(scatter_add(x, 1, idx3, src).to_vector<float>(), ref) << threads << " threads";
  }
}

// ---- topk -------------------------------------------------------------------------------------

TEST(TopK, ValuesIndicesAndTies) {
  const Tensor x = f64s({3, 1, 4, 1, 5, 9, 2, 6, 5, 3}, {2, 5});
  const TopK a = topk(x, 3);
  EXPECT_TRUE(allclose(a.values, f64s({5, 4, 3, 9, 6, 5}, {2, 3})));
  EXPECT_EQ(a.indices.dtype(), DType::i64);
  EXPECT_EQ(a.indices.to_vector<int64_t>(), (std::vector<int64_t>{4, 2, 0, 0, 2, 3}));
  const TopK b = topk(x, 2, 1, /*largest=*/false);
  EXPECT_TRUE(allclose(b.values, f64s({1, 1, 2, 3}, {2, 2})));
  EXPECT_EQ(b.indices.to_vector<int64_t>(), (std::vector<int64_t>{1, 3, 1, 4}));
  const TopK c = topk(x, 1, 0);
  EXPECT_TRUE(allclose(c.values, f64s({9, 2, 6, 5, 5}, {1, 5})));
  EXPECT_EQ(c.indices.to_vector<int64_t>(), (std::vector<int64_t>{1, 1, 1, 1, 0}));
  const Tensor ties = f64s({2, 7, 7, 2, 7}, {5});
  EXPECT_EQ(topk(ties, 4).indices.to_vector<int64_t>(), (std::vector<int64_t>{1, 2, 4, 0}));
  EXPECT_EQ(topk(ties, 5, 0, false).indices.to_vector<int64_t>(),
            (std::vector<int64_t>{0, 3, 1, 2, 4}));
}

TEST(TopK, NanRanksHighestAndIntegersWork) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const Tensor x = f64s({1, nan, 3}, {3});
  EXPECT_EQ(topk(x, 2).indices.to_vector<int64_t>(), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(topk(x, 3, 0, false).indices.to_vector<int64_t>(), (std::vector<int64_t>{0, 2, 1}));
  const TopK t = topk(from_vector<int32_t>({5, -2, 8, 8}, {4}), 2);
  EXPECT_EQ(t.values.to_vector<int32_t>(), (std::vector<int32_t>{8, 8}));
  EXPECT_EQ(t.indices.to_vector<int64_t>(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(topk(zeros({3, 4}), 0, 1).values.shape(), (Shape{3, 0}));
}

TEST(TopK, GradcheckMiddleDim) {
  // x [3, 4, 2] (a transposed view of [2, 4, 3]) along dim 1 with k = 1 and k = n.
  for (int64_t k : {1, 4}) {
    for (bool largest : {true, false}) {
      EXPECT_TRUE(gradcheck(
          [&](const std::vector<Tensor>& in) {
            return topk(in[0].transpose(0, 2), k, 1, largest).values;
          },
          {uniform({2, 4, 3}, -1, 1, 19)}))
          << "k " << k << " largest " << largest;
    }
  }
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return topk(in[0], 2, -1).values; },
                        {uniform({1, 1, 5}, -1, 1, 20)}));
}

TEST(TopK, IndicesCarryNoGradient) {
  Tensor x = uniform({4}, -1, 1, 21).set_requires_grad();
  const TopK t = topk(x, 2);
  EXPECT_TRUE(t.values.requires_grad());
  EXPECT_FALSE(t.indices.requires_grad());
}

TEST(TopK, Errors) {
  expect_error([] { topk(zeros({2, 3}), 4, 1); }, {"[topk]", "k = 4", "[2, 3]"});
  expect_error([] { topk(zeros({2, 3}), -1); }, {"[topk]", "k = -1"});
  expect_error([] { topk(zeros({2, 3}), 1, 2); }, {"[topk]", "dim 2"});
  expect_error([] { topk(zeros({2}, DType::boolean), 1); }, {"[topk]", "bool"});
}

}  // namespace loom

namespace loom {
namespace {

// unbind gives the select views, and its gradient (built in the input's layout) matches finite
// differences, for a plain and a permuted input, including an unused slice.
TEST(Unbind, ViewsAndGradient) {
  const Tensor x = testing::uniform({3, 4, 5});
  const std::vector<Tensor> parts = unbind(x, 1);
  ASSERT_EQ(parts.size(), 4u);
  EXPECT_TRUE(testing::allclose(parts[2], x.select(1, 2), 0, 0));
  EXPECT_TRUE(testing::gradcheck(
      [](const std::vector<Tensor>& v) {
        const std::vector<Tensor> p = unbind(v[0].permute({2, 0, 1}), 0);
        return p[0] * p[1] + p[4] * 3.0;
      },
      {x}));
  testing::expect_error([] { unbind(zeros({2, 0}), 1); }, "[unbind] dim 1");
}

}  // namespace
}  // namespace loom
