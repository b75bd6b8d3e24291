// The fused adaLN ops (core/ops/adaln.h) on the CPU: forward against their composites (f32 close,
// f64 to the last bits), gradients against the composites' and against finite differences on
// awkward sizes, the DiT block's strided modulation chunks, thread-count independence, errors.
#include "kernels/cpu/thread_pool.h"
#include "testing.h"

namespace loom {
namespace {

using testing::allclose;
using testing::gradcheck;
using testing::uniform;

using Inputs = std::vector<Tensor>;
using Fn = std::function<Tensor(const Inputs&)>;

// [B, T, C] = [3, 5, 7]: nothing is a multiple of anything.
const Shape kX{3, 5, 7}, kVec{3, 1, 7};

Tensor lnm(const Inputs& v) {
  return layer_norm_modulate(v[0], v[1], v[2], 1e-5);
}
Tensor lnm_reference(const Inputs& v) {
  return layer_norm_modulate_reference(v[0], v[1], v[2], 1e-5);
}
Tensor gated(const Inputs& v) {
  return gated_residual(v[0], v[1], v[2]);
}
// A block's residual path {x, shift, scale, gate}: the residual form against both composites.
Tensor residual_block(const Inputs& v) {
  const NormedAndResidual r = layer_norm_modulate_residual(v[0], v[1], v[2], 1e-5);
  return gated_residual(r.residual, v[3], r.normed);
}
Tensor residual_block_reference(const Inputs& v) {
  return gated_residual_reference(v[0], v[3],
                                  layer_norm_modulate_reference(v[0], v[1], v[2], 1e-5));
}
Tensor gated_reference(const Inputs& v) {
  return gated_residual_reference(v[0], v[1], v[2]);
}

// x [B, T, C] with an offset, then two [B, 1, C] (or [B, C]) vectors; values in (-2, 2).
Inputs lnm_inputs(DType dtype, const Shape& vec = kVec) {
  return {uniform(kX, -2, 2, 1, dtype) + 0.5, uniform(vec, -2, 2, 2, dtype),
          uniform(vec, -2, 2, 3, dtype)};
}
Inputs gated_inputs(DType dtype, const Shape& vec = kVec) {
  return {uniform(kX, -2, 2, 4, dtype), uniform(vec, -2, 2, 5, dtype),
          uniform(kX, -2, 2, 6, dtype)};
}

// Gradients of sum(f(inputs) * w) for every input.
Inputs grads_of(const Fn& f, const Inputs& inputs) {
  Inputs leaves;
  for (const Tensor& t : inputs) {
    Tensor l = t.detach().clone();
    l.set_requires_grad(true);
    leaves.push_back(l);
  }
  const Tensor y = f(leaves);
  sum(y * uniform(y.shape(), 0.5, 1.5, 9, y.dtype())).backward();
  Inputs grads;
  for (const Tensor& l : leaves) grads.push_back(l.grad());
  return grads;
}

// The fused op and its composite agree in forward and in every gradient.
void expect_matches_reference(const Fn& fused, const Fn& reference, const Inputs& inputs,
                              double atol, double rtol) {
  EXPECT_TRUE(allclose(fused(inputs), reference(inputs), atol, rtol)) << "forward";
  const Inputs gf = grads_of(fused, inputs), gr = grads_of(reference, inputs);
  for (size_t i = 0; i < inputs.size(); ++i) {
    ASSERT_EQ(gf[i].dtype(), inputs[i].dtype()) << "gradient " << i;
    EXPECT_TRUE(allclose(gf[i], gr[i], atol, rtol)) << "gradient " << i;
  }
}

}  // namespace

TEST(LayerNormModulate, MatchesCompositeInF32) {
  expect_matches_reference(lnm, lnm_reference, lnm_inputs(DType::f32), 1e-6, 1e-6);
}

TEST(LayerNormModulate, MatchesCompositeInF64) {
  const Inputs in = lnm_inputs(DType::f64);
  // Same operations in the same order: the forward is bitwise the composite's.
  EXPECT_TRUE(allclose(lnm(in), lnm_reference(in), 0, 0));
  expect_matches_reference(lnm, lnm_reference, in, 1e-14, 1e-13);
}

TEST(LayerNormModulate, ResidualFormAddsTheResidualsGradient) {
  for (DType dtype : {DType::f64, DType::f32}) {
    Inputs in = lnm_inputs(dtype);
    in.push_back(uniform(kVec, -2, 2, 4, dtype));
    const double tol = dtype == DType::f64 ? 1e-13 : 1e-6;
    expect_matches_reference(residual_block, residual_block_reference, in, tol, tol);
    if (dtype == DType::f64) EXPECT_TRUE(gradcheck(residual_block, in));
    const NormedAndResidual r = layer_norm_modulate_residual(in[0], in[1], in[2]);
    EXPECT_EQ(r.residual.raw_data(), in[0].raw_data()) << "the residual is x, not a copy";
    EXPECT_TRUE(allclose(r.normed, layer_norm_modulate(in[0], in[1], in[2]), 0, 0));
  }
}

TEST(LayerNormModulate, AcceptsBatchByChannelVectors) {
  const Inputs in = lnm_inputs(DType::f64, {3, 7});
  expect_matches_reference(lnm, lnm_reference, in, 1e-14, 1e-13);
  EXPECT_EQ(grads_of(lnm, in)[1].shape(), (Shape{3, 7}));
}

TEST(LayerNormModulate, GradcheckEveryInput) {
  EXPECT_TRUE(gradcheck(lnm, lnm_inputs(DType::f64)));
  EXPECT_TRUE(gradcheck(lnm, lnm_inputs(DType::f64, {3, 7})));
}

TEST(LayerNormModulate, GradcheckOnTheBlocksStridedChunksAndATransposedX) {
  // As in DiTBlock::forward: shift and scale are chunks of one [B, 1, 2C] adaLN output, and x
  // arrives non-contiguous.
  const Fn f = [](const Inputs& v) {
    const std::vector<Tensor> m = chunk(v[1].unsqueeze(1), 2, 2);
    return layer_norm_modulate(v[0].transpose(0, 1), m[0], m[1], 1e-6);
  };
  EXPECT_TRUE(gradcheck(f, {uniform({5, 3, 7}, -2, 2, 7), uniform({3, 14}, -1, 1, 8)}));
}

TEST(LayerNormModulate, OneTokenAndOneChannel) {
  // C = 1 normalizes every row to 0 (y = shift); T = 1 leaves one token to sum over.
  const Inputs in{uniform({2, 1, 1}, -1, 1, 1), uniform({2, 1, 1}, -1, 1, 2),
                  uniform({2, 1, 1}, -1, 1, 3)};
  expect_matches_reference(lnm, lnm_reference, in, 1e-14, 1e-13);
  EXPECT_TRUE(gradcheck(
      lnm, {uniform({2, 1, 6}, -1, 1, 4), uniform({2, 6}, -1, 1, 5), uniform({2, 6}, -1, 1, 6)}));
}

TEST(LayerNormModulate, StaysInF32OnTheCpuUnderAutocast) {
  const AutocastGuard autocast(DType::bf16);
  EXPECT_EQ(lnm(lnm_inputs(DType::f32)).dtype(), DType::f32);
}

TEST(LayerNormModulate, ModulationVectorsOfAnotherDtypeGetGradientsInTheirDtype) {
  // bf16 vectors (an adaLN linear under autocast) are read in the compute dtype.
  Inputs in = lnm_inputs(DType::f32);
  in[1] = in[1].to(DType::bf16);
  in[2] = in[2].to(DType::bf16);
  const Inputs g = grads_of(lnm, in);
  EXPECT_EQ(g[1].dtype(), DType::bf16);
  EXPECT_EQ(g[2].dtype(), DType::bf16);
  const Inputs promoted{in[0], in[1].to(DType::f32), in[2].to(DType::f32)};
  EXPECT_TRUE(allclose(lnm(in), lnm_reference(promoted), 1e-6, 1e-6));
}

TEST(GatedResidual, MatchesCompositeInF32AndF64) {
  expect_matches_reference(gated, gated_reference, gated_inputs(DType::f32), 1e-6, 1e-6);
  const Inputs in = gated_inputs(DType::f64);
  EXPECT_TRUE(allclose(gated(in), gated_reference(in), 0, 0));
  expect_matches_reference(gated, gated_reference, in, 1e-14, 1e-13);
  expect_matches_reference(gated, gated_reference, gated_inputs(DType::f64, {3, 7}), 1e-14, 1e-13);
}

TEST(GatedResidual, GradcheckEveryInput) {
  EXPECT_TRUE(gradcheck(gated, gated_inputs(DType::f64)));
  EXPECT_TRUE(gradcheck(gated, gated_inputs(DType::f64, {3, 7})));
}

TEST(GatedResidual, PassesTheOutputGradientToX) {
  const Inputs in = gated_inputs(DType::f64);
  const Inputs g = grads_of(gated, in);
  EXPECT_TRUE(allclose(g[0], uniform(kX, 0.5, 1.5, 9), 0, 0));
}

TEST(GatedResidual, CastsAnotherDtypeOfYOnTheCpu) {
  Inputs in = gated_inputs(DType::f32);
  in[2] = in[2].to(DType::bf16);
  const Inputs g = grads_of(gated, in);
  EXPECT_EQ(gated(in).dtype(), DType::f32);
  EXPECT_EQ(g[2].dtype(), DType::bf16);
}

TEST(Adaln, SumsOverTokensDoNotDependOnTheThreadCount) {
  const Inputs in{uniform({4, 33, 300}, -2, 2, 1, DType::f32),
                  uniform({4, 300}, -1, 1, 2, DType::f32), uniform({4, 300}, -1, 1, 3, DType::f32)};
  const int threads = kernels::cpu::num_threads();
  kernels::cpu::set_num_threads(1);
  const Inputs one = grads_of(lnm, in), one_gated = grads_of(gated, {in[0], in[1], in[0]});
  kernels::cpu::set_num_threads(3);
  const Inputs three = grads_of(lnm, in), three_gated = grads_of(gated, {in[0], in[1], in[0]});
  kernels::cpu::set_num_threads(threads);
  for (size_t i = 0; i < in.size(); ++i) {
    EXPECT_TRUE(allclose(one[i], three[i], 0, 0)) << "layer_norm_modulate gradient " << i;
    EXPECT_TRUE(allclose(one_gated[i], three_gated[i], 0, 0)) << "gated_residual gradient " << i;
  }
}

TEST(Adaln, BadArgumentsNameTheOpAndShapes) {
  const Tensor x = uniform(kX), v = uniform(kVec);
  testing::expect_error(
      [&] {
        layer_norm_modulate(x.reshape({15, 7}), v, v);
      },
      {"[layer_norm_modulate]", "[B, T, C]", "[15, 7]"});
  testing::expect_error(
      [&] {
        layer_norm_modulate(x, uniform({3, 1, 6}), v);
      },
      {"[layer_norm_modulate]", "shift", "[3, 1, 7] or [3, 7]", "[3, 1, 6]"});
  testing::expect_error(
      [&] {
        layer_norm_modulate(x, v, uniform({1, 1, 7}));
      },
      {"[layer_norm_modulate]", "scale", "[1, 1, 7]"});
  testing::expect_error([&] { layer_norm_modulate(x, v, v, -1); }, {"eps"});
  testing::expect_error([&] { layer_norm_modulate(x.to(DType::bf16), v, v); },
                        {"[layer_norm_modulate]", "f32 or f64", "bf16"});
  testing::expect_error(
      [&] {
        gated_residual(x, v, uniform({3, 5, 6}));
      },
      {"[gated_residual]", "y", "[3, 5, 6]"});
  testing::expect_error(
      [&] {
        gated_residual(x, uniform({3, 5, 7}), x);
      },
      {"[gated_residual]", "gate", "[3, 5, 7]"});
}

}  // namespace loom
