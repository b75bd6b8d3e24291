#include <algorithm>
#include <array>
#include <limits>
#include <numeric>
#include <random>
#include <source_location>

#include "kernels/cpu/conv.h"
#include "testing.h"

namespace loom {
using testing::allclose;
using testing::gradcheck;
using testing::uniform;

namespace {

using A2 = std::array<int64_t, 2>;
using A3 = std::array<int64_t, 3>;

// Direct 3-D convolution from the definition, in double.
Tensor naive_conv3d(const Tensor& x, const Tensor& w, const Tensor& b, A3 s, A3 p) {
  const auto xv = x.to_vector<double>(), wv = w.to_vector<double>();
  const std::vector<double> bv = b.defined() ? b.to_vector<double>() : std::vector<double>();
  const int64_t n = x.size(0), c = x.size(1), co = w.size(0);
  const A3 in{x.size(2), x.size(3), x.size(4)}, k{w.size(2), w.size(3), w.size(4)};
  A3 out;
  for (int d = 0; d < 3; ++d) out[size_t(d)] = (in[d] + 2 * p[d] - k[d]) / s[d] + 1;
  std::vector<double> y;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t o = 0; o < co; ++o)
      for (int64_t od = 0; od < out[0]; ++od)
        for (int64_t oh = 0; oh < out[1]; ++oh)
          for (int64_t ow = 0; ow < out[2]; ++ow) {
            double acc = bv.empty() ? 0.0 : bv[size_t(o)];
            for (int64_t ci = 0; ci < c; ++ci)
              for (int64_t a = 0; a < k[0]; ++a)
                for (int64_t bb = 0; bb < k[1]; ++bb)
                  for (int64_t cc = 0; cc < k[2]; ++cc) {
                    const int64_t id = od * s[0] - p[0] + a, ih = oh * s[1] - p[1] + bb,
                                  iw = ow * s[2] - p[2] + cc;
                    if (id < 0 || id >= in[0] || ih < 0 || ih >= in[1] || iw < 0 || iw >= in[2])
                      continue;
                    acc += xv[size_t((((i * c + ci) * in[0] + id) * in[1] + ih) * in[2] + iw)] *
                           wv[size_t((((o * c + ci) * k[0] + a) * k[1] + bb) * k[2] + cc)];
                  }
            y.push_back(acc);
          }
  return from_vector<double>(y, {n, co, out[0], out[1], out[2]}, x.dtype());
}

Tensor naive_conv2d(const Tensor& x, const Tensor& w, const Tensor& b, A2 s, A2 p) {
  return naive_conv3d(x.unsqueeze(2), w.unsqueeze(2), b, {1, s[0], s[1]}, {0, p[0], p[1]})
      .squeeze(2);
}

// Direct max pooling; padded taps are skipped (they are -inf).
Tensor naive_max_pool3d(const Tensor& x, A3 k, A3 s, A3 p) {
  const auto xv = x.to_vector<double>();
  const int64_t nc = x.size(0) * x.size(1);
  const A3 in{x.size(2), x.size(3), x.size(4)};
  A3 out;
  for (int d = 0; d < 3; ++d) out[size_t(d)] = (in[d] + 2 * p[d] - k[d]) / s[d] + 1;
  std::vector<double> y;
  for (int64_t i = 0; i < nc; ++i)
    for (int64_t od = 0; od < out[0]; ++od)
      for (int64_t oh = 0; oh < out[1]; ++oh)
        for (int64_t ow = 0; ow < out[2]; ++ow) {
          double m = -std::numeric_limits<double>::infinity();
          for (int64_t a = 0; a < k[0]; ++a)
            for (int64_t bb = 0; bb < k[1]; ++bb)
              for (int64_t cc = 0; cc < k[2]; ++cc) {
                const int64_t id = od * s[0] - p[0] + a, ih = oh * s[1] - p[1] + bb,
                              iw = ow * s[2] - p[2] + cc;
                if (id < 0 || id >= in[0] || ih < 0 || ih >= in[1] || iw < 0 || iw >= in[2])
                  continue;
                m = std::max(m, xv[size_t(((i * in[0] + id) * in[1] + ih) * in[2] + iw)]);
              }
          y.push_back(m);
        }
  return from_vector<double>(y, {x.size(0), x.size(1), out[0], out[1], out[2]}, x.dtype());
}

// Distinct values (a shuffled, scaled 0..n-1), so max pooling has no ties.
Tensor distinct(const Shape& shape, uint64_t seed) {
  std::vector<double> v(size_t(numel_of(shape)));
  std::iota(v.begin(), v.end(), 0.0);
  std::shuffle(v.begin(), v.end(), std::mt19937_64(seed));
  for (double& e : v) e = 0.1 * e - 1.0;
  return from_vector<double>(v, shape);
}

template <class F>
void expect_error(F&& f, const std::string& op, const std::string& fragment,
                  std::source_location at = std::source_location::current()) {
  try {
    f();
    ADD_FAILURE_AT(at.file_name(), int(at.line())) << "expected loom::Error with " << fragment;
  } catch (const Error& e) {
    const std::string msg = e.what();
    if (msg.rfind("[" + op + "]", 0) != 0 || msg.find(fragment) == std::string::npos)
      ADD_FAILURE_AT(at.file_name(), int(at.line()))
          << "message lacks [" << op << "] or '" << fragment << "': " << msg;
  }
}

struct Conv2dCase {
  A2 stride, padding;
  bool bias;
};

const Conv2dCase kConv2dCases[] = {
    {{1, 1}, {0, 0}, true},  {{1, 1}, {1, 1}, true},  {{2, 2}, {0, 0}, true},
    {{2, 2}, {1, 1}, false}, {{1, 2}, {1, 0}, false}, {{2, 1}, {0, 1}, true},
};

}  // namespace

TEST(Conv2d, MatchesNaiveF64) {
  const Tensor x = uniform({2, 3, 5, 6}, -1, 1, 1), w = uniform({4, 3, 3, 2}, -1, 1, 2);
  const Tensor b = uniform({4}, -1, 1, 3);
  for (const auto& c : kConv2dCases) {
    const Tensor bias = c.bias ? b : Tensor();
    EXPECT_TRUE(allclose(conv2d(x, w, bias, c.stride, c.padding),
                         naive_conv2d(x, w, bias, c.stride, c.padding), 1e-12, 1e-12))
        << "stride " << c.stride[0] << "," << c.stride[1] << " padding " << c.padding[0] << ","
        << c.padding[1];
  }
}

TEST(Conv2d, MatchesNaiveF32) {
  const Tensor x = uniform({3, 5, 9, 7}, -1, 1, 4, DType::f32);
  const Tensor w = uniform({6, 5, 3, 3}, -1, 1, 5, DType::f32);
  const Tensor b = uniform({6}, -1, 1, 6, DType::f32);
  const Tensor y = conv2d(x, w, b, {2, 1}, {1, 1});
  EXPECT_EQ(y.dtype(), DType::f32);
  EXPECT_EQ(y.shape(), (Shape{3, 6, 5, 7}));
  EXPECT_TRUE(allclose(y, naive_conv2d(x, w, b, {2, 1}, {1, 1}), 1e-5, 1e-5));
}

TEST(Conv2d, NonContiguousInputs) {
  const Tensor x = uniform({2, 3, 6, 5}, -1, 1, 7).transpose(2, 3);  // [2, 3, 5, 6] view
  const Tensor w = uniform({4, 3, 2, 3}, -1, 1, 8).transpose(2, 3);  // [4, 3, 3, 2] view
  ASSERT_FALSE(x.is_contiguous());
  EXPECT_TRUE(allclose(conv2d(x, w, Tensor(), {1, 2}, {1, 0}),
                       naive_conv2d(x, w, Tensor(), {1, 2}, {1, 0}), 1e-12, 1e-12));
}

TEST(Conv2d, Gradcheck) {
  const Tensor x = uniform({2, 3, 5, 6}, -1, 1, 11), w = uniform({4, 3, 3, 2}, -1, 1, 12);
  const Tensor b = uniform({4}, -1, 1, 13);
  for (const auto& c : kConv2dCases) {
    if (c.bias) {
      EXPECT_TRUE(gradcheck(
          [&](const std::vector<Tensor>& in) {
            return conv2d(in[0], in[1], in[2], c.stride, c.padding);
          },
          {x, w, b}))
          << "stride " << c.stride[0] << "," << c.stride[1] << " padding " << c.padding[0];
    } else {
      EXPECT_TRUE(gradcheck(
          [&](const std::vector<Tensor>& in) {
            return conv2d(in[0], in[1], Tensor(), c.stride, c.padding);
          },
          {x, w}))
          << "stride " << c.stride[0] << "," << c.stride[1] << " padding " << c.padding[0];
    }
  }
}

TEST(Conv2d, GradOnlyForWeightWhenInputIsConstant) {
  const Tensor x = uniform({2, 3, 5, 6}, -1, 1, 14);
  Tensor w = uniform({4, 3, 3, 2}, -1, 1, 15).set_requires_grad();
  sum(conv2d(x, w, Tensor(), {1, 1}, {1, 1})).backward();
  EXPECT_FALSE(x.grad().defined());
  ASSERT_TRUE(w.grad().defined());
  EXPECT_EQ(w.grad().shape(), w.shape());
}

TEST(Conv2d, PointwiseKernel) {
  const Tensor x = uniform({2, 3, 4, 5}, -1, 1, 16), w = uniform({5, 3, 1, 1}, -1, 1, 17);
  const Tensor b = uniform({5}, -1, 1, 18);
  EXPECT_TRUE(allclose(conv2d(x, w, b), naive_conv2d(x, w, b, {1, 1}, {0, 0}), 1e-12, 1e-12));
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], in[2]); },
                        {x, w, b}));
}

// A DiT patch embedding: kernel = stride = p is a reshape of x into patches and one GEMM.
TEST(Conv2d, PatchEmbeddingMatchesPatchMatmul) {
  const int64_t n = 2, c = 3, h = 8, wd = 6, p = 2, d = 5;
  const Tensor x = uniform({n, c, h, wd}, -1, 1, 19), w = uniform({d, c, p, p}, -1, 1, 20);
  const Tensor b = uniform({d}, -1, 1, 21);
  const Tensor y = conv2d(x, w, b, {p, p}, {0, 0});
  ASSERT_EQ(y.shape(), (Shape{n, d, h / p, wd / p}));
  // [N, C, H/p, p, W/p, p] -> [N, H/p, W/p, C, p, p] -> [N, T, C p p] @ [C p p, D].
  const Tensor patches = x.reshape({n, c, h / p, p, wd / p, p})
                             .permute({0, 2, 4, 1, 3, 5})
                             .reshape({n, (h / p) * (wd / p), c * p * p});
  const Tensor ref = linear(patches, w.reshape({d, c * p * p}), b);  // [N, T, D]
  EXPECT_TRUE(allclose(y.flatten(2).transpose(1, 2), ref, 1e-12, 1e-12));
}

TEST(Conv2d, PatchEmbeddingGradcheck) {
  // H = 5 is not a multiple of the patch: the last row is dropped and gets zero gradient.
  const Tensor x = uniform({2, 3, 5, 6}, -1, 1, 22), w = uniform({4, 3, 2, 2}, -1, 1, 23);
  const Tensor b = uniform({4}, -1, 1, 24);
  EXPECT_TRUE(
      allclose(conv2d(x, w, b, {2, 2}), naive_conv2d(x, w, b, {2, 2}, {0, 0}), 1e-12, 1e-12));
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& in) {
        return conv2d(in[0], in[1], in[2], {2, 2});
      },
      {x, w, b}));
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& in) {
        return conv2d(in[0], in[1], Tensor(), {2, 2});
      },
      {x, w}));
}

TEST(Conv3d, MatchesNaive) {
  const Tensor x = uniform({2, 3, 4, 5, 6}, -1, 1, 31), w = uniform({4, 3, 3, 2, 3}, -1, 1, 32);
  const Tensor b = uniform({4}, -1, 1, 33);
  const std::pair<A3, A3> cases[] = {{{1, 1, 1}, {0, 0, 0}},
                                     {{2, 2, 2}, {1, 1, 1}},
                                     {{1, 2, 3}, {1, 0, 1}},
                                     {{2, 1, 1}, {0, 1, 0}}};
  for (const auto& [s, p] : cases) {
    EXPECT_TRUE(allclose(conv3d(x, w, b, s, p), naive_conv3d(x, w, b, s, p), 1e-12, 1e-12));
    EXPECT_TRUE(
        allclose(conv3d(x, w, Tensor(), s, p), naive_conv3d(x, w, Tensor(), s, p), 1e-12, 1e-12));
  }
  const Tensor xf = x.to(DType::f32), wf = w.to(DType::f32), bf = b.to(DType::f32);
  EXPECT_TRUE(allclose(conv3d(xf, wf, bf, {2, 1, 2}, {1, 1, 0}),
                       naive_conv3d(xf, wf, bf, {2, 1, 2}, {1, 1, 0}), 1e-5, 1e-5));
}

TEST(Conv3d, Gradcheck) {
  const Tensor x = uniform({2, 2, 4, 5, 3}, -1, 1, 34), w = uniform({3, 2, 3, 2, 2}, -1, 1, 35);
  const Tensor b = uniform({3}, -1, 1, 36);
  const std::pair<A3, A3> cases[] = {{{1, 1, 1}, {0, 0, 0}},
                                     {{1, 1, 1}, {1, 1, 1}},
                                     {{2, 2, 2}, {0, 0, 0}},
                                     {{2, 1, 2}, {1, 0, 1}}};
  for (const auto& [s, p] : cases) {
    EXPECT_TRUE(
        gradcheck([&](const std::vector<Tensor>& in) { return conv3d(in[0], in[1], in[2], s, p); },
                  {x, w, b}))
        << "stride " << s[0] << s[1] << s[2] << " padding " << p[0] << p[1] << p[2];
    EXPECT_TRUE(gradcheck(
        [&](const std::vector<Tensor>& in) { return conv3d(in[0], in[1], Tensor(), s, p); },
        {x, w}))
        << "stride " << s[0] << s[1] << s[2] << " padding " << p[0] << p[1] << p[2];
  }
}

TEST(Conv3d, PatchEmbeddingGradcheck) {
  const Tensor x = uniform({2, 2, 4, 4, 6}, -1, 1, 37), w = uniform({3, 2, 2, 2, 2}, -1, 1, 38);
  const Tensor b = uniform({3}, -1, 1, 39);
  EXPECT_TRUE(allclose(conv3d(x, w, b, {2, 2, 2}), naive_conv3d(x, w, b, {2, 2, 2}, {0, 0, 0}),
                       1e-12, 1e-12));
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& in) {
        return conv3d(in[0], in[1], in[2], {2, 2, 2});
      },
      {x, w, b}));
}

// Splitting the batch into column-buffer groups must not change any result.
TEST(ConvKernels, SampleGroupingDoesNotChangeResults) {
  kernels::cpu::ConvGeom g;
  g.channels = 3;
  g.in = {3, 5, 6};
  g.kernel = {2, 3, 2};
  g.stride = {1, 2, 1};
  g.padding = {1, 1, 0};
  for (int d = 0; d < 3; ++d)
    g.out[size_t(d)] = kernels::cpu::conv_out_size(g.in[d], g.kernel[d], g.stride[d], g.padding[d]);
  const int64_t n = 5, cout = 4, ck = g.channels * g.kernel_numel();
  const auto x = uniform({n, g.channels, 3, 5, 6}, -1, 1, 41).to_vector<double>();
  const auto w = uniform({cout, ck}, -1, 1, 42).to_vector<double>();
  const auto b = uniform({cout}, -1, 1, 43).to_vector<double>();
  const auto dy = uniform({n, cout, g.out_numel()}, -1, 1, 44).to_vector<double>();
  const int64_t one_sample = ck * g.out_numel() * int64_t(sizeof(double));
  for (const int64_t budget : {int64_t(1), 2 * one_sample}) {
    std::vector<double> y1(size_t(n * cout * g.out_numel())), y2(y1.size());
    kernels::cpu::conv_forward(g, n, cout, x.data(), w.data(), b.data(), y1.data());
    kernels::cpu::conv_forward(g, n, cout, x.data(), w.data(), b.data(), y2.data(), budget);
    EXPECT_EQ(y1, y2);
    std::vector<double> dx1(x.size()), dx2(x.size());
    kernels::cpu::conv_backward_input(g, n, cout, dy.data(), w.data(), dx1.data());
    kernels::cpu::conv_backward_input(g, n, cout, dy.data(), w.data(), dx2.data(), budget);
    EXPECT_EQ(dx1, dx2);
    std::vector<double> dw1(w.size()), dw2(w.size(), 7.0);  // dw is overwritten
    kernels::cpu::conv_backward_weight(g, n, cout, dy.data(), x.data(), dw1.data());
    kernels::cpu::conv_backward_weight(g, n, cout, dy.data(), x.data(), dw2.data(), budget);
    EXPECT_EQ(dw1, dw2);
  }
}

// vol2col and col2vol are adjoint: <vol2col(x), c> == <x, col2vol(c)>.
TEST(ConvKernels, Col2volIsAdjointOfVol2col) {
  kernels::cpu::ConvGeom g;
  g.channels = 2;
  g.in = {4, 5, 7};
  g.kernel = {3, 2, 3};
  g.stride = {2, 1, 3};
  g.padding = {1, 1, 1};
  for (int d = 0; d < 3; ++d)
    g.out[size_t(d)] = kernels::cpu::conv_out_size(g.in[d], g.kernel[d], g.stride[d], g.padding[d]);
  const int64_t planes = 3 * g.channels, rows = planes * g.kernel_numel();
  const auto x = uniform({planes, g.in_numel()}, -1, 1, 45).to_vector<double>();
  const auto c = uniform({rows, g.out_numel()}, -1, 1, 46).to_vector<double>();
  std::vector<double> cols(c.size()), dx(x.size(), 3.0);
  kernels::cpu::vol2col(g, planes, x.data(), cols.data());
  kernels::cpu::col2vol(g, planes, c.data(), dx.data());
  const double lhs = std::inner_product(cols.begin(), cols.end(), c.begin(), 0.0);
  const double rhs = std::inner_product(x.begin(), x.end(), dx.begin(), 0.0);
  EXPECT_NEAR(lhs, rhs, 1e-10 * std::abs(lhs) + 1e-12);
  EXPECT_GT(std::abs(lhs), 0.0);
}

TEST(Conv, Errors) {
  const Tensor x = uniform({2, 3, 5, 6}), w = uniform({4, 3, 3, 2});
  expect_error([&] { conv2d(x, uniform({4, 2, 3, 2})); }, "conv2d", "channels");
  expect_error([&] { conv2d(x, uniform({4, 3, 7, 2})); }, "conv2d", "larger than the input");
  expect_error(
      [&] {
        conv2d(x, uniform({4, 3, 8, 2}), Tensor(), {1, 1}, {1, 0});
      },
      "conv2d", "larger than the input");
  expect_error([&] { conv2d(x.flatten(2), w); }, "conv2d", "rank 4");
  expect_error([&] { conv2d(x, w.flatten(2)); }, "conv2d", "[Cout, Cin, kH, kW] (rank 4)");
  expect_error([&] { conv2d(x, w, uniform({3})); }, "conv2d", "bias");
  expect_error([&] { conv2d(x, w, Tensor(), {0, 1}); }, "conv2d", "stride");
  expect_error([&] { conv2d(x, w.to(DType::f32)); }, "conv2d", "dtype");
  expect_error([&] { conv2d(x.to(DType::i64), w.to(DType::i64)); }, "conv2d", "dtype");
  expect_error([&] { conv3d(x, w); }, "conv3d", "[N, Cin, D, H, W] (rank 5)");
  expect_error(
      [&] {
        conv3d(uniform({1, 2, 3, 3, 3}), uniform({1, 3, 2, 2, 2}));
      },
      "conv3d", "channels");
  expect_error(
      [&] {
        conv3d(uniform({1, 2, 3, 3, 3}), uniform({1, 2, 2, 4, 2}));
      },
      "conv3d", "larger than the input");
  expect_error([&] { max_pool2d(x, {7, 2}, {1, 1}); }, "max_pool2d", "larger than the input");
  expect_error([&] { max_pool2d(x, {2, 2}, {1, 1}, {2, 0}); }, "max_pool2d", "half the kernel");
  expect_error([&] { max_pool3d(x, {2, 2, 2}, {1, 1, 1}); }, "max_pool3d", "rank 5");
}

TEST(MaxPool2d, MatchesNaiveAndGradcheck) {
  const Tensor x = distinct({2, 3, 5, 6}, 51);
  const std::tuple<A2, A2, A2> cases[] = {{{2, 2}, {2, 2}, {0, 0}},
                                          {{3, 2}, {1, 1}, {1, 1}},
                                          {{3, 3}, {2, 2}, {1, 0}},
                                          {{2, 3}, {2, 1}, {0, 1}}};
  for (const auto& [k, s, p] : cases) {
    EXPECT_TRUE(
        allclose(max_pool2d(x, k, s, p),
                 naive_max_pool3d(x.unsqueeze(2), {1, k[0], k[1]}, {1, s[0], s[1]}, {0, p[0], p[1]})
                     .squeeze(2),
                 0, 0));
    EXPECT_TRUE(
        gradcheck([&](const std::vector<Tensor>& in) { return max_pool2d(in[0], k, s, p); }, {x}))
        << "kernel " << k[0] << k[1] << " stride " << s[0] << s[1] << " padding " << p[0] << p[1];
  }
}

TEST(MaxPool3d, MatchesNaiveAndGradcheck) {
  const Tensor x = distinct({2, 2, 4, 5, 3}, 52);
  const std::tuple<A3, A3, A3> cases[] = {{{2, 2, 2}, {2, 2, 2}, {0, 0, 0}},
                                          {{3, 3, 2}, {1, 2, 1}, {1, 1, 1}},
                                          {{2, 3, 3}, {2, 1, 2}, {1, 0, 1}}};
  for (const auto& [k, s, p] : cases) {
    EXPECT_TRUE(allclose(max_pool3d(x, k, s, p), naive_max_pool3d(x, k, s, p), 0, 0));
    EXPECT_TRUE(
        gradcheck([&](const std::vector<Tensor>& in) { return max_pool3d(in[0], k, s, p); }, {x}))
        << "kernel " << k[0] << k[1] << k[2] << " stride " << s[0] << s[1] << s[2];
  }
  const Tensor xf = x.to(DType::f32);
  const Tensor yf = max_pool3d(xf, {2, 2, 2}, {2, 2, 2});
  EXPECT_EQ(yf.dtype(), DType::f32);
  EXPECT_TRUE(allclose(yf, naive_max_pool3d(xf, {2, 2, 2}, {2, 2, 2}, {0, 0, 0}), 0, 0));
}

TEST(MaxPool2d, TiesRouteGradientToFirstMaximum) {
  // All equal: every window's first element (in row-major window order) takes the gradient.
  Tensor x = zeros({1, 1, 3, 4}, DType::f64).set_requires_grad();
  const Tensor y = max_pool2d(x, {2, 2}, {1, 2});  // [1, 1, 2, 2]; windows start at (0|1, 0|2)
  sum(y * from_vector<double>({1, 2, 3, 4}, {1, 1, 2, 2})).backward();
  EXPECT_TRUE(allclose(x.grad(),
                       from_vector<double>({1, 0, 2, 0,  //
                                            3, 0, 4, 0,  //
                                            0, 0, 0, 0},
                                           {1, 1, 3, 4}),
                       0, 0));
}

TEST(MaxPool2d, PaddingNeverWins) {
  // Negative inputs: the padded border (-inf) must lose to every real value.
  const Tensor x = full({1, 1, 2, 2}, -5.0, DType::f64);
  const Tensor y = max_pool2d(x, {2, 2}, {1, 1}, {1, 1});
  EXPECT_TRUE(allclose(y, full({1, 1, 3, 3}, -5.0, DType::f64), 0, 0));
}

}  // namespace loom
