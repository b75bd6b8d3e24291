#include "core/ops/elementwise.h"

#include <cmath>

#include "core/autograd.h"
#include "core/ops/op_util.h"
#include "core/ops/reduce.h"
#include "kernels/cpu/elementwise.h"

namespace loom {

namespace {

using ops::check_cpu;
using ops::dispatch_arith;

void check_same_dtype(const Tensor& a, const Tensor& b, const char* op) {
  LOOM_CHECK(a.dtype() == b.dtype(), "[", op, "] dtypes differ: ", dtype_name(a.dtype()), " ",
             shape_str(a.shape()), " and ", dtype_name(b.dtype()), " ", shape_str(b.shape()),
             "; cast one with to()");
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
  template <class T>
  static T f(T a, T b) {
    return a + b;
  }
  static Grads2 grad(const Tensor&, const Tensor&, const Tensor& g) { return {g, g}; }
};
struct SubFn {
  static constexpr const char* name = "sub";
  static constexpr bool saves_inputs = false, float_only = false;
  template <class T>
  static T f(T a, T b) {
    return a - b;
  }
  static Grads2 grad(const Tensor&, const Tensor&, const Tensor& g) { return {g, neg(g)}; }
};
struct MulFn {
  static constexpr const char* name = "mul";
  static constexpr bool saves_inputs = true, float_only = false;
  template <class T>
  static T f(T a, T b) {
    return a * b;
  }
  static Grads2 grad(const Tensor& a, const Tensor& b, const Tensor& g) { return {g * b, g * a}; }
};
struct DivFn {
  static constexpr const char* name = "div";
  static constexpr bool saves_inputs = true, float_only = false;
  template <class T>
  static T f(T a, T b) {
    return a / b;
  }
  static Grads2 grad(const Tensor& a, const Tensor& b, const Tensor& g) {
    const Tensor ga = g / b;
    return {ga, neg(ga * a / b)};
  }
};
struct PowFn {
  static constexpr const char* name = "pow";
  static constexpr bool saves_inputs = true, float_only = true;
  template <class T>
  static T f(T a, T b) {
    return std::pow(a, b);
  }
  static Grads2 grad(const Tensor& a, const Tensor& b, const Tensor& g) {
    return {g * b * pow(a, b - 1.0), g * pow(a, b) * log(a)};
  }
};
struct MaximumFn {
  static constexpr const char* name = "maximum";
  static constexpr bool saves_inputs = true, float_only = false;
  template <class T>
  static T f(T a, T b) {
    return a >= b ? a : b;
  }
  static Grads2 grad(const Tensor& a, const Tensor& b, const Tensor& g) {
    const Tensor pick_a = ge(a, b), z = zeros_like(g);
    return {where(pick_a, g, z), where(pick_a, z, g)};
  }
};
struct MinimumFn {
  static constexpr const char* name = "minimum";
  static constexpr bool saves_inputs = true, float_only = false;
  template <class T>
  static T f(T a, T b) {
    return a <= b ? a : b;
  }
  static Grads2 grad(const Tensor& a, const Tensor& b, const Tensor& g) {
    const Tensor pick_a = le(a, b), z = zeros_like(g);
    return {where(pick_a, g, z), where(pick_a, z, g)};
  }
};

template <class Fn>
class BinaryOp final : public Op {
 public:
  const char* name() const override { return Fn::name; }
  bool saves_inputs() const override { return Fn::saves_inputs; }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    const Tensor &a = in[0], &b = in[1];
    const Shape shape = broadcast_shapes(a.shape(), b.shape(), Fn::name);
    Tensor out;
    dispatch_arith(a.dtype(), Fn::float_only, Fn::name, [&](auto tag) {
      using T = decltype(tag);
      out = broadcast_map<T, T>(a, b, shape, a.dtype(), [](T x, T y) { return Fn::f(x, y); });
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
Tensor binary(const Tensor& a, const Tensor& b) {
  check_cpu(a, Fn::name);
  check_cpu(b, Fn::name);
  check_same_dtype(a, b, Fn::name);
  return apply<BinaryOp<Fn>>({a, b})[0];
}

// ---- comparisons ------------------------------------------------------------------------------
template <class Cmp>
Tensor compare(const Tensor& a, const Tensor& b, const char* name) {
  check_cpu(a, name);
  check_cpu(b, name);
  check_same_dtype(a, b, name);
  const Shape shape = broadcast_shapes(a.shape(), b.shape(), name);
  Tensor out;
  LOOM_DISPATCH_ALL(a.dtype(), name, [&] {
    out = broadcast_map<bool, scalar_t>(a, b, shape, DType::boolean,
                                        [](scalar_t x, scalar_t y) { return Cmp{}(x, y); });
  });
  return out;
}

Tensor scalar_like(const Tensor& t, double v) {
  return full({}, v, t.dtype(), t.device());
}

// ---- unary: one struct per op, scalar function and gradient -----------------------------------
struct NegFn {
  static constexpr const char* name = "neg";
  static constexpr bool float_only = false, saves_inputs = false, saves_outputs = false;
  template <class T>
  static T f(T x) {
    return -x;
  }
  static Tensor grad(const Tensor&, const Tensor&, const Tensor& g) { return neg(g); }
};
struct AbsFn {
  static constexpr const char* name = "abs";
  static constexpr bool float_only = false, saves_inputs = true, saves_outputs = false;
  template <class T>
  static T f(T x) {
    return x < 0 ? -x : x;
  }
  static Tensor grad(const Tensor& x, const Tensor&, const Tensor& g) {
    return where(lt(x, 0.0), neg(g), where(gt(x, 0.0), g, zeros_like(g)));
  }
};
struct ExpFn {
  static constexpr const char* name = "exp";
  static constexpr bool float_only = true, saves_inputs = false, saves_outputs = true;
  template <class T>
  static T f(T x) {
    return std::exp(x);
  }
  static Tensor grad(const Tensor&, const Tensor& y, const Tensor& g) { return g * y; }
};
struct LogFn {
  static constexpr const char* name = "log";
  static constexpr bool float_only = true, saves_inputs = true, saves_outputs = false;
  template <class T>
  static T f(T x) {
    return std::log(x);
  }
  static Tensor grad(const Tensor& x, const Tensor&, const Tensor& g) { return g / x; }
};
struct SqrtFn {
  static constexpr const char* name = "sqrt";
  static constexpr bool float_only = true, saves_inputs = false, saves_outputs = true;
  template <class T>
  static T f(T x) {
    return std::sqrt(x);
  }
  static Tensor grad(const Tensor&, const Tensor& y, const Tensor& g) { return g / (y * 2.0); }
};
struct RsqrtFn {
  static constexpr const char* name = "rsqrt";
  static constexpr bool float_only = true, saves_inputs = false, saves_outputs = true;
  template <class T>
  static T f(T x) {
    return T(1) / std::sqrt(x);
  }
  static Tensor grad(const Tensor&, const Tensor& y, const Tensor& g) {
    return g * y * y * y * -0.5;
  }
};
struct SquareFn {
  static constexpr const char* name = "square";
  static constexpr bool float_only = false, saves_inputs = true, saves_outputs = false;
  template <class T>
  static T f(T x) {
    return x * x;
  }
  static Tensor grad(const Tensor& x, const Tensor&, const Tensor& g) { return g * x * 2.0; }
};
struct TanhFn {
  static constexpr const char* name = "tanh";
  static constexpr bool float_only = true, saves_inputs = false, saves_outputs = true;
  template <class T>
  static T f(T x) {
    return std::tanh(x);
  }
  static Tensor grad(const Tensor&, const Tensor& y, const Tensor& g) {
    return g * rsub(1.0, square(y));
  }
};
struct SigmoidFn {
  static constexpr const char* name = "sigmoid";
  static constexpr bool float_only = true, saves_inputs = false, saves_outputs = true;
  template <class T>
  static T f(T x) {
    return T(1) / (T(1) + std::exp(-x));
  }
  static Tensor grad(const Tensor&, const Tensor& y, const Tensor& g) {
    return g * y * rsub(1.0, y);
  }
};
struct ReluFn {
  static constexpr const char* name = "relu";
  static constexpr bool float_only = false, saves_inputs = false, saves_outputs = true;
  template <class T>
  static T f(T x) {
    return x > 0 ? x : T(0);
  }
  static Tensor grad(const Tensor&, const Tensor& y, const Tensor& g) {
    return where(gt(y, 0.0), g, zeros_like(g));
  }
};
struct SiluFn {
  static constexpr const char* name = "silu";
  static constexpr bool float_only = true, saves_inputs = true, saves_outputs = false;
  template <class T>
  static T f(T x) {
    return x / (T(1) + std::exp(-x));
  }
  static Tensor grad(const Tensor& x, const Tensor&, const Tensor& g) {
    const Tensor s = sigmoid(x);
    return g * s * (1.0 + x * rsub(1.0, s));
  }
};
struct GeluTanhFn {
  static constexpr const char* name = "gelu_tanh";
  static constexpr bool float_only = true, saves_inputs = true, saves_outputs = false;
  static constexpr double k0 = 0.7978845608028654, k1 = 0.044715;  // sqrt(2/pi)
  template <class T>
  static T f(T x) {
    return T(0.5) * x * (T(1) + std::tanh(T(k0) * (x + T(k1) * x * x * x)));
  }
  static Tensor grad(const Tensor& x, const Tensor&, const Tensor& g) {
    const Tensor x2 = square(x);
    const Tensor th = tanh((x + x2 * x * k1) * k0);
    const Tensor dinner = (x2 * (3.0 * k1) + 1.0) * k0;
    return g * (0.5 * (th + 1.0) + 0.5 * x * rsub(1.0, square(th)) * dinner);
  }
};
struct SinFn {
  static constexpr const char* name = "sin";
  static constexpr bool float_only = true, saves_inputs = true, saves_outputs = false;
  template <class T>
  static T f(T x) {
    return std::sin(x);
  }
  static Tensor grad(const Tensor& x, const Tensor&, const Tensor& g) { return g * cos(x); }
};
struct CosFn {
  static constexpr const char* name = "cos";
  static constexpr bool float_only = true, saves_inputs = true, saves_outputs = false;
  template <class T>
  static T f(T x) {
    return std::cos(x);
  }
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
    dispatch_arith(x.dtype(), Fn::float_only, Fn::name, [&](auto tag) {
      using T = decltype(tag);
      kernels::cpu::map_unary(x.data<T>(), y.data<T>(), x.numel(), [](T v) { return Fn::f(v); });
    });
    return {y};
  }
  std::vector<Tensor> backward(const SavedContext& ctx, const std::vector<Tensor>& g) override {
    return {Fn::grad(ctx.inputs[0], Fn::saves_outputs ? ctx.outputs[0] : Tensor(), g[0])};
  }
};

template <class Fn>
Tensor unary(const Tensor& x) {
  check_cpu(x, Fn::name);
  return apply<UnaryOp<Fn>>({x})[0];
}

class ClampOp final : public Op {
 public:
  ClampOp(double lo, double hi) : lo_(lo), hi_(hi) {}
  const char* name() const override { return "clamp"; }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    const Tensor x = in[0].contiguous();
    Tensor y = empty(x.shape(), x.dtype(), x.device());
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
    Tensor out = empty(shape, a.dtype(), a.device());
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
  return compare<std::equal_to<>>(a, b, "eq");
}
Tensor ne(const Tensor& a, const Tensor& b) {
  return compare<std::not_equal_to<>>(a, b, "ne");
}
Tensor lt(const Tensor& a, const Tensor& b) {
  return compare<std::less<>>(a, b, "lt");
}
Tensor le(const Tensor& a, const Tensor& b) {
  return compare<std::less_equal<>>(a, b, "le");
}
Tensor gt(const Tensor& a, const Tensor& b) {
  return compare<std::greater<>>(a, b, "gt");
}
Tensor ge(const Tensor& a, const Tensor& b) {
  return compare<std::greater_equal<>>(a, b, "ge");
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
  return compare<std::logical_and<>>(a, b, "logical_and");
}
Tensor logical_not(const Tensor& a) {
  LOOM_CHECK(a.dtype() == DType::boolean, "[logical_not] expects a bool tensor");
  return eq(a, full({}, 0, DType::boolean));
}

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  LOOM_CHECK(cond.dtype() == DType::boolean, "[where] condition must be bool, got ",
             dtype_name(cond.dtype()));
  check_same_dtype(a, b, "where");
  check_cpu(cond, "where");
  return apply<WhereOp>({cond, a, b})[0];
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
Tensor sin(const Tensor& x) {
  return unary<SinFn>(x);
}
Tensor cos(const Tensor& x) {
  return unary<CosFn>(x);
}
Tensor clamp(const Tensor& x, double lo, double hi) {
  LOOM_CHECK(lo <= hi, "[clamp] lo ", lo, " > hi ", hi);
  check_cpu(x, "clamp");
  return apply<ClampOp>({x}, lo, hi)[0];
}

}  // namespace loom
