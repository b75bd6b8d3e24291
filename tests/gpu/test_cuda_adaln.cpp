// The fused adaLN ops (core/ops/adaln.h) on CUDA against their CPU twin: forward outputs and every
// gradient on random inputs of awkward sizes (packed and element-wise rows, one and many tiles of
// tokens), in f32 (tight), under bf16 autocast as the DiT block runs them, and in bf16/f16
// (loose); rows too long for the kernels; f64 finite-difference checks on the device; bitwise
// reproducible sums over tokens. Skipped (and reported as skipped) without a GPU.
#include <gtest/gtest.h>

#include <optional>

#include "core/loom.h"
#include "kernels/cuda/runtime.h"
#include "tests/gpu/gpu_testing.h"
#include "tests/testing.h"

namespace loom {
namespace {

using testing::allclose;
using testing::gradcheck;
using testing::kGpu;
using testing::rel_error;
using testing::uniform;
using Inputs = std::vector<Tensor>;
using Fn = std::function<Tensor(const Inputs&)>;

using CudaAdaln = testing::CudaTest;

// How one comparison runs on the GPU: each input's dtype there, the autocast dtype (if any) and
// the output dtype expected.
struct Precision {
  std::vector<DType> inputs;
  std::optional<DType> autocast;
  DType output;
  double tol;
};

const Precision kF32{{DType::f32, DType::f32, DType::f32}, std::nullopt, DType::f32, 2e-5};

// Runs f on CUDA copies of `inputs` in p's dtypes (under p's autocast) and on f64 CPU copies of
// the same rounded values (the CPU twin); compares the output and the gradient of every input of
// sum(f(x) * w) within p.tol relative error (gradients 4x). w is exact in bf16, so both sides
// start the backward from the same output gradient.
void expect_twin(const std::string& what, const Fn& f, const Inputs& inputs, const Precision& p) {
  SCOPED_TRACE(what);
  Inputs cpu, gpu;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor rounded = inputs[i].to(p.inputs[i]);
    cpu.push_back(rounded.to(DType::f64).detach());
    gpu.push_back(rounded.to(kGpu).detach());
    cpu.back().set_requires_grad(true);
    gpu.back().set_requires_grad(true);
  }
  const Tensor yc = f(cpu);
  Tensor yg;
  {
    const AutocastGuard autocast(p.autocast.value_or(DType::bf16), p.autocast.has_value());
    yg = f(gpu);
  }
  ASSERT_EQ(yg.device(), kGpu);
  ASSERT_EQ(yg.dtype(), p.output);
  ASSERT_EQ(yg.shape(), yc.shape());
  EXPECT_LE(rel_error(yg, yc), p.tol) << "forward";
  const Tensor w = uniform(yc.shape(), 0.5, 1.5, 7, DType::bf16);
  sum(yc * w.to(DType::f64)).backward();
  sum(yg * w.to(yg.dtype()).to(kGpu)).backward();
  for (size_t i = 0; i < inputs.size(); ++i) {
    ASSERT_TRUE(gpu[i].grad().defined()) << "input " << i << " got no gradient";
    EXPECT_EQ(gpu[i].grad().device(), kGpu);
    EXPECT_EQ(gpu[i].grad().dtype(), p.inputs[i]) << "gradient of input " << i;
    EXPECT_LE(rel_error(gpu[i].grad(), cpu[i].grad()), 4 * p.tol) << "gradient of input " << i;
  }
}

Tensor lnm(const Inputs& v) {
  return layer_norm_modulate(v[0], v[1], v[2], 1e-6);
}
Tensor gated(const Inputs& v) {
  return gated_residual(v[0], v[1], v[2]);
}

// x [B, T, C] (not centered, so the mean matters) and two [B, 1, C] vectors.
Inputs lnm_inputs(const Shape& x) {
  const Shape vec{x[0], 1, x[2]};
  return {uniform(x, -3, 3, 31) + 1.0, uniform(vec, -1, 1, 32), uniform(vec, -1, 1, 33)};
}
// x [B, T, C], a [B, 1, C] gate and the branch y [B, T, C].
Inputs gated_inputs(const Shape& x) {
  return {uniform(x, -3, 3, 34), uniform({x[0], 1, x[2]}, -1, 1, 35), uniform(x, -3, 3, 36)};
}

// {3, 257, 771}: element-wise rows, many tiles with a ragged last one. {2, 256, 768}: 16-byte
// packs (DiT-B's width). {3, 5, 7}: one tile, sums written directly. {2, 3, 1152}: DiT-XL's width.
const std::vector<Shape> kShapes{{3, 257, 771}, {2, 256, 768}, {3, 5, 7}, {2, 3, 1152}};

}  // namespace

TEST_F(CudaAdaln, LayerNormModulateMatchesCpu) {
  const DType f32 = DType::f32, bf16 = DType::bf16, f16 = DType::f16;
  for (const Shape& shape : kShapes) {
    const std::string tag = shape_str(shape);
    const Inputs in = lnm_inputs(shape);
    expect_twin("f32 " + tag, lnm, in, kF32);
    // As the DiT block runs it: f32 residual stream, bf16 adaLN vectors, bf16 output.
    expect_twin("bf16 autocast " + tag, lnm, in, {{f32, bf16, bf16}, bf16, bf16, 2e-2});
    expect_twin("f16 autocast " + tag, lnm, in, {{f32, f32, f32}, f16, f16, 2e-3});
    expect_twin("bf16 " + tag, lnm, in, {{bf16, bf16, bf16}, std::nullopt, bf16, 2e-2});
  }
  expect_twin("f64", lnm, lnm_inputs({3, 257, 771}),
              {{DType::f64, DType::f64, DType::f64}, std::nullopt, DType::f64, 1e-12});
}

TEST_F(CudaAdaln, GatedResidualMatchesCpu) {
  const DType f32 = DType::f32, bf16 = DType::bf16, f16 = DType::f16;
  for (const Shape& shape : kShapes) {
    const std::string tag = shape_str(shape);
    const Inputs in = gated_inputs(shape);
    expect_twin("f32 " + tag, gated, in, kF32);
    // As the DiT block runs it: f32 residual, bf16 gate and branch (a linear under autocast).
    expect_twin("bf16 branch " + tag, gated, in, {{f32, bf16, bf16}, bf16, f32, 2e-2});
    expect_twin("f16 branch " + tag, gated, in, {{f32, f32, f16}, std::nullopt, f32, 2e-3});
    expect_twin("bf16 " + tag, gated, in, {{bf16, bf16, bf16}, std::nullopt, bf16, 2e-2});
    // A mix the kernels do not take: y is cast to x's dtype first.
    expect_twin("bf16 x, f32 y " + tag, gated, in, {{bf16, f32, f32}, std::nullopt, bf16, 2e-2});
  }
  expect_twin("f64", gated, gated_inputs({3, 257, 771}),
              {{DType::f64, DType::f64, DType::f64}, std::nullopt, DType::f64, 1e-12});
}

// The residual form of layer_norm_modulate on a block's residual path (gated_residual of its
// residual output and its normed output): the backward kernel adds the residual's gradient.
TEST_F(CudaAdaln, ResidualFormMatchesCpu) {
  const DType f32 = DType::f32, bf16 = DType::bf16;
  const Fn block = [](const Inputs& v) {
    const NormedAndResidual r = layer_norm_modulate_residual(v[0], v[1], v[2], 1e-6);
    return gated_residual(r.residual, v[3], r.normed);
  };
  // {2, 3, 4100}: past the kernels' limit, the composite and x itself.
  for (const Shape& shape : {Shape{2, 256, 768}, Shape{3, 257, 771}, Shape{2, 3, 4100}}) {
    const std::string tag = shape_str(shape);
    Inputs in = lnm_inputs(shape);
    in.push_back(uniform({shape[0], 1, shape[2]}, -1, 1, 37));
    expect_twin("f32 " + tag, block, in, {{f32, f32, f32, f32}, std::nullopt, f32, 2e-5});
    expect_twin("bf16 autocast " + tag, block, in, {{f32, bf16, bf16, bf16}, bf16, f32, 2e-2});
  }
}

TEST_F(CudaAdaln, WidestRowsUnalignedAndRowsPastTheKernelsLimit) {
  // C = 4096 read element by element (x starts 4 bytes past an aligned block): 256 threads a row.
  const Fn unaligned = [](const Inputs& v) {
    const Tensor flat = cat({zeros({1}, v[0].dtype(), v[0].device()), v[0].reshape({-1})});
    return lnm({flat.narrow(0, 1, v[0].numel()).view(v[0].shape()), v[1], v[2]});
  };
  expect_twin("layer_norm_modulate unaligned C=4096", unaligned, lnm_inputs({2, 9, 4096}), kF32);
  // C = 4100 runs the composite on the device.
  expect_twin("layer_norm_modulate C=4100", lnm, lnm_inputs({2, 3, 4100}), kF32);
  expect_twin("gated_residual C=4100", gated, gated_inputs({2, 3, 4100}), kF32);
  const DType f32 = DType::f32, bf16 = DType::bf16;
  expect_twin("layer_norm_modulate C=4100 autocast", lnm, lnm_inputs({2, 3, 4100}),
              {{f32, bf16, bf16}, bf16, bf16, 2e-2});
}

TEST_F(CudaAdaln, GradcheckOnTheDevice) {
  const auto on_gpu = [](Inputs v) {
    for (Tensor& t : v) t = t.to(kGpu);
    return v;
  };
  EXPECT_TRUE(gradcheck(lnm, on_gpu({uniform({3, 5, 7}, -2, 2, 1), uniform({3, 1, 7}, -1, 1, 2),
                                     uniform({3, 7}, -1, 1, 3)})));
  EXPECT_TRUE(gradcheck(gated, on_gpu({uniform({3, 5, 7}, -2, 2, 4), uniform({3, 7}, -1, 1, 5),
                                       uniform({3, 5, 7}, -2, 2, 6)})));
}

TEST_F(CudaAdaln, SumsOverTokensAreBitwiseReproducible) {
  const Inputs in = lnm_inputs({3, 257, 768});
  const auto grads = [&](const Fn& f, const Inputs& inputs) {
    Inputs leaves;
    for (const Tensor& t : inputs) {
      leaves.push_back(t.to(DType::f32).to(kGpu).detach());
      leaves.back().set_requires_grad(true);
    }
    sum(f(leaves) * 0.5).backward();
    Inputs out;
    for (const Tensor& l : leaves) out.push_back(l.grad().to(Device::cpu()));
    return out;
  };
  const Inputs gated_in{in[0], in[1], in[0] * 0.5};
  const Inputs a = grads(lnm, in), b = grads(lnm, in);
  const Inputs ga = grads(gated, gated_in), gb = grads(gated, gated_in);
  for (size_t i = 0; i < in.size(); ++i) {
    EXPECT_TRUE(allclose(a[i], b[i], 0, 0)) << "layer_norm_modulate gradient " << i;
    EXPECT_TRUE(allclose(ga[i], gb[i], 0, 0)) << "gated_residual gradient " << i;
  }
}

}  // namespace loom
