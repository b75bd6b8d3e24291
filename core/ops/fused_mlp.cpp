#include "core/ops/fused_mlp.h"

#include <tuple>

#include "core/autocast.h"
#include "core/autograd.h"
#include "core/ops/cuda_gemm.h"
#include "core/ops/elementwise.h"
#include "core/ops/linalg.h"
#include "kernels/cuda/kernels.h"

namespace loom {

namespace {

// Inputs: x [M, K], w1 [H, K], b1 [H], w2 [N, H], b2 [N], one 16-bit dtype, on one CUDA device.
class GeluMlpOp final : public Op {
 public:
  const char* name() const override { return "gelu_mlp"; }
  bool saves_input(int index) const override { return index == 0 || index == 1 || index == 3; }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    const Tensor &x = in[0], &w1 = in[1], &b1 = in[2], &w2 = in[3], &b2 = in[4];
    pre_ = empty({x.size(0), w1.size(0)}, x.dtype(), x.device());
    hidden_ = ops::cuda_product(x, w1.t(), {.bias = b1.raw_data(), .gelu_input = pre_.raw_data()});
    return {ops::cuda_product(hidden_, w2.t(), {.bias = b2.raw_data()})};
  }
  std::vector<Tensor> backward(const SavedContext& ctx, const std::vector<Tensor>& g) override {
    const Tensor &x = ctx.inputs[0], &w1 = ctx.inputs[1], &w2 = ctx.inputs[3];
    const Tensor dy = g[0].contiguous();
    const auto& needs = ctx.needs_grad;
    Tensor dx, dw1, db1, dw2, db2;
    if (needs[3] || needs[4]) std::tie(dw2, db2) = ops::weight_and_bias_grad(dy, hidden_);
    if (needs[0] || needs[1] || needs[2]) {
      // The GELU gradient and its column sums (fc1's bias gradient) in one pass, so fc1's weight
      // gradient is a plain GEMM.
      const Tensor dh = matmul(dy, w2);  // fresh, contiguous and aligned, as the kernel needs
      Tensor dpre = empty(pre_.shape(), pre_.dtype(), pre_.device());
      db1 = empty({pre_.size(1)}, pre_.dtype(), pre_.device());
      kernels::cuda::gelu_tanh_grad_col_sums(pre_.raw_data(), dh.raw_data(), dpre.raw_data(),
                                             db1.raw_data(), pre_.dtype(), pre_.size(0),
                                             pre_.size(1));
      if (needs[1]) dw1 = ops::cuda_product(dpre.t(), x, {});
      if (needs[0]) dx = matmul(dpre, w1);
    }
    return {dx, needs[1] ? dw1 : Tensor(), needs[2] ? db1 : Tensor(), needs[3] ? dw2 : Tensor(),
            needs[4] ? db2 : Tensor()};
  }

 private:
  Tensor pre_, hidden_;  // linear(x, w1, b1) and its GELU
};

bool fused_applies(const Tensor& x, const Tensor& w1, const Tensor& b1, const Tensor& w2,
                   const Tensor& b2) {
  const DType t = x.dtype();
  if (!x.device().is_cuda() || (t != DType::bf16 && t != DType::f16) || !b1.defined() ||
      !b2.defined())
    return false;
  for (const Tensor* p : {&w1, &b1, &w2, &b2})
    if (p->dtype() != t || p->device() != x.device()) return false;
  return b1.is_contiguous() && b2.is_contiguous() && w1.size(1) % 8 == 0 && w1.size(0) % 8 == 0 &&
         w2.size(0) % 8 == 0;
}

}  // namespace

Tensor gelu_mlp(const Tensor& x, const Tensor& w1, const Tensor& b1, const Tensor& w2,
                const Tensor& b2) {
  LOOM_CHECK(w1.dim() == 2 && w2.dim() == 2 && w2.size(1) == w1.size(0), "[gelu_mlp] weights ",
             shape_str(w1.shape()), " and ", shape_str(w2.shape()), " do not chain");
  LOOM_CHECK(x.dim() >= 1 && x.shape().back() == w1.size(1), "[gelu_mlp] input ",
             shape_str(x.shape()), " does not match weight ", shape_str(w1.shape()));
  const Tensor xc = autocast(x), w1c = autocast(w1), b1c = autocast(b1), w2c = autocast(w2),
               b2c = autocast(b2);
  // linear casts under autocast too; handing it the cast operands keeps it from casting again.
  if (!fused_applies(xc, w1c, b1c, w2c, b2c))
    return linear(gelu_tanh(linear(xc, w1c, b1c)), w2c, b2c);
  Shape out_shape = x.shape();
  out_shape.back() = w2.size(0);
  return apply<GeluMlpOp>({xc.reshape({-1, w1.size(1)}), w1c, b1c, w2c, b2c})[0].reshape(out_shape);
}

}  // namespace loom
