#include "core/ops/conv.h"

#include <string>

#include "core/autograd.h"
#include "core/ops/cuda_util.h"
#include "core/ops/elementwise.h"
#include "core/ops/linalg.h"
#include "core/ops/reduce.h"
#include "kernels/cpu/conv.h"
#include "kernels/cuda/kernels.h"

namespace loom {

namespace {

using kernels::cpu::ConvGeom;

Shape out_shape(int64_t n, int64_t c, const ConvGeom& g) {
  return {n, c, g.out[0], g.out[1], g.out[2]};
}

[[noreturn]] void fail_double_backward(const std::string& name) {
  LOOM_FAIL("[", name, "] double backward is not supported");
}

// dx = col2vol(weight^T dy): the input gradient of a convolution. Inputs: dy, weight.
class ConvInputGradOp final : public Op {
 public:
  ConvInputGradOp(const std::string& conv, const ConvGeom& g, Shape x_shape)
      : name_(conv + "_input_grad"), g_(g), x_shape_(std::move(x_shape)) {}
  const char* name() const override { return name_.c_str(); }
  bool saves_inputs() const override { return false; }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    const Tensor dy = in[0].contiguous(), w = in[1].contiguous();
    Tensor dx = empty(x_shape_, dy.dtype(), dy.device());
    LOOM_DISPATCH_FLOAT(dy.dtype(), name_, [&] {
      kernels::cpu::conv_backward_input(g_, x_shape_[0], w.size(0), dy.data<scalar_t>(),
                                        w.data<scalar_t>(), dx.data<scalar_t>());
    });
    return {dx};
  }
  std::vector<Tensor> backward(const SavedContext&, const std::vector<Tensor>&) override {
    fail_double_backward(name_);
  }

 private:
  std::string name_;
  ConvGeom g_;
  Shape x_shape_;
};

// dweight = sum_i dy[i] cols(x[i])^T: the weight gradient of a convolution. Inputs: dy, x.
class ConvWeightGradOp final : public Op {
 public:
  ConvWeightGradOp(const std::string& conv, const ConvGeom& g, Shape w_shape)
      : name_(conv + "_weight_grad"), g_(g), w_shape_(std::move(w_shape)) {}
  const char* name() const override { return name_.c_str(); }
  bool saves_inputs() const override { return false; }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    const Tensor dy = in[0].contiguous(), x = in[1].contiguous();
    Tensor dw = empty(w_shape_, dy.dtype(), dy.device());
    LOOM_DISPATCH_FLOAT(dy.dtype(), name_, [&] {
      kernels::cpu::conv_backward_weight(g_, x.size(0), w_shape_[0], dy.data<scalar_t>(),
                                         x.data<scalar_t>(), dw.data<scalar_t>());
    });
    return {dw};
  }
  std::vector<Tensor> backward(const SavedContext&, const std::vector<Tensor>&) override {
    fail_double_backward(name_);
  }

 private:
  std::string name_;
  ConvGeom g_;
  Shape w_shape_;
};

// Inputs: x [N, Cin, D, H, W], weight [Cout, Cin, kD, kH, kW], bias [Cout] or undefined.
class ConvOp final : public Op {
 public:
  ConvOp(std::string name, const ConvGeom& g) : name_(std::move(name)), g_(g) {}
  const char* name() const override { return name_.c_str(); }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    const Tensor x = in[0].contiguous(), w = in[1].contiguous();
    const Tensor b = in[2].defined() ? in[2].contiguous() : Tensor();
    Tensor y = empty(out_shape(x.size(0), w.size(0), g_), x.dtype(), x.device());
    LOOM_DISPATCH_FLOAT(x.dtype(), name_, [&] {
      kernels::cpu::conv_forward(g_, x.size(0), w.size(0), x.data<scalar_t>(), w.data<scalar_t>(),
                                 b.defined() ? b.data<scalar_t>() : nullptr, y.data<scalar_t>());
    });
    return {y};
  }
  std::vector<Tensor> backward(const SavedContext& ctx, const std::vector<Tensor>& g) override {
    const Tensor& dy = g[0];
    Tensor dx, dw, db;
    if (ctx.needs_grad[0])
      dx = apply<ConvInputGradOp>({dy, ctx.inputs[1]}, name_, g_, ctx.input_shapes[0])[0];
    if (ctx.needs_grad[1])
      dw = apply<ConvWeightGradOp>({dy, ctx.inputs[0]}, name_, g_, ctx.input_shapes[1])[0];
    if (ctx.needs_grad[2]) db = sum(dy, {0, 2, 3, 4});
    return {dx, dw, db};
  }

 private:
  std::string name_;
  ConvGeom g_;
};

// dx: dy routed to the saved argmax positions. Inputs: dy, argmax (i64).
class MaxPoolGradOp final : public Op {
 public:
  MaxPoolGradOp(const std::string& pool, const ConvGeom& g, Shape x_shape)
      : name_(pool + "_grad"), g_(g), x_shape_(std::move(x_shape)) {}
  const char* name() const override { return name_.c_str(); }
  bool saves_inputs() const override { return false; }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    const Tensor dy = in[0].contiguous(), idx = in[1].contiguous();
    Tensor dx = empty(x_shape_, dy.dtype(), dy.device());
    LOOM_DISPATCH_FLOAT(dy.dtype(), name_, [&] {
      kernels::cpu::max_pool_backward(g_, x_shape_[0] * x_shape_[1], dy.data<scalar_t>(),
                                      idx.data<int64_t>(), dx.data<scalar_t>());
    });
    return {dx};
  }
  std::vector<Tensor> backward(const SavedContext&, const std::vector<Tensor>&) override {
    fail_double_backward(name_);
  }

 private:
  std::string name_;
  ConvGeom g_;
  Shape x_shape_;
};

// Input x [N, C, D, H, W]; outputs the maxima and their flat in-plane indices (i64).
class MaxPoolOp final : public Op {
 public:
  MaxPoolOp(std::string name, const ConvGeom& g) : name_(std::move(name)), g_(g) {}
  const char* name() const override { return name_.c_str(); }
  bool saves_inputs() const override { return false; }
  bool saves_outputs() const override { return true; }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    const Tensor x = in[0].contiguous();
    const Shape shape = out_shape(x.size(0), x.size(1), g_);
    Tensor y = empty(shape, x.dtype(), x.device());
    Tensor idx = empty(shape, DType::i64, x.device());
    LOOM_DISPATCH_FLOAT(x.dtype(), name_, [&] {
      kernels::cpu::max_pool_forward(g_, x.size(0) * x.size(1), x.data<scalar_t>(),
                                     y.data<scalar_t>(), idx.data<int64_t>());
    });
    return {y, idx};
  }
  std::vector<Tensor> backward(const SavedContext& ctx, const std::vector<Tensor>& g) override {
    return {apply<MaxPoolGradOp>({g[0], ctx.outputs[1]}, name_, g_, ctx.input_shapes[0])[0]};
  }

 private:
  std::string name_;
  ConvGeom g_;
};

// ---- argument checks shared by the 2-D and 3-D forms ------------------------------------------

template <size_t S>
std::string str(const std::array<int64_t, S>& a) {
  return shape_str(Shape(a.begin(), a.end()));
}

void check_tensor(const Tensor& t, const char* op, const char* what) {
  LOOM_CHECK(t.defined(), "[", op, "] ", what, " is undefined");
  if (t.device().is_cuda()) {
    LOOM_CHECK(is_floating(t.dtype()), "[", op, "] ", what, " has dtype ", dtype_name(t.dtype()),
               "; a floating dtype expected");
    return;
  }
  LOOM_CHECK(t.dtype() == DType::f32 || t.dtype() == DType::f64, "[", op, "] ", what, " has dtype ",
             dtype_name(t.dtype()), "; f32 or f64 expected (cast with to())");
}

// ---- CUDA convolution: vol2col as a differentiable op, then one batched matmul ----------------
kernels::cuda::ConvGeometry cuda_geometry(const ConvGeom& g) {
  kernels::cuda::ConvGeometry c;
  for (size_t d = 0; d < 3; ++d) {
    c.in[d] = g.in[d];
    c.out[d] = g.out[d];
    c.kernel[d] = g.kernel[d];
    c.stride[d] = g.stride[d];
    c.padding[d] = g.padding[d];
  }
  return c;
}

// x [N, C, D, H, W] -> cols [N, C*kD*kH*kW, Do*Ho*Wo]; the backward is col2vol (its adjoint).
class Vol2ColOp final : public Op {
 public:
  explicit Vol2ColOp(const ConvGeom& g) : g_(g) {}
  const char* name() const override { return "vol2col"; }
  bool saves_inputs() const override { return false; }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    const Tensor x = in[0].contiguous();
    Tensor cols = empty({x.size(0), g_.channels * g_.kernel_numel(), g_.out_numel()}, x.dtype(),
                        x.device());
    kernels::cuda::vol2col(cuda_geometry(g_), x.size(0) * g_.channels, x.raw_data(),
                           cols.raw_data(), x.dtype());
    return {cols};
  }
  std::vector<Tensor> backward(const SavedContext& ctx, const std::vector<Tensor>& g) override {
    const Tensor gc = g[0].contiguous();
    Tensor dx = empty(ctx.input_shapes[0], gc.dtype(), gc.device());
    kernels::cuda::col2vol(cuda_geometry(g_), ctx.input_shapes[0][0] * g_.channels, gc.raw_data(),
                           dx.raw_data(), gc.dtype());
    return {dx};
  }

 private:
  ConvGeom g_;
};

// y = weight [Cout, C*k] @ vol2col(x) (+ bias), for x [N, C, D, H, W] on CUDA, computed token
// major: vol2col(x)^T weight^T (+ bias in the GEMM's epilogue) is one [N*L, C*k] x [C*k, Cout]
// GEMM (L output positions), which cuBLASLt runs far faster than N products of inner dimension
// C*k (a patch embedding's C*k is small: 16 for DiT's 2x2 patches of 4 channels). The result is
// a [N, Cout, Do, Ho, Wo] view of [N, L, Cout] memory, so flattening it back to tokens
// (flatten(2).transpose(1, 2)) is free.
Tensor cuda_conv(const Tensor& x, const Tensor& weight, const Tensor& bias, const ConvGeom& g) {
  const int64_t cout = weight.size(0);
  const Tensor cols = apply<Vol2ColOp>({x}, g)[0];
  return linear(cols.transpose(1, 2), weight.reshape({cout, -1}), bias)
      .transpose(1, 2)
      .reshape({x.size(0), cout, g.out[0], g.out[1], g.out[2]});
}

// "[N, Cin, H, W]"-style names: `lead` dims, then the spatial dims with `prefix` ("k" or "").
std::string dim_names(size_t s, const char* lead, const char* prefix) {
  std::string out = std::string("[") + lead;
  const char* names[] = {"D", "H", "W"};
  for (size_t d = 3 - s; d < 3; ++d) out += std::string(", ") + prefix + names[d];
  return out + "]";
}

void check_rank(const Tensor& t, size_t s, const char* op, const char* what, const char* lead,
                const char* prefix) {
  LOOM_CHECK(t.dim() == int64_t(s) + 2, "[", op, "] ", what, " must be ",
             dim_names(s, lead, prefix), " (rank ", s + 2, "), got ", shape_str(t.shape()));
}

// The 3-D geometry of an S-d sweep: 2-D gets a leading depth of 1.
template <size_t S>
ConvGeom make_geom(const char* op, const Tensor& x, const std::array<int64_t, S>& kernel,
                   const std::array<int64_t, S>& stride, const std::array<int64_t, S>& padding) {
  for (size_t d = 0; d < S; ++d) {
    LOOM_CHECK(stride[d] >= 1 && padding[d] >= 0, "[", op, "] stride ", str(stride),
               " must be positive and padding ", str(padding), " non-negative");
  }
  ConvGeom g;
  g.channels = x.size(1);
  const size_t lead = 3 - S;
  for (size_t d = 0; d < 3; ++d) g.in[d] = g.kernel[d] = g.out[d] = 1;
  bool fits = true;
  for (size_t d = 0; d < S; ++d) {
    g.in[lead + d] = x.size(int64_t(2 + d));
    g.kernel[lead + d] = kernel[d];
    g.stride[lead + d] = stride[d];
    g.padding[lead + d] = padding[d];
    g.out[lead + d] =
        kernels::cpu::conv_out_size(x.size(int64_t(2 + d)), kernel[d], stride[d], padding[d]);
    fits &= g.out[lead + d] >= 1;
  }
  LOOM_CHECK(fits, "[", op, "] kernel ", str(kernel), " is larger than the input ",
             shape_str(x.shape()), " padded by ", str(padding));
  return g;
}

template <size_t S>
Tensor conv_nd(const char* op, const Tensor& x, const Tensor& weight, const Tensor& bias,
               const std::array<int64_t, S>& stride, const std::array<int64_t, S>& padding) {
  check_tensor(x, op, "input");
  check_tensor(weight, op, "weight");
  check_rank(x, S, op, "input", "N, Cin", "");
  check_rank(weight, S, op, "weight", "Cout, Cin", "k");
  LOOM_CHECK(weight.dtype() == x.dtype(), "[", op, "] input has dtype ", dtype_name(x.dtype()),
             " but weight has ", dtype_name(weight.dtype()));
  for (int64_t d = 0; d < weight.dim(); ++d) {
    LOOM_CHECK(weight.size(d) >= 1, "[", op, "] weight ", shape_str(weight.shape()),
               " has an empty dim");
  }
  LOOM_CHECK(x.size(1) == weight.size(1), "[", op, "] input ", shape_str(x.shape()), " has ",
             x.size(1), " channels but weight ", shape_str(weight.shape()), " expects ",
             weight.size(1));
  if (bias.defined()) {
    check_tensor(bias, op, "bias");
    LOOM_CHECK(bias.dtype() == x.dtype(), "[", op, "] input has dtype ", dtype_name(x.dtype()),
               " but bias has ", dtype_name(bias.dtype()));
    LOOM_CHECK(bias.dim() == 1 && bias.size(0) == weight.size(0), "[", op, "] bias must be [",
               weight.size(0), "] for weight ", shape_str(weight.shape()), ", got ",
               shape_str(bias.shape()));
  }
  std::array<int64_t, S> kernel;
  for (size_t d = 0; d < S; ++d) kernel[d] = weight.size(int64_t(2 + d));
  const ConvGeom g = make_geom<S>(op, x, kernel, stride, padding);
  if (x.device().is_cuda() || weight.device().is_cuda()) {
    ops::common_device({&x, &weight, &bias}, op);
    if constexpr (S == 2) {
      return cuda_conv(x.unsqueeze(2), weight.unsqueeze(2), bias, g).squeeze(2);
    } else {
      return cuda_conv(x, weight, bias, g);
    }
  }
  if constexpr (S == 2) {
    return apply<ConvOp>({x.unsqueeze(2), weight.unsqueeze(2), bias}, op, g)[0].squeeze(2);
  } else {
    return apply<ConvOp>({x, weight, bias}, op, g)[0];
  }
}

template <size_t S>
Tensor max_pool_nd(const char* op, const Tensor& x, const std::array<int64_t, S>& kernel,
                   const std::array<int64_t, S>& stride, const std::array<int64_t, S>& padding) {
  check_tensor(x, op, "input");
  LOOM_CHECK(x.device().is_cpu(), "[", op, "] runs on the CPU only; got a ", x.device().str(),
             " input (move it with to(Device::cpu()))");
  check_rank(x, S, op, "input", "N, C", "");
  for (size_t d = 0; d < S; ++d) {
    LOOM_CHECK(kernel[d] >= 1, "[", op, "] kernel ", str(kernel), " must be positive");
    // Keeps a real element in every window, so each window has a maximum to route to.
    LOOM_CHECK(2 * padding[d] <= kernel[d], "[", op, "] padding ", str(padding),
               " must be at most half the kernel ", str(kernel));
    LOOM_CHECK(x.size(int64_t(2 + d)) >= 1, "[", op, "] input ", shape_str(x.shape()),
               " has an empty spatial dim");
  }
  const ConvGeom g = make_geom<S>(op, x, kernel, stride, padding);
  if constexpr (S == 2) {
    return apply<MaxPoolOp>({x.unsqueeze(2)}, op, g)[0].squeeze(2);
  } else {
    return apply<MaxPoolOp>({x}, op, g)[0];
  }
}

}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias,
              std::array<int64_t, 2> stride, std::array<int64_t, 2> padding) {
  return conv_nd<2>("conv2d", x, weight, bias, stride, padding);
}

Tensor conv3d(const Tensor& x, const Tensor& weight, const Tensor& bias,
              std::array<int64_t, 3> stride, std::array<int64_t, 3> padding) {
  return conv_nd<3>("conv3d", x, weight, bias, stride, padding);
}

Tensor max_pool3d(const Tensor& x, std::array<int64_t, 3> kernel, std::array<int64_t, 3> stride,
                  std::array<int64_t, 3> padding) {
  return max_pool_nd<3>("max_pool3d", x, kernel, stride, padding);
}

Tensor max_pool2d(const Tensor& x, std::array<int64_t, 2> kernel, std::array<int64_t, 2> stride,
                  std::array<int64_t, 2> padding) {
  return max_pool_nd<2>("max_pool2d", x, kernel, stride, padding);
}

}  // namespace loom
