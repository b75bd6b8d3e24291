#include <sstream>

#include "kernels/cuda/runtime.h"

#include "testing.h"

namespace loom {
using testing::allclose;

TEST(Tensor, CreationShapesAndValues) {
  Tensor z = zeros({2, 3});
  EXPECT_EQ(z.shape(), (Shape{2, 3}));
  EXPECT_EQ(z.numel(), 6);
  EXPECT_EQ(z.strides(), (Strides{3, 1}));
  EXPECT_TRUE(z.is_contiguous());
  EXPECT_EQ(sum(ones({4, 5})).item(), 20.0);
  EXPECT_EQ(full({2}, 2.5, DType::f64).to_vector<double>(), (std::vector<double>{2.5, 2.5}));
  EXPECT_EQ(arange(0, 5).to_vector<float>(), (std::vector<float>{0, 1, 2, 3, 4}));
  EXPECT_EQ(arange(1, 2, 0.25, DType::f64).to_vector<double>(),
            (std::vector<double>{1, 1.25, 1.5, 1.75}));
  EXPECT_EQ(linspace(0, 1, 5, DType::f64).to_vector<double>(),
            (std::vector<double>{0, 0.25, 0.5, 0.75, 1}));
  EXPECT_EQ(scalar(3).dim(), 0);
  EXPECT_EQ(scalar(3).item(), 3.0);
}

TEST(Tensor, FromVectorChecksSize) {
  EXPECT_THROW(from_vector<float>({1, 2, 3}, {2, 2}), Error);
}

TEST(Tensor, ViewsShareStorage) {
  Tensor x = arange(0, 24).reshape({2, 3, 4});
  Tensor t = x.transpose(0, 2);
  EXPECT_EQ(t.shape(), (Shape{4, 3, 2}));
  EXPECT_FALSE(t.is_contiguous());
  EXPECT_EQ(t.storage(), x.storage());
  Tensor s = x.slice(2, 1, 4, 2);  // columns 1 and 3
  EXPECT_EQ(s.shape(), (Shape{2, 3, 2}));
  EXPECT_EQ(s.to_vector<float>()[0], 1.0f);
  EXPECT_EQ(s.to_vector<float>()[1], 3.0f);
  Tensor n = x.narrow(1, 1, 2);
  EXPECT_EQ(n.to_vector<float>()[0], 4.0f);
  Tensor e = from_vector<float>({1, 2}, {2, 1}).expand({2, 3});
  EXPECT_EQ(e.to_vector<float>(), (std::vector<float>{1, 1, 1, 2, 2, 2}));
  EXPECT_EQ(e.strides()[1], 0);
  EXPECT_EQ(x.unsqueeze(1).shape(), (Shape{2, 1, 3, 4}));
  EXPECT_EQ(x.unsqueeze(1).squeeze(1).shape(), (Shape{2, 3, 4}));
  EXPECT_EQ(x.select(1, 2).to_vector<float>()[0], 8.0f);
  EXPECT_EQ(x.flatten(1).shape(), (Shape{2, 12}));
  // Writing through a view is seen by the base.
  copy_into(x.select(0, 1), zeros({3, 4}));
  EXPECT_EQ(sum(x).item(), 66.0);
}

TEST(Tensor, ReshapeOfTransposeCopiesOnlyWhenNeeded) {
  Tensor x = arange(0, 6).reshape({2, 3});
  Tensor t = x.t();  // [3, 2], not contiguous
  EXPECT_THROW(t.view({6}), Error);
  Tensor r = t.reshape({6});
  EXPECT_NE(r.storage(), x.storage());
  EXPECT_EQ(r.to_vector<float>(), (std::vector<float>{0, 3, 1, 4, 2, 5}));
  // Splitting a dim of a transposed tensor is still a view.
  Tensor y = arange(0, 24).reshape({4, 6}).t();  // [6, 4]
  Tensor v = y.view({2, 3, 4});
  EXPECT_EQ(v.storage(), y.storage());
  EXPECT_TRUE(allclose(v, y.contiguous().view({2, 3, 4})));
  EXPECT_EQ(x.reshape({-1}).shape(), (Shape{6}));
  EXPECT_THROW(x.reshape({4, -1}), Error);
}

TEST(Tensor, ContiguousAndClone) {
  Tensor x = arange(0, 6).reshape({2, 3});
  EXPECT_TRUE(x.contiguous().same(x));
  Tensor c = x.t().contiguous();
  EXPECT_TRUE(c.is_contiguous());
  EXPECT_EQ(c.to_vector<float>(), (std::vector<float>{0, 3, 1, 4, 2, 5}));
  Tensor k = x.clone();
  EXPECT_NE(k.storage(), x.storage());
}

TEST(Tensor, DtypeConversions) {
  Tensor x = from_vector<float>({1.5f, -2.25f, 3.0f, 1e-3f}, {4});
  EXPECT_TRUE(allclose(x.to(DType::f64).to(DType::f32), x, 0, 0));
  EXPECT_TRUE(allclose(x.to(DType::bf16).to(DType::f32), x, 0, 1e-2));
  EXPECT_TRUE(allclose(x.to(DType::f16).to(DType::f32), x, 0, 1e-3));
  EXPECT_EQ(x.to(DType::i64).to_vector<int64_t>(), (std::vector<int64_t>{1, -2, 3, 0}));
  EXPECT_EQ(x.to(DType::boolean).to_vector<int64_t>(), (std::vector<int64_t>{1, 1, 1, 1}));
  // bf16 rounds to nearest even: 1 + 2^-8 is halfway between 1 and 1 + 2^-7.
  EXPECT_EQ(float(bf16(1.0f + 1.0f / 256)), 1.0f);
  EXPECT_EQ(float(bf16(1.0f + 3.0f / 256)), 1.0f + 4.0f / 256);
  EXPECT_EQ(float(f16(65504.0f)), 65504.0f);
  EXPECT_EQ(float(f16(1e-7f)), float(f16(1e-7f)));  // subnormal path round-trips
  EXPECT_NEAR(float(f16(1e-7f)), 1e-7f, 3e-8f);
}

TEST(Tensor, CastIsDifferentiable) {
  Tensor x = from_vector<float>({1, 2}, {2}).set_requires_grad();
  sum(square(x.to(DType::f64))).backward();
  EXPECT_EQ(x.grad().dtype(), DType::f32);
  EXPECT_TRUE(allclose(x.grad(), from_vector<float>({2, 4}, {2})));
}

TEST(Tensor, PrintingShowsShapeDtypeAndValues) {
  std::ostringstream os;
  os << arange(0, 3).reshape({1, 3});
  EXPECT_NE(os.str().find("[1, 3]"), std::string::npos);
  EXPECT_NE(os.str().find("f32"), std::string::npos);
  EXPECT_NE(os.str().find("[[0, 1, 2]]"), std::string::npos) << os.str();
  const std::string long_str = arange(0, 100).str();
  EXPECT_NE(long_str.find("..."), std::string::npos);
}

TEST(Tensor, ErrorsNameTheOp) {
  Tensor x = zeros({2, 3});
  try {
    (void)x.permute({0, 0});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[permute]"), std::string::npos);
  }
  EXPECT_THROW((void)x.squeeze(0), Error);
  EXPECT_THROW((void)x.expand({3, 3}), Error);
  EXPECT_THROW((void)x.size(5), Error);
  EXPECT_THROW((void)x.data<double>(), Error);
  Tensor w = zeros({2, 3}).set_requires_grad();
  EXPECT_THROW(w.t().set_requires_grad(), Error);  // a non-leaf
  EXPECT_THROW(zeros({2}, DType::i64).set_requires_grad(), Error);
}

TEST(Tensor, CudaRoundTripKeepsValues) {
  if (kernels::cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const Tensor x = arange(0, 10).reshape({2, 5});
  const Tensor d = x.t().to(Device::cuda());
  EXPECT_TRUE(d.device().is_cuda());
  EXPECT_TRUE(allclose(d.to(Device::cpu()), x.t().contiguous(), 0, 0));
  EXPECT_EQ(d.to_vector<float>(), x.t().contiguous().to_vector<float>());
}

TEST(Tensor, CudaIsAClearErrorWithoutADevice) {
  if (kernels::cuda::device_count() > 0) GTEST_SKIP() << "a CUDA device is present";
  try {
    (void)zeros({2}).to(Device::cuda());
    FAIL();
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("cuda"), std::string::npos) << e.what();
  }
}

}  // namespace loom
