#pragma once
// The scalar functions behind loom's elementwise ops, defined once for the CPU kernels and the
// CUDA kernels (LOOM_HD). Each is a struct with a static template f; core's op structs
// (core/ops/elementwise.cpp) add the name, the dtype rules and the gradient. T is the compute type:
// float or double (and an integer type where the op allows integers); 16-bit floats are loaded as
// float by the kernels. The X-macro lists name every function a CUDA kernel is instantiated for.
#include <cmath>

#include "kernels/hd.h"

namespace loom::kernels::fn {

// -- unary ------------------------------------------------------------------------------------
struct Neg {
  template <class T>
  LOOM_HD static T f(T x) { return -x; }
};
struct Abs {
  template <class T>
  LOOM_HD static T f(T x) { return x < T(0) ? -x : x; }
};
struct Exp {
  template <class T>
  LOOM_HD static T f(T x) { return std::exp(x); }
};
struct Log {
  template <class T>
  LOOM_HD static T f(T x) { return std::log(x); }
};
struct Sqrt {
  template <class T>
  LOOM_HD static T f(T x) { return std::sqrt(x); }
};
struct Rsqrt {
  template <class T>
  LOOM_HD static T f(T x) { return T(1) / std::sqrt(x); }
};
struct Square {
  template <class T>
  LOOM_HD static T f(T x) { return x * x; }
};
struct Tanh {
  template <class T>
  LOOM_HD static T f(T x) { return std::tanh(x); }
};
struct Sigmoid {
  template <class T>
  LOOM_HD static T f(T x) { return T(1) / (T(1) + std::exp(-x)); }
};
struct Relu {
  template <class T>
  LOOM_HD static T f(T x) { return x > T(0) ? x : T(0); }
};
struct Silu {
  template <class T>
  LOOM_HD static T f(T x) { return x / (T(1) + std::exp(-x)); }
};
// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
struct GeluTanh {
  static constexpr double k0 = 0.7978845608028654, k1 = 0.044715;
  template <class T>
  LOOM_HD static T f(T x) {
    return T(0.5) * x * (T(1) + std::tanh(T(k0) * (x + T(k1) * x * x * x)));
  }
};
struct Sin {
  template <class T>
  LOOM_HD static T f(T x) { return std::sin(x); }
};
struct Cos {
  template <class T>
  LOOM_HD static T f(T x) { return std::cos(x); }
};

#define LOOM_UNARY_FNS(X) \
  X(Neg) X(Abs) X(Exp) X(Log) X(Sqrt) X(Rsqrt) X(Square) X(Tanh) X(Sigmoid) X(Relu) X(Silu) \
  X(GeluTanh) X(Sin) X(Cos)

// -- binary -----------------------------------------------------------------------------------
struct Add {
  template <class T>
  LOOM_HD static T f(T a, T b) { return a + b; }
};
struct Sub {
  template <class T>
  LOOM_HD static T f(T a, T b) { return a - b; }
};
struct Mul {
  template <class T>
  LOOM_HD static T f(T a, T b) { return a * b; }
};
struct Div {
  template <class T>
  LOOM_HD static T f(T a, T b) { return a / b; }
};
struct Pow {
  template <class T>
  LOOM_HD static T f(T a, T b) { return std::pow(a, b); }
};
struct Maximum {
  template <class T>
  LOOM_HD static T f(T a, T b) { return a >= b ? a : b; }
};
struct Minimum {
  template <class T>
  LOOM_HD static T f(T a, T b) { return a <= b ? a : b; }
};
// Comparisons and logic return bool.
struct Eq {
  template <class T>
  LOOM_HD static bool f(T a, T b) { return a == b; }
};
struct Ne {
  template <class T>
  LOOM_HD static bool f(T a, T b) { return a != b; }
};
struct Lt {
  template <class T>
  LOOM_HD static bool f(T a, T b) { return a < b; }
};
struct Le {
  template <class T>
  LOOM_HD static bool f(T a, T b) { return a <= b; }
};
struct Gt {
  template <class T>
  LOOM_HD static bool f(T a, T b) { return a > b; }
};
struct Ge {
  template <class T>
  LOOM_HD static bool f(T a, T b) { return a >= b; }
};
struct LogicalAnd {
  template <class T>
  LOOM_HD static bool f(T a, T b) { return a && b; }
};

// Fused activation gradients: f(x, g) = g * activation'(x), one pass instead of the composite.
struct GeluTanhGrad {
  template <class T>
  LOOM_HD static T f(T x, T g) {
    const T k0 = T(GeluTanh::k0), k1 = T(GeluTanh::k1);
    const T th = std::tanh(k0 * (x + k1 * x * x * x));
    return g * (T(0.5) * (T(1) + th) +
                T(0.5) * x * (T(1) - th * th) * k0 * (T(1) + T(3) * k1 * x * x));
  }
};
struct SiluGrad {
  template <class T>
  LOOM_HD static T f(T x, T g) {
    const T s = T(1) / (T(1) + std::exp(-x));
    return g * s * (T(1) + x * (T(1) - s));
  }
};

#define LOOM_BINARY_FNS(X) \
  X(Add) X(Sub) X(Mul) X(Div) X(Pow) X(Maximum) X(Minimum) X(Eq) X(Ne) X(Lt) X(Le) X(Gt) X(Ge) \
  X(LogicalAnd) X(GeluTanhGrad) X(SiluGrad)

}  // namespace loom::kernels::fn
