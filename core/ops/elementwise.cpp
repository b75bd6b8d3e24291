#include "core/ops/elementwise.h"

#include <cmath>

#include "core/autograd.h"
#include "core/ops/cuda_util.h"
#include "core/ops/op_util.h"
#include "core/ops/reduce.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cuda/kernels.h"
#include "kernels/scalar_fns.h"

namespace loom {

namespace {

using ops::dispatch_arith;

void check_same_dtype(const Tensor& a, const Tensor& b, const char* op) {
  LOOM_CHECK(a.dtype() == b.dtype(), "[", op, "] dtypes differ: ", dtype_name(a.dtype()), " ",
             shape_str(a.shape()), " and ", dtype_name(b.dtype()), " ", shape_str(b.shape()),
             "; cast one with to()");
}

// Rank of a floating dtype for promotion: bf16/f16 < f32 < f64.
int float_rank(DType t) {
  return t == DType::f64 ? 2 : (t == DType::f32 ? 1 : 0);
}

// Mixed floating operands (a bf16 activation and an f32 residual under autocast) promote to the
// wider dtype by a differentiable cast of the narrower one. A host scalar beside a CPU tensor takes
// the tensor's dtype; beside a CUDA tensor it stays as it is (the kernel reads it as a double, so
// `bf16_x * 0.1` multiplies by 0.1, not by 0.1 rounded to bf16). Other mixes are refused.
std::pair<Tensor, Tensor> promote(const Tensor& a, const Tensor& b, const char* op) {
  if (a.dtype() == b.dtype()) return {a, b};
  if (ops::is_host_scalar(b) && !ops::is_host_scalar(a))
    return {a, a.device().is_cuda() ? b : b.to(a.dtype())};
  if (ops::is_host_scalar(a) && !ops::is_host_scalar(b))
    return {b.device().is_cuda() ? a : a.to(b.dtype()), b};
  if (is_floating(a.dtype()) && is_floating(b.dtype()) && a.dtype() != b.dtype() &&
      float_rank(a.dtype()) != float_rank(b.dtype())) {
    return float_rank(a.dtype()) > float_rank(b.dtype()) ? std::pair{a, b.to(a.dtype())}
                                                          : std::pair{a.to(b.dtype()), b};
  }
  check_same_dtype(a, b, op);
  return {a, b};
}

// The CUDA twin of broadcast_map: out (new, contiguous, `out_dtype`) = F::f(a, b) over `shape`.
template <class F>
Tensor cuda_binary(const Tensor& a, const Tensor& b, const Shape& shape, DType out_dtype,
                   Device device, const char* op) {
  Tensor out = empty(shape, out_dtype, device);
  kernels::cuda::binary<F>(ops::iter_shape(shape, op), ops::operand(a, shape),
                           ops::operand(b, shape), ops::operand(out, shape));
  return out;
}

// Runs f(a, b) -> O over the broadcast shape into a new contiguous tensor of dtype `out_dtype`.
template <class O, class T, class F>
Tensor broadcast_map(const Tensor& a, const Tensor& b, const Shape& out_shape, DType out_dtype,
                     F f) {
  Tensor out = empty(out_shape, out_dtype, a.device());
  const Strides sa = broadcast_strides(a.shape(), a.strides(), out_shape);
  const Strides sb = broadcast_strides(b.shape(), b.strides(), out_shape);
  kernels::cpu::map_binary(int(out_shape.size()), out_shape.data(), a.data<T>(), sa.data(),
                           b.data<T>(), sb.data(), out.data<O>(), out.strides().data(), f);
  return out;
}

// ---- binary arithmetic: one struct per op holds its scalar function and its gradient ----------
struct Grads2 {
  Tensor a, b;
};

struct AddFn {
  static constexpr const char* name = "add";
  static constexpr bool saves_inputs = false, float_only = false;
  using Scalar = kernels::fn::Add;
  static Grads2 grad(const Tensor&, const Tensor&, const Tensor& g) { return {g, g}; }
};
struct SubFn {
  static constexpr const char* name = "sub";
  static constexpr bool saves_inputs = false, float_only = false;
  using Scalar = kernels::fn::Sub;
  static Grads2 grad(const Tensor&, const Tensor&, const Tensor& g) { return {g, neg(g)}; }
};
struct MulFn {
  static constexpr const char* name = "mul";
  static constexpr bool saves_inputs = true, float_only = false;
  using Scalar = kernels::fn::Mul;
  static Grads2 grad(const Tensor& a, const Tensor& b, const Tensor& g) { return {g * b, g * a}; }
};
struct DivFn {
  static constexpr const char* name = "div";
  static constexpr bool saves_inputs = true, float_only = false;
  using Scalar = kernels::fn::Div;
  static Grads2 grad(const Tensor& a, const Tensor& b, const Tensor& g) {
    const Tensor ga = g / b;
    return {ga, neg(ga * a / b)};
  }
};
struct PowFn {
  static constexpr const char* name = "pow";
  static constexpr bool saves_inputs = true, float_only = true;
  using Scalar = kernels::fn::Pow;
  static Grads2 grad(const Tensor& a, const Tensor& b, const Tensor& g) {
    return {g * b * pow(a, b - 1.0), g * pow(a, b) * log(a)};
  }
};
struct MaximumFn {
  static constexpr const char* name = "maximum";
  static constexpr bool saves_inputs = true, float_only = false;
  using Scalar = kernels::fn::Maximum;
  static Grads2 grad(const Tensor& a, const Tensor& b, const Tensor& g) {
    const Tensor pick_a = ge(a, b), z = zeros_like(g);
    return {where(pick_a, g, z), where(pick_a, z, g)};
  }
};
struct MinimumFn {
  static constexpr const char* name = "minimum";
  static constexpr bool saves_inputs = true, float_only = false;
  using Scalar = kernels::fn::Minimum;
  static Grads2 grad(const Tensor& a, const Tensor& b, const Tensor& g) {
    const Tensor pick_a = le(a, b), z = zeros_like(g);
    return {where(pick_a, g, z), where(pick_a, z, g)};
  }
};

// Fused activation gradients (the backward of GeluTanhFn / SiluFn): one pass over x and g.
// Their own gradient (a second derivative) is not implemented.
template <class S>
struct ActivationGradFn {
  static constexpr bool saves_inputs = false, float_only = true;
  using Scalar = S;
  static Grads2 grad(const Tensor&, const Tensor&, const Tensor&) {
    LOOM_FAIL("[activation_grad] second derivatives of gelu_tanh and silu are not supported");
  }
};
struct GeluTanhGradFn : ActivationGradFn<kernels::fn::GeluTanhGrad> {
  static constexpr const char* name = "gelu_tanh_grad";
};
struct SiluGradFn : ActivationGradFn<kernels::fn::SiluGrad> {
  static constexpr const char* name = "silu_grad";
};

template <class Fn>
class BinaryOp final : public Op {
 public:
  const char* name() const override { return Fn::name; }
  bool saves_inputs() const override { return Fn::saves_inputs; }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    const Tensor &a = in[0], &b = in[1];
    const Shape shape = broadcast_shapes(a.shape(), b.shape(), Fn::name);
    const Device device = ops::common_device({&a, &b}, Fn::name);
    if (device.is_cuda()) {
      const DType out_dtype = ops::is_host_scalar(a) ? b.dtype() : a.dtype();
      return {cuda_binary<typename Fn::Scalar>(a, b, shape, out_dtype, device, Fn::name)};
    }
    Tensor out;
    dispatch_arith(a.dtype(), Fn::float_only, Fn::name, [&](auto tag) {
      using T = decltype(tag);
      out = broadcast_map<T, T>(a, b, shape, a.dtype(),
                                [](T x, T y) { return Fn::Scalar::f(x, y); });
    });
    return {out};
  }
  std::vector<Tensor> backward(const SavedContext& ctx, const std::vector<Tensor>& g) override {
    Grads2 gr = Fn::grad(ctx.inputs[0], ctx.inputs[1], g[0]);
    return {ctx.needs_grad[0] ? sum_to_shape(gr.a, ctx.input_shapes[0]) : Tensor(),
            ctx.needs_grad[1] ? sum_to_shape(gr.b, ctx.input_shapes[1]) : Tensor()};
  }
};

template <class Fn>
Tensor binary(const Tensor& a_in, const Tensor& b_in) {
  ops::common_device({&a_in, &b_in}, Fn::name);
  const auto [a, b] = promote(a_in, b_in, Fn::name);
  return apply<BinaryOp<Fn>>({a, b})[0];
}

// ---- comparisons ------------------------------------------------------------------------------
template <class F>
Tensor compare(const Tensor& a_in, const Tensor& b_in, const char* name) {
  const Device device = ops::common_device({&a_in, &b_in}, name);
  const auto [a, b] = promote(a_in, b_in, name);
  const Shape shape = broadcast_shapes(a.shape(), b.shape(), name);
  if (device.is_cuda()) return cuda_binary<F>(a, b, shape, DType::boolean, device, name);
  Tensor out;
  LOOM_DISPATCH_ALL(a.dtype(), name, [&] {
    out = broadcast_map<bool, scalar_t>(a, b, shape, DType::boolean,
                                        [](scalar_t x, scalar_t y) { return F::f(x, y); });
  });
  return out;
}

// A host scalar of t's dtype: CUDA kernels take it as an argument, so no device memory is touched.
Tensor scalar_like(const Tensor& t, double v) {
  return full({}, v, t.dtype());
}

// ---- unary: one struct per op, scalar function and gradient -----------------------------------
struct NegFn {
  static constexpr const char* name = "neg";
  static constexpr bool float_only = false, saves_inputs = false, saves_outputs = false;
  using Scalar = kernels::fn::Neg;
  static Tensor grad(const Tensor&, const Tensor&, const Tensor& g) { return neg(g); }
};
struct AbsFn {
  static constexpr const char* name = "abs";
  static constexpr bool float_only = false, saves_inputs = true, saves_outputs = false;
  using Scalar = kernels::fn::Abs;
  static Tensor grad(const Tensor& x, const Tensor&, const Tensor& g) {
    return where(lt(x, 0.0), neg(g), where(gt(x, 0.0), g, zeros_like(g)));
  }
};
struct ExpFn {
  static constexpr const char* name = "exp";
  static constexpr bool float_only = true, saves_inputs = false, saves_outputs = true;
  using Scalar = kernels::fn::Exp;
  static Tensor grad(const Tensor&, const Tensor& y, const Tensor& g) { return g * y; }
};
struct LogFn {
  static constexpr const char* name = "log";
  static constexpr bool float_only = true, saves_inputs = true, saves_outputs = false;
  using Scalar = kernels::fn::Log;
  static Tensor grad(const Tensor& x, const Tensor&, const Tensor& g) { return g / x; }
};
struct SqrtFn {
  static constexpr const char* name = "sqrt";
  static constexpr bool float_only = true, saves_inputs = false, saves_outputs = true;
  using Scalar = kernels::fn::Sqrt;
  static Tensor grad(const Tensor&, const Tensor& y, const Tensor& g) { return g / (y * 2.0); }
};
struct RsqrtFn {
  static constexpr const char* name = "rsqrt";
  static constexpr bool float_only = true, saves_inputs = false, saves_outputs = true;
  using Scalar = kernels::fn::Rsqrt;
  static Tensor grad(const Tensor&, const Tensor& y, const Tensor& g) {
    return g * y * y * y * -0.5;
  }
};
struct SquareFn {
  static constexpr const char* name = "square";
  static constexpr bool float_only = false, saves_inputs = true, saves_outputs = false;
  using Scalar = kernels::fn::Square;
  static Tensor grad(const Tensor& x, const Tensor&, const Tensor& g) { return g * x * 2.0; }
};
struct TanhFn {
  static constexpr const char* name = "tanh";
  static constexpr bool float_only = true, saves_inputs = false, saves_outputs = true;
  using Scalar = kernels::fn::Tanh;
  static Tensor grad(const Tensor&, const Tensor& y, const Tensor& g) {
    return g * rsub(1.0, square(y));
  }
};
struct SigmoidFn {
  static constexpr const char* name = "sigmoid";
  static constexpr bool float_only = true, saves_inputs = false, saves_outputs = true;
  using Scalar = kernels::fn::Sigmoid;
  static Tensor grad(const Tensor&, const Tensor& y, const Tensor& g) {
    return g * y * rsub(1.0, y);
  }
};
struct ReluFn {
  static constexpr const char* name = "relu";
  static constexpr bool float_only = false, saves_inputs = false, saves_outputs = true;
  using Scalar = kernels::fn::Relu;
  static Tensor grad(const Tensor&, const Tensor& y, const Tensor& g) {
    return where(gt(y, 0.0), g, zeros_like(g));
  }
};
struct SiluFn {
  static constexpr const char* name = "silu";
  static constexpr bool float_only = true, saves_inputs = true, saves_outputs = false;
  using Scalar = kernels::fn::Silu;
  static Tensor grad(const Tensor& x, const Tensor&, const Tensor& g) {
    return binary<SiluGradFn>(x, g);
  }
};
struct GeluTanhFn {
  static constexpr const char* name = "gelu_tanh";
  static constexpr bool float_only = true, saves_inputs = true, saves_outputs = false;
  using Scalar = kernels::fn::GeluTanh;
  static Tensor grad(const Tensor& x, const Tensor&, const Tensor& g) {
    return binary<GeluTanhGradFn>(x, g);
  }
};
struct SinFn {
  static constexpr const char* name = "sin";
  static constexpr bool float_only = true, saves_inputs = true, saves_outputs = false;
  using Scalar = kernels::fn::Sin;
  static Tensor grad(const Tensor& x, const Tensor&, const Tensor& g) { return g * cos(x); }
};
struct CosFn {
  static constexpr const char* name = "cos";
  static constexpr bool float_only = true, saves_inputs = true, saves_outputs = false;
  using Scalar = kernels::fn::Cos;
  static Tensor grad(const Tensor& x, const Tensor&, const Tensor& g) { return neg(g * sin(x)); }
};

template <class Fn>
class UnaryOp final : public Op {
 public:
  const char* name() const override { return Fn::name; }
  bool saves_inputs() const override { return Fn::saves_inputs; }
  bool saves_outputs() const override { return Fn::saves_outputs; }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    const Tensor x = in[0].contiguous();
    Tensor y = empty(x.shape(), x.dtype(), x.device());
    if (x.device().is_cuda()) {
      kernels::cuda::unary<typename Fn::Scalar>(x.raw_data(), y.raw_data(), x.dtype(), x.numel());
      return {y};
    }
    dispatch_arith(x.dtype(), Fn::float_only, Fn::name, [&](auto tag) {
      using T = decltype(tag);
      kernels::cpu::map_unary(x.data<T>(), y.data<T>(), x.numel(),
                              [](T v) { return Fn::Scalar::f(v); });
    });
    return {y};
  }
  std::vector<Tensor> backward(const SavedContext& ctx, const std::vector<Tensor>& g) override {
    return {Fn::grad(ctx.inputs[0], Fn::saves_outputs ? ctx.outputs[0] : Tensor(), g[0])};
  }
};

template <class Fn>
Tensor unary(const Tensor& x) {
  LOOM_CHECK(!Fn::float_only || is_floating(x.dtype()), "[", Fn::name,
             "] expects a floating tensor, got ", dtype_name(x.dtype()));
  return apply<UnaryOp<Fn>>({x})[0];
}

class ClampOp final : public Op {
 public:
  ClampOp(double lo, double hi) : lo_(lo), hi_(hi) {}
  const char* name() const override { return "clamp"; }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    const Tensor x = in[0].contiguous();
    Tensor y = empty(x.shape(), x.dtype(), x.device());
    if (x.device().is_cuda()) {
      kernels::cuda::clamp(x.raw_data(), y.raw_data(), x.dtype(), x.numel(), lo_, hi_);
      return {y};
    }
    dispatch_arith(x.dtype(), false, "clamp", [&](auto tag) {
      using T = decltype(tag);
      const T lo = T(lo_), hi = T(hi_);
      kernels::cpu::map_unary(x.data<T>(), y.data<T>(), x.numel(),
                              [=](T v) { return v < lo ? lo : (v > hi ? hi : v); });
    });
    return {y};
  }
  std::vector<Tensor> backward(const SavedContext& ctx, const std::vector<Tensor>& g) override {
    const Tensor& x = ctx.inputs[0];
    const Tensor inside = logical_and(ge(x, scalar_like(x, lo_)), le(x, scalar_like(x, hi_)));
    return {where(inside, g[0], zeros_like(g[0]))};
  }

 private:
  double lo_, hi_;
};

class WhereOp final : public Op {
 public:
  const char* name() const override { return "where"; }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    const Tensor &c = in[0], &a = in[1], &b = in[2];
    const Shape shape =
        broadcast_shapes(broadcast_shapes(c.shape(), a.shape(), "where"), b.shape(), "where");
    const Device device = ops::common_device({&c, &a, &b}, "where");
    Tensor out = empty(shape, ops::is_host_scalar(a) ? b.dtype() : a.dtype(), device);
    if (device.is_cuda()) {
      kernels::cuda::where(ops::iter_shape(shape, "where"), ops::operand(c, shape),
                           ops::operand(a, shape), ops::operand(b, shape),
                           ops::operand(out, shape));
      return {out};
    }
    const Strides sc = broadcast_strides(c.shape(), c.strides(), shape);
    const Strides sa = broadcast_strides(a.shape(), a.strides(), shape);
    const Strides sb = broadcast_strides(b.shape(), b.strides(), shape);
    LOOM_DISPATCH_ALL(a.dtype(), "where", [&] {
      kernels::cpu::map_ternary(int(shape.size()), shape.data(), c.data<bool>(), sc.data(),
                                a.data<scalar_t>(), sa.data(), b.data<scalar_t>(), sb.data(),
                                out.data<scalar_t>(), out.strides().data(),
                                [](bool k, scalar_t x, scalar_t y) { return k ? x : y; });
    });
    return {out};
  }
  std::vector<Tensor> backward(const SavedContext& ctx, const std::vector<Tensor>& g) override {
    const Tensor& c = ctx.inputs[0];
    const Tensor z = zeros({}, g[0].dtype());
    return {Tensor(),
            ctx.needs_grad[1] ? sum_to_shape(where(c, g[0], z), ctx.input_shapes[1]) : Tensor(),
            ctx.needs_grad[2] ? sum_to_shape(where(c, z, g[0]), ctx.input_shapes[2]) : Tensor()};
  }
};

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) {
  return binary<AddFn>(a, b);
}
Tensor sub(const Tensor& a, const Tensor& b) {
  return binary<SubFn>(a, b);
}
Tensor mul(const Tensor& a, const Tensor& b) {
  return binary<MulFn>(a, b);
}
Tensor div(const Tensor& a, const Tensor& b) {
  return binary<DivFn>(a, b);
}
Tensor pow(const Tensor& a, const Tensor& b) {
  return binary<PowFn>(a, b);
}
Tensor maximum(const Tensor& a, const Tensor& b) {
  return binary<MaximumFn>(a, b);
}
Tensor minimum(const Tensor& a, const Tensor& b) {
  return binary<MinimumFn>(a, b);
}

Tensor add(const Tensor& a, double b) {
  return add(a, scalar_like(a, b));
}
Tensor sub(const Tensor& a, double b) {
  return sub(a, scalar_like(a, b));
}
Tensor mul(const Tensor& a, double b) {
  return mul(a, scalar_like(a, b));
}
Tensor div(const Tensor& a, double b) {
  return div(a, scalar_like(a, b));
}
Tensor pow(const Tensor& a, double e) {
  return pow(a, scalar_like(a, e));
}
Tensor rsub(double a, const Tensor& b) {
  return sub(scalar_like(b, a), b);
}

Tensor eq(const Tensor& a, const Tensor& b) {
  return compare<kernels::fn::Eq>(a, b, "eq");
}
Tensor ne(const Tensor& a, const Tensor& b) {
  return compare<kernels::fn::Ne>(a, b, "ne");
}
Tensor lt(const Tensor& a, const Tensor& b) {
  return compare<kernels::fn::Lt>(a, b, "lt");
}
Tensor le(const Tensor& a, const Tensor& b) {
  return compare<kernels::fn::Le>(a, b, "le");
}
Tensor gt(const Tensor& a, const Tensor& b) {
  return compare<kernels::fn::Gt>(a, b, "gt");
}
Tensor ge(const Tensor& a, const Tensor& b) {
  return compare<kernels::fn::Ge>(a, b, "ge");
}
Tensor gt(const Tensor& a, double b) {
  return gt(a, scalar_like(a, b));
}
Tensor lt(const Tensor& a, double b) {
  return lt(a, scalar_like(a, b));
}
Tensor logical_and(const Tensor& a, const Tensor& b) {
  LOOM_CHECK(a.dtype() == DType::boolean && b.dtype() == DType::boolean,
             "[logical_and] expects bool tensors");
  return compare<kernels::fn::LogicalAnd>(a, b, "logical_and");
}
Tensor logical_not(const Tensor& a) {
  LOOM_CHECK(a.dtype() == DType::boolean, "[logical_not] expects a bool tensor");
  return eq(a, scalar_like(a, 0));
}

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  LOOM_CHECK(cond.dtype() == DType::boolean, "[where] condition must be bool, got ",
             dtype_name(cond.dtype()));
  ops::common_device({&cond, &a, &b}, "where");
  const auto [pa, pb] = promote(a, b, "where");
  return apply<WhereOp>({cond, pa, pb})[0];
}

Tensor neg(const Tensor& x) {
  return unary<NegFn>(x);
}
Tensor abs(const Tensor& x) {
  return unary<AbsFn>(x);
}
Tensor exp(const Tensor& x) {
  return unary<ExpFn>(x);
}
Tensor log(const Tensor& x) {
  return unary<LogFn>(x);
}
Tensor sqrt(const Tensor& x) {
  return unary<SqrtFn>(x);
}
Tensor rsqrt(const Tensor& x) {
  return unary<RsqrtFn>(x);
}
Tensor square(const Tensor& x) {
  return unary<SquareFn>(x);
}
Tensor tanh(const Tensor& x) {
  return unary<TanhFn>(x);
}
Tensor sigmoid(const Tensor& x) {
  return unary<SigmoidFn>(x);
}
Tensor relu(const Tensor& x) {
  return unary<ReluFn>(x);
}
Tensor silu(const Tensor& x) {
  return unary<SiluFn>(x);
}
Tensor gelu_tanh(const Tensor& x) {
  return unary<GeluTanhFn>(x);
}
Tensor gelu_tanh_grad(const Tensor& x, const Tensor& g) {
  return binary<GeluTanhGradFn>(x, g);
}
Tensor sin(const Tensor& x) {
  return unary<SinFn>(x);
}
Tensor cos(const Tensor& x) {
  return unary<CosFn>(x);
}
Tensor clamp(const Tensor& x, double lo, double hi) {
  LOOM_CHECK(lo <= hi, "[clamp] lo ", lo, " > hi ", hi);
  return apply<ClampOp>({x}, lo, hi)[0];
}

}  // namespace loom
