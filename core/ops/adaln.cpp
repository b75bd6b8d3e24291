#include "core/ops/adaln.h"

#include <optional>

#include "core/autocast.h"
#include "core/autograd.h"
#include "core/ops/cuda_util.h"
#include "core/ops/elementwise.h"
#include "core/ops/nn.h"
#include "kernels/cpu/adaln.h"
#include "kernels/cuda/adaln.h"

namespace loom {

namespace {

// The kernels compute in this dtype and keep the modulation vectors, statistics and sums in it.
DType compute_dtype(DType x) {
  return x == DType::f64 ? DType::f64 : DType::f32;
}

// Whether the kernels of x's device take x beside the other activation (y) in dtype `y`.
bool fused_pair(const Tensor& x, DType y) {
  if (y == x.dtype()) return true;
  return x.device().is_cuda() && x.dtype() == DType::f32 && (y == DType::bf16 || y == DType::f16);
}

// Rows longer than the CUDA kernels take run the composite.
bool too_long_for_kernels(const Tensor& x) {
  return x.device().is_cuda() && x.size(2) > kernels::cuda::kAdalnMaxCols;
}

// A modulation vector ([B, 1, C] or [B, C]) as the kernels read it: [B, C], contiguous, in the
// compute dtype of an x of this shape and dtype.
Tensor vector_operand(const Tensor& v, const Shape& x_shape, DType x_dtype) {
  return v.reshape({x_shape[0], x_shape[2]}).to(compute_dtype(x_dtype)).contiguous();
}

// [B, C] as a [B, 1, C] that broadcasts over tokens; [B, 1, C] as it is.
Tensor over_tokens(const Tensor& v) {
  return v.dim() == 2 ? v.unsqueeze(1) : v;
}

// ---- layer_norm_modulate ------------------------------------------------------------------------
// The row statistics stay in the op instead of being outputs: saved outputs would keep y alive.
// With `residual`, x itself is a second output, and the gradient reaching it is added to dx by the
// backward kernel.
class LayerNormModulateOp final : public Op {
 public:
  LayerNormModulateOp(double eps, DType y_dtype, bool residual)
      : eps_(eps), y_dtype_(y_dtype), residual_(residual) {}
  const char* name() const override { return "layer_norm_modulate"; }
  bool saves_input(int index) const override { return index != 1; }  // x and scale
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    const Tensor x = in[0].contiguous();
    const Tensor shift = vector_operand(in[1], x.shape(), x.dtype());
    const Tensor scale = vector_operand(in[2], x.shape(), x.dtype());
    const int64_t B = x.size(0), T = x.size(1), C = x.size(2);
    Tensor y = empty(x.shape(), y_dtype_, x.device());
    mean_ = empty({B * T}, compute_dtype(x.dtype()), x.device());
    rstd_ = empty({B * T}, compute_dtype(x.dtype()), x.device());
    if (x.device().is_cuda()) {
      kernels::cuda::layer_norm_modulate_forward(x.raw_data(), shift.raw_data(), scale.raw_data(),
                                                 y.raw_data(), mean_.raw_data(), rstd_.raw_data(),
                                                 x.dtype(), y_dtype_, B, T, C, eps_);
      return outputs(y, in[0]);
    }
    LOOM_DISPATCH_FLOAT(x.dtype(), name(), [&] {
      kernels::cpu::layer_norm_modulate_forward(
          x.data<scalar_t>(), shift.data<scalar_t>(), scale.data<scalar_t>(), y.data<scalar_t>(),
          mean_.data<scalar_t>(), rstd_.data<scalar_t>(), B, T, C, eps_);
    });
    return outputs(y, in[0]);
  }
  std::vector<Tensor> backward(const SavedContext& ctx, const std::vector<Tensor>& g) override {
    const Tensor x = ctx.inputs[0].contiguous();
    const Tensor scale = vector_operand(ctx.inputs[2], x.shape(), x.dtype());
    const Tensor dy = g[0].to(y_dtype_).contiguous();
    const Tensor dres = residual_ ? g[1].to(x.dtype()).contiguous() : Tensor();
    const void* dres_data = dres.defined() ? dres.raw_data() : nullptr;
    const int64_t B = x.size(0), T = x.size(1), C = x.size(2);
    Tensor dx = empty(x.shape(), x.dtype(), x.device());
    Tensor dshift = empty({B, C}, compute_dtype(x.dtype()), x.device());
    Tensor dscale = empty({B, C}, compute_dtype(x.dtype()), x.device());
    if (x.device().is_cuda()) {
      kernels::cuda::layer_norm_modulate_backward(x.raw_data(), scale.raw_data(), mean_.raw_data(),
                                                  rstd_.raw_data(), dy.raw_data(), dres_data,
                                                  dx.raw_data(), dshift.raw_data(),
                                                  dscale.raw_data(), x.dtype(), y_dtype_, B, T, C);
    } else {
      LOOM_DISPATCH_FLOAT(x.dtype(), name(), [&] {
        kernels::cpu::layer_norm_modulate_backward(
            x.data<scalar_t>(), scale.data<scalar_t>(), mean_.data<scalar_t>(),
            rstd_.data<scalar_t>(), dy.data<scalar_t>(), static_cast<const scalar_t*>(dres_data),
            dx.data<scalar_t>(), dshift.data<scalar_t>(), dscale.data<scalar_t>(), B, T, C);
      });
    }
    return {ctx.needs_grad[0] ? dx : Tensor(),
            ctx.needs_grad[1] ? dshift.reshape(ctx.input_shapes[1]) : Tensor(),
            ctx.needs_grad[2] ? dscale.reshape(ctx.input_shapes[2]) : Tensor()};
  }

 private:
  std::vector<Tensor> outputs(const Tensor& y, const Tensor& x) const {
    return residual_ ? std::vector<Tensor>{y, x} : std::vector<Tensor>{y};
  }

  double eps_;
  DType y_dtype_;
  bool residual_;
  Tensor mean_, rstd_;  // [B * T], compute dtype
};

// ---- gated_residual -----------------------------------------------------------------------------
class GatedResidualOp final : public Op {
 public:
  const char* name() const override { return "gated_residual"; }
  bool saves_input(int index) const override { return index != 0; }  // gate and y
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    const Tensor x = in[0].contiguous(), y = in[2].contiguous();
    const Tensor gate = vector_operand(in[1], x.shape(), x.dtype());
    const int64_t B = x.size(0), T = x.size(1), C = x.size(2);
    Tensor out = empty(x.shape(), x.dtype(), x.device());
    if (x.device().is_cuda()) {
      kernels::cuda::gated_residual_forward(x.raw_data(), gate.raw_data(), y.raw_data(),
                                            out.raw_data(), x.dtype(), y.dtype(), B, T, C);
      return {out};
    }
    LOOM_DISPATCH_FLOAT(x.dtype(), name(), [&] {
      kernels::cpu::gated_residual_forward(x.data<scalar_t>(), gate.data<scalar_t>(),
                                           y.data<scalar_t>(), out.data<scalar_t>(), B, T, C);
    });
    return {out};
  }
  std::vector<Tensor> backward(const SavedContext& ctx, const std::vector<Tensor>& g) override {
    const Tensor dx = ctx.needs_grad[0] ? g[0] : Tensor();
    if (!ctx.needs_grad[1] && !ctx.needs_grad[2]) return {dx, Tensor(), Tensor()};
    const DType x_dtype = ctx.input_dtypes[0];
    const Tensor y = ctx.inputs[2].contiguous(), go = g[0].to(x_dtype).contiguous();
    const Tensor gate = vector_operand(ctx.inputs[1], y.shape(), x_dtype);
    const int64_t B = y.size(0), T = y.size(1), C = y.size(2);
    Tensor dy = empty(y.shape(), y.dtype(), y.device());
    Tensor dgate = empty({B, C}, compute_dtype(x_dtype), y.device());
    if (y.device().is_cuda()) {
      kernels::cuda::gated_residual_backward(gate.raw_data(), y.raw_data(), go.raw_data(),
                                             dy.raw_data(), dgate.raw_data(), x_dtype, y.dtype(), B,
                                             T, C);
    } else {
      LOOM_DISPATCH_FLOAT(x_dtype, name(), [&] {
        kernels::cpu::gated_residual_backward(gate.data<scalar_t>(), y.data<scalar_t>(),
                                              go.data<scalar_t>(), dy.data<scalar_t>(),
                                              dgate.data<scalar_t>(), B, T, C);
      });
    }
    return {dx, ctx.needs_grad[1] ? dgate.reshape(ctx.input_shapes[1]) : Tensor(),
            ctx.needs_grad[2] ? dy : Tensor()};
  }
};

// ---- argument checks ----------------------------------------------------------------------------
void check_activation(const Tensor& t, const char* op, const char* what) {
  LOOM_CHECK(t.dim() == 3, "[", op, "] ", what, " must be [B, T, C], got ", shape_str(t.shape()));
  const bool cuda = t.device().is_cuda();
  const bool ok =
      cuda ? is_floating(t.dtype()) : (t.dtype() == DType::f32 || t.dtype() == DType::f64);
  LOOM_CHECK(ok, "[", op, "] ", what, " must be ", cuda ? "floating" : "f32 or f64", ", got ",
             dtype_name(t.dtype()), " ", shape_str(t.shape()));
}

void check_vector(const Tensor& v, const Tensor& x, const char* op, const char* what) {
  ops::common_device({&v, &x}, op);
  const int64_t B = x.size(0), C = x.size(2);
  const bool ok = v.shape() == Shape{B, 1, C} || v.shape() == Shape{B, C};
  LOOM_CHECK(ok, "[", op, "] ", what, " must be [", B, ", 1, ", C, "] or [", B, ", ", C, "] for x ",
             shape_str(x.shape()), ", got ", shape_str(v.shape()));
  LOOM_CHECK(is_floating(v.dtype()), "[", op, "] ", what, " must be floating, got ",
             dtype_name(v.dtype()));
}

// layer_norm_modulate's output dtype: the autocast dtype for an f32 CUDA x (when the kernels take
// it), x's dtype otherwise.
DType modulated_dtype(const Tensor& x) {
  const std::optional<DType> cast = autocast_dtype();
  return cast && x.device().is_cuda() && x.dtype() == DType::f32 && fused_pair(x, *cast)
             ? *cast
             : x.dtype();
}

// The checks of layer_norm_modulate and its residual form.
void check_layer_norm_modulate(const Tensor& x, const Tensor& shift, const Tensor& scale,
                               double eps, const char* op) {
  check_activation(x, op, "x");
  LOOM_CHECK(x.size(2) > 0, "[", op, "] normalizes the last dim, which must be non-empty; got x ",
             shape_str(x.shape()));
  LOOM_CHECK(eps >= 0, "[", op, "] eps must be >= 0, got ", eps);
  check_vector(shift, x, op, "shift");
  check_vector(scale, x, op, "scale");
}

}  // namespace

Tensor layer_norm_modulate(const Tensor& x, const Tensor& shift, const Tensor& scale, double eps) {
  check_layer_norm_modulate(x, shift, scale, eps, "layer_norm_modulate");
  const DType y_dtype = modulated_dtype(x);
  if (too_long_for_kernels(x))
    return layer_norm_modulate_reference(x, shift, scale, eps).to(y_dtype);
  return apply<LayerNormModulateOp>({x, shift, scale}, eps, y_dtype, false)[0];
}

NormedAndResidual layer_norm_modulate_residual(const Tensor& x, const Tensor& shift,
                                               const Tensor& scale, double eps) {
  check_layer_norm_modulate(x, shift, scale, eps, "layer_norm_modulate_residual");
  const DType y_dtype = modulated_dtype(x);
  if (too_long_for_kernels(x))
    return {layer_norm_modulate_reference(x, shift, scale, eps).to(y_dtype), x};
  const std::vector<Tensor> out = apply<LayerNormModulateOp>({x, shift, scale}, eps, y_dtype, true);
  return {out[0], out[1]};
}

Tensor gated_residual(const Tensor& x, const Tensor& gate, const Tensor& y) {
  const char* op = "gated_residual";
  check_activation(x, op, "x");
  ops::common_device({&x, &y}, op);
  LOOM_CHECK(y.shape() == x.shape() && is_floating(y.dtype()), "[", op,
             "] y must be floating and shaped like x ", shape_str(x.shape()), ", got ",
             dtype_name(y.dtype()), " ", shape_str(y.shape()));
  check_vector(gate, x, op, "gate");
  const Tensor y_in = fused_pair(x, y.dtype()) ? y : y.to(x.dtype());
  if (too_long_for_kernels(x)) return gated_residual_reference(x, gate, y_in).to(x.dtype());
  return apply<GatedResidualOp>({x, gate, y_in})[0];
}

Tensor layer_norm_modulate_reference(const Tensor& x, const Tensor& shift, const Tensor& scale,
                                     double eps) {
  return layer_norm(x, Tensor(), Tensor(), eps) * (over_tokens(scale) + 1.0) + over_tokens(shift);
}

Tensor gated_residual_reference(const Tensor& x, const Tensor& gate, const Tensor& y) {
  return x + over_tokens(gate) * y;
}

}  // namespace loom
