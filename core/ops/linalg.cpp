#include "core/ops/linalg.h"

#include "core/autocast.h"
#include "core/autograd.h"
#include "core/ops/cuda_gemm.h"
#include "core/ops/elementwise.h"
#include "core/ops/reduce.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/cuda/kernels.h"

namespace loom {

namespace {

using ops::as_gemm_operand;
using ops::cuda_gemm_of;
using ops::GemmOperand;

bool g_allow_tf32 = false;

// The CUDA GEMM over a broadcast batch: one strided-batched cuBLASLt call over the innermost
// batch dim (all of the batch when it collapses to one stride), looped over the outer ones.
void cuda_gemm(const GemmOperand& ga, const GemmOperand& gb, const Tensor& out, const Shape& batch,
               const Strides& bsa, const Strides& bsb, int64_t m, int64_t n, int64_t k) {
  // Collapse batch dims from the innermost outwards while both operands step uniformly.
  const int64_t nd = int64_t(batch.size());
  int64_t inner = nd > 0 ? batch[nd - 1] : 1, first_outer = nd - 1;
  while (first_outer > 0) {
    const int64_t d = first_outer - 1;
    if (bsa[d] != bsa[d + 1] * batch[d + 1] || bsb[d] != bsb[d + 1] * batch[d + 1]) break;
    inner *= batch[d];
    first_outer = d;
  }
  if (nd == 0) first_outer = 0;
  kernels::cuda::Gemm g = cuda_gemm_of(ga, gb, m, n, k);
  g.batch = inner;
  g.stride_a = nd > 0 ? bsa[nd - 1] : 0;
  g.stride_b = nd > 0 ? bsb[nd - 1] : 0;
  g.stride_c = m * n;
  int64_t outer = 1;
  for (int64_t d = 0; d < first_outer; ++d) outer *= batch[d];
  const int64_t es = int64_t(dtype_size(out.dtype()));
  for (int64_t o = 0; o < outer; ++o) {
    int64_t off_a = 0, off_b = 0, rem = o;
    for (int64_t d = first_outer - 1; d >= 0; --d) {
      const int64_t idx = rem % batch[d];
      rem /= batch[d];
      off_a += idx * bsa[d];
      off_b += idx * bsb[d];
    }
    kernels::cuda::gemm(g, static_cast<const char*>(ga.t.raw_data()) + off_a * es,
                        static_cast<const char*>(gb.t.raw_data()) + off_b * es,
                        static_cast<char*>(out.raw_data()) + o * inner * m * n * es, out.dtype(),
                        g_allow_tf32);
  }
}

class MatmulOp final : public Op {
 public:
  const char* name() const override { return "matmul"; }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    const Tensor &a = in[0], &b = in[1];
    const int64_t m = a.shape()[a.dim() - 2], k = a.shape()[a.dim() - 1];
    const int64_t n = b.shape()[b.dim() - 1];
    const Shape batch_a(a.shape().begin(), a.shape().end() - 2);
    const Shape batch_b(b.shape().begin(), b.shape().end() - 2);
    const Shape batch = broadcast_shapes(batch_a, batch_b, "matmul");
    Shape ea = batch, eb = batch, out_shape = batch;
    ea.insert(ea.end(), {m, k});
    eb.insert(eb.end(), {k, n});
    out_shape.insert(out_shape.end(), {m, n});
    const GemmOperand ga = as_gemm_operand(a.expand(ea));
    const GemmOperand gb = as_gemm_operand(b.expand(eb));
    Tensor out = empty(out_shape, a.dtype(), a.device());
    const int64_t nb = numel_of(batch);
    const Strides bsa = broadcast_strides(ga.t.shape(), ga.t.strides(), ea);
    const Strides bsb = broadcast_strides(gb.t.shape(), gb.t.strides(), eb);
    kernels::cpu::GemmParams p{.trans_a = ga.trans,
                               .trans_b = gb.trans,
                               .m = m,
                               .n = n,
                               .k = k,
                               .lda = ga.ld,
                               .ldb = gb.ld,
                               .ldc = std::max<int64_t>(n, 1)};
    if (a.device().is_cuda()) {
      cuda_gemm(ga, gb, out, batch, bsa, bsb, m, n, k);
      return {out};
    }
    LOOM_DISPATCH_FLOAT(a.dtype(), "matmul", [&] {
      const scalar_t* pa = ga.t.data<scalar_t>();
      const scalar_t* pb = gb.t.data<scalar_t>();
      scalar_t* pc = out.data<scalar_t>();
      if (k == 0) {
        std::fill(pc, pc + out.numel(), scalar_t(0));
        return;
      }
      // Small products of a batch run side by side on the pool (each one single-threaded); a
      // large one splits itself (kernels/cpu/gemm.h).
      const int64_t grain =
          std::max<int64_t>(1, kernels::cpu::kGemmSplitMacs / std::max<int64_t>(1, m * n * k));
      kernels::cpu::parallel_for(0, nb, grain, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          int64_t off_a = 0, off_b = 0, rem = i;
          for (int64_t d = int64_t(batch.size()) - 1; d >= 0; --d) {
            const int64_t idx = rem % batch[d];
            rem /= batch[d];
            off_a += idx * bsa[d];
            off_b += idx * bsb[d];
          }
          kernels::cpu::gemm(p, pa + off_a, pb + off_b, pc + i * m * n);
        }
      });
    });
    return {out};
  }
  std::vector<Tensor> backward(const SavedContext& ctx, const std::vector<Tensor>& g) override {
    const Tensor &a = ctx.inputs[0], &b = ctx.inputs[1];
    return {ctx.needs_grad[0] ? sum_to_shape(matmul(g[0], b.t()), a.shape()) : Tensor(),
            ctx.needs_grad[1] ? sum_to_shape(matmul(a.t(), g[0]), b.shape()) : Tensor()};
  }
};

// x [M, K] times weight [N, K] transposed plus bias [N], the bias added in the GEMM's epilogue
// (CUDA only: one cuBLASLt call instead of a GEMM and a broadcast add over the whole output); in
// backward, for 16-bit operands, the bias gradient comes from the weight-gradient GEMM's epilogue.
class LinearBiasOp final : public Op {
 public:
  const char* name() const override { return "linear_bias"; }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    return {ops::cuda_product(in[0], in[1].t(), {.bias = in[2].raw_data()})};
  }
  std::vector<Tensor> backward(const SavedContext& ctx, const std::vector<Tensor>& g) override {
    const Tensor &x = ctx.inputs[0], &w = ctx.inputs[1], &dy = g[0];
    const Tensor dx = ctx.needs_grad[0] ? matmul(dy, w) : Tensor();
    if (ctx.needs_grad[1] && ctx.needs_grad[2]) {
      auto [dw, db] = ops::weight_and_bias_grad(dy, x);
      return {dx, dw, db};
    }
    return {dx, ctx.needs_grad[1] ? matmul(dy.t(), x) : Tensor(),
            ctx.needs_grad[2] ? sum(dy, {0}) : Tensor()};
  }
};

// Whether linear(x, weight, bias) (operands already autocast) can take LinearBiasOp: CUDA, one
// 16- or 32-bit float dtype, a contiguous bias on a 16-byte boundary (the epilogue reads it in
// vectors).
bool fused_bias_applies(const Tensor& x, const Tensor& w, const Tensor& bias) {
  const DType t = x.dtype();
  return x.device().is_cuda() && (t == DType::bf16 || t == DType::f16 || t == DType::f32) &&
         w.dtype() == t && bias.dtype() == t && w.device() == x.device() &&
         bias.device() == x.device() && bias.is_contiguous() &&
         reinterpret_cast<uintptr_t>(bias.raw_data()) % 16 == 0;
}

}  // namespace

void set_matmul_allow_tf32(bool allow) {
  g_allow_tf32 = allow;
}
bool matmul_allow_tf32() {
  return g_allow_tf32;
}

Tensor matmul(const Tensor& a_cast, const Tensor& b_cast) {
  const Tensor a_in = autocast(a_cast), b_in = autocast(b_cast);
  LOOM_CHECK(a_in.dim() >= 1 && b_in.dim() >= 1, "[matmul] operands must have at least 1 dim, got ",
             shape_str(a_in.shape()), " and ", shape_str(b_in.shape()));
  LOOM_CHECK(a_in.dtype() == b_in.dtype(), "[matmul] dtypes differ: ", dtype_name(a_in.dtype()),
             " and ", dtype_name(b_in.dtype()));
  LOOM_CHECK(a_in.device() == b_in.device(), "[matmul] operands on different devices: ",
             a_in.device().str(), " and ", b_in.device().str());
  // [.., M, K] @ [K, N]: fold the batch into M so one GEMM covers it.
  if (a_in.dim() > 2 && b_in.dim() == 2 && a_in.shape().back() == b_in.shape()[0]) {
    Shape out_shape = a_in.shape();
    out_shape.back() = b_in.shape()[1];
    return matmul(a_in.reshape({-1, a_in.shape().back()}), b_in).reshape(out_shape);
  }
  const Tensor a = a_in.dim() == 1 ? a_in.unsqueeze(0) : a_in;
  const Tensor b = b_in.dim() == 1 ? b_in.unsqueeze(1) : b_in;
  LOOM_CHECK(a.shape().back() == b.shape()[b.dim() - 2], "[matmul] shapes ",
             shape_str(a_in.shape()), " and ", shape_str(b_in.shape()),
             " cannot be multiplied (inner dims ", a.shape().back(), " vs ", b.shape()[b.dim() - 2],
             ")");
  Tensor out = apply<MatmulOp>({a, b})[0];
  if (b_in.dim() == 1) out = out.squeeze(-1);
  if (a_in.dim() == 1) out = out.squeeze(b_in.dim() == 1 ? -1 : -2);
  return out;
}

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  LOOM_CHECK(weight.dim() == 2, "[linear] weight must be [out, in], got ",
             shape_str(weight.shape()));
  LOOM_CHECK(x.dim() >= 1 && x.shape().back() == weight.shape()[1], "[linear] input ",
             shape_str(x.shape()), " does not match weight ", shape_str(weight.shape()));
  if (bias.defined()) {
    LOOM_CHECK(bias.dim() == 1 && bias.shape()[0] == weight.shape()[0], "[linear] bias ",
               shape_str(bias.shape()), " does not match weight ", shape_str(weight.shape()));
    const Tensor xc = autocast(x), wc = autocast(weight), bc = autocast(bias);
    if (fused_bias_applies(xc, wc, bc)) {
      Shape out_shape = x.shape();
      out_shape.back() = weight.shape()[0];
      return apply<LinearBiasOp>({xc.reshape({-1, x.shape().back()}), wc, bc})[0].reshape(
          out_shape);
    }
    // Under autocast the bias joins the bf16 product, which stays bf16.
    return matmul(xc, wc.t()) + bc;
  }
  return matmul(x, weight.t());
}

}  // namespace loom
