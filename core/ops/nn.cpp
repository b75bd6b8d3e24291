#include "core/ops/nn.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/autocast.h"
#include "core/autograd.h"
#include "core/ops/cuda_util.h"
#include "core/ops/op_util.h"
#include "core/ops/elementwise.h"
#include "core/ops/flash_attention.h"
#include "core/ops/index.h"
#include "core/ops/linalg.h"
#include "core/ops/reduce.h"
#include "kernels/cpu/norm.h"
#include "kernels/cpu/softmax.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/cuda/kernels.h"

namespace loom {

namespace {


// CPU ops compute in f32 or f64; CUDA ops also in bf16 and f16.
void check_float(const Tensor& t, const char* op, const char* what) {
  const bool ok = t.device().is_cuda() ? is_floating(t.dtype())
                                       : (t.dtype() == DType::f32 || t.dtype() == DType::f64);
  LOOM_CHECK(ok, "[", op, "] ", what, " must be ", t.device().is_cuda() ? "floating" : "f32 or f64",
             ", got ", dtype_name(t.dtype()), " ", shape_str(t.shape()));
}

// The dtype of normalization statistics (mean, rstd): f64 for f64 inputs, f32 otherwise.
DType stats_dtype(DType x) {
  return x == DType::f64 ? DType::f64 : DType::f32;
}

void check_index_dtype(const Tensor& t, const char* op, const char* what) {
  LOOM_CHECK(t.dtype() == DType::i32 || t.dtype() == DType::i64, "[", op, "] ", what,
             " must be i32 or i64, got ", dtype_name(t.dtype()), " ", shape_str(t.shape()));
}

// Integer ids as host int64 in row-major order.
std::vector<int64_t> host_ids(const Tensor& ids) {
  return ids.to_vector<int64_t>();
}

Shape drop_last(const Shape& s) {
  return Shape(s.begin(), s.end() - 1);
}

Shape last_as_one(Shape s) {
  s.back() = 1;
  return s;
}

// ---- softmax / log_softmax ----------------------------------------------------------------------
class SoftmaxOp final : public Op {
 public:
  SoftmaxOp(int64_t dim, bool log) : dim_(dim), log_(log) {}
  const char* name() const override { return log_ ? "log_softmax" : "softmax"; }
  bool saves_inputs() const override { return false; }
  bool saves_outputs() const override { return true; }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    const int64_t last = in[0].dim() - 1;
    // The row kernel wants the normalized dim innermost.
    const Tensor x = (dim_ == last ? in[0] : in[0].transpose(dim_, last)).contiguous();
    Tensor y = empty(x.shape(), x.dtype(), x.device());
    const int64_t n = x.shape().back();
    if (n > 0 && x.device().is_cuda()) {
      kernels::cuda::softmax_rows(x.raw_data(), y.raw_data(), x.dtype(), x.numel() / n, n, log_);
    } else if (n > 0) {
      LOOM_DISPATCH_FLOAT(x.dtype(), name(), [&] {
        kernels::cpu::softmax_forward(x.data<scalar_t>(), y.data<scalar_t>(), x.numel() / n, n,
                                      log_);
      });
    }
    if (dim_ != last) y = y.transpose(dim_, last).contiguous();
    return {y};
  }
  std::vector<Tensor> backward(const SavedContext& ctx, const std::vector<Tensor>& g) override {
    const Tensor& y = ctx.outputs[0];
    if (log_) return {g[0] - exp(y) * sum(g[0], {dim_}, true)};
    return {y * (g[0] - sum(g[0] * y, {dim_}, true))};
  }

 private:
  int64_t dim_;
  bool log_;
};

Tensor softmax_impl(const Tensor& x, int64_t dim, bool log) {
  const char* op = log ? "log_softmax" : "softmax";
  check_float(x, op, "input");
  if (x.dim() == 0) {
    wrap_dim(dim, 1, op);
    return apply<SoftmaxOp>({x.reshape({1})}, int64_t(0), log)[0].reshape({});
  }
  return apply<SoftmaxOp>({x}, wrap_dim(dim, x.dim(), op), log)[0];
}

// The fused CUDA input gradient of layer_norm (mean defined) or rms_norm (mean undefined); the
// same formula as the ops-built backward below.
Tensor cuda_norm_backward(const Tensor& x_in, const Tensor& w_in, const Tensor& mean,
                          const Tensor& rstd, const Tensor& gy_in) {
  const Tensor x = x_in.contiguous(), gy = gy_in.to(x.dtype()).contiguous();
  const Tensor w = w_in.defined() ? w_in.contiguous() : Tensor();
  Tensor dx = empty(x.shape(), x.dtype(), x.device());
  const int64_t n = x.shape().back();
  kernels::cuda::norm_backward_input(x.raw_data(), w.defined() ? w.raw_data() : nullptr,
                                     mean.defined() ? mean.raw_data() : nullptr, rstd.raw_data(),
                                     gy.raw_data(), dx.raw_data(), x.dtype(), x.numel() / n, n);
  return dx;
}

// ---- layer_norm / rms_norm ----------------------------------------------------------------------
// Outputs {y, mean, rstd} (rms: {y, rstd}); the statistics are saved for backward and carry no
// gradient. The backward recomputes x_hat from them with ops; it treats them as constants, which
// is exact for first-order gradients (their dependence on x is folded into the formula) but would
// miss terms if a gradient of this backward were ever taken.
class LayerNormOp final : public Op {
 public:
  explicit LayerNormOp(double eps) : eps_(eps) {}
  const char* name() const override { return "layer_norm"; }
  bool saves_outputs() const override { return true; }
  bool output_differentiable(int index, DType) const override { return index == 0; }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    const Tensor x = in[0].contiguous();
    const Tensor w = in[1].defined() ? in[1].contiguous() : Tensor();
    const Tensor b = in[2].defined() ? in[2].contiguous() : Tensor();
    const int64_t cols = x.shape().back();
    Tensor y = empty(x.shape(), x.dtype(), x.device());
    Tensor mu = empty(drop_last(x.shape()), stats_dtype(x.dtype()), x.device());
    Tensor rstd = empty(drop_last(x.shape()), stats_dtype(x.dtype()), x.device());
    if (x.device().is_cuda()) {
      kernels::cuda::layer_norm_forward(x.raw_data(), w.defined() ? w.raw_data() : nullptr,
                                        b.defined() ? b.raw_data() : nullptr, y.raw_data(),
                                        mu.raw_data(), rstd.raw_data(), x.dtype(),
                                        x.numel() / cols, cols, eps_);
      return {y, mu, rstd};
    }
    LOOM_DISPATCH_FLOAT(x.dtype(), "layer_norm", [&] {
      kernels::cpu::layer_norm_forward(
          x.data<scalar_t>(), w.defined() ? w.data<scalar_t>() : nullptr,
          b.defined() ? b.data<scalar_t>() : nullptr, y.data<scalar_t>(), mu.data<scalar_t>(),
          rstd.data<scalar_t>(), x.numel() / cols, cols, eps_);
    });
    return {y, mu, rstd};
  }
  std::vector<Tensor> backward(const SavedContext& ctx, const std::vector<Tensor>& g) override {
    const Tensor &x = ctx.inputs[0], &w = ctx.inputs[1], &gy = g[0];
    const Shape keep = last_as_one(x.shape());
    const Shape param_shape{x.shape().back()};
    const Tensor rstd = ctx.outputs[2].reshape(keep);
    const bool fused = x.device().is_cuda();
    const bool need_xhat = ctx.needs_grad[1] || (ctx.needs_grad[0] && !fused);
    const Tensor xhat = need_xhat ? (x - ctx.outputs[1].reshape(keep)) * rstd : Tensor();
    Tensor dx, dw, db;
    if (ctx.needs_grad[0] && fused) {
      dx = cuda_norm_backward(x, w, ctx.outputs[1], ctx.outputs[2], gy);
    } else if (ctx.needs_grad[0]) {
      const Tensor gxhat = w.defined() ? gy * w : gy;
      dx = rstd * (gxhat - mean(gxhat, {-1}, true) - xhat * mean(gxhat * xhat, {-1}, true));
    }
    if (ctx.needs_grad[1]) dw = sum_to_shape(gy * xhat, param_shape);
    if (ctx.needs_grad[2]) db = sum_to_shape(gy, param_shape);
    return {dx, dw, db};
  }

 private:
  double eps_;
};

class RmsNormOp final : public Op {
 public:
  explicit RmsNormOp(double eps) : eps_(eps) {}
  const char* name() const override { return "rms_norm"; }
  bool saves_outputs() const override { return true; }
  bool output_differentiable(int index, DType) const override { return index == 0; }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    const Tensor x = in[0].contiguous();
    const Tensor w = in[1].defined() ? in[1].contiguous() : Tensor();
    const int64_t cols = x.shape().back();
    Tensor y = empty(x.shape(), x.dtype(), x.device());
    Tensor rstd = empty(drop_last(x.shape()), stats_dtype(x.dtype()), x.device());
    if (x.device().is_cuda()) {
      kernels::cuda::rms_norm_forward(x.raw_data(), w.defined() ? w.raw_data() : nullptr,
                                      y.raw_data(), rstd.raw_data(), x.dtype(), x.numel() / cols,
                                      cols, eps_);
      return {y, rstd};
    }
    LOOM_DISPATCH_FLOAT(x.dtype(), "rms_norm", [&] {
      kernels::cpu::rms_norm_forward(x.data<scalar_t>(), w.defined() ? w.data<scalar_t>() : nullptr,
                                     y.data<scalar_t>(), rstd.data<scalar_t>(), x.numel() / cols,
                                     cols, eps_);
    });
    return {y, rstd};
  }
  std::vector<Tensor> backward(const SavedContext& ctx, const std::vector<Tensor>& g) override {
    const Tensor &x = ctx.inputs[0], &w = ctx.inputs[1], &gy = g[0];
    const Tensor rstd = ctx.outputs[1].reshape(last_as_one(x.shape()));
    const bool fused = x.device().is_cuda();
    const Tensor xhat = ctx.needs_grad[1] || !fused ? x * rstd : Tensor();
    Tensor dx, dw;
    if (ctx.needs_grad[0] && fused) {
      dx = cuda_norm_backward(x, w, Tensor(), ctx.outputs[1], gy);
    } else if (ctx.needs_grad[0]) {
      const Tensor gxhat = w.defined() ? gy * w : gy;
      dx = rstd * (gxhat - xhat * mean(gxhat * xhat, {-1}, true));
    }
    if (ctx.needs_grad[1]) dw = sum_to_shape(gy * xhat, {x.shape().back()});
    return {dx, dw};
  }

 private:
  double eps_;
};

void check_norm_param(const Tensor& p, const Tensor& x, const char* op, const char* what) {
  if (!p.defined()) return;
  ops::common_device({&p, &x}, op);
  const Shape want{x.shape().back()};
  LOOM_CHECK(p.shape() == want, "[", op, "] ", what, " must have shape ", shape_str(want),
             " for input ", shape_str(x.shape()), ", got ", shape_str(p.shape()));
  LOOM_CHECK(p.dtype() == x.dtype(), "[", op, "] ", what, " dtype ", dtype_name(p.dtype()),
             " differs from input dtype ", dtype_name(x.dtype()));
}

void check_norm_input(const Tensor& x, double eps, const char* op) {
  check_float(x, op, "input");
  LOOM_CHECK(x.dim() >= 1 && x.shape().back() > 0, "[", op,
             "] normalizes the last dim, which must be non-empty; got shape ",
             shape_str(x.shape()));
  LOOM_CHECK(eps >= 0, "[", op, "] eps must be >= 0, got ", eps);
}

// ---- embedding ----------------------------------------------------------------------------------
template <class T, class I>
void gather_rows(const T* table, const I* idx, T* out, int64_t n, int64_t cols) {
  kernels::cpu::parallel_for(0, n,
                             std::max<int64_t>(1, (int64_t(1) << 14) / std::max<int64_t>(cols, 1)),
                             [&](int64_t b, int64_t e) {
                               for (int64_t i = b; i < e; ++i)
                                 std::copy(table + int64_t(idx[i]) * cols,
                                           table + int64_t(idx[i]) * cols + cols, out + i * cols);
                             });
}

// out[idx[i], :] += src[i, :]. Repeated ids make rows collide, so the split is over columns:
// each column block sums its rows in index order (race-free and deterministic).
template <class T, class I>
void scatter_add_rows(const T* src, const I* idx, T* out, int64_t n, int64_t cols) {
  kernels::cpu::parallel_for(0, cols,
                             std::max<int64_t>(64, (int64_t(1) << 14) / std::max<int64_t>(n, 1)),
                             [&](int64_t c0, int64_t c1) {
                               for (int64_t i = 0; i < n; ++i) {
                                 T* o = out + int64_t(idx[i]) * cols;
                                 const T* s = src + i * cols;
                                 for (int64_t c = c0; c < c1; ++c) o[c] += s[c];
                               }
                             });
}

Tensor embedding_backward(const Tensor& indices, const Tensor& grad, int64_t num_rows);

class EmbeddingOp final : public Op {
 public:
  const char* name() const override { return "embedding"; }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    const Tensor idx = in[0].contiguous(), table = in[1].contiguous();
    const int64_t cols = table.shape()[1];
    Shape out_shape = idx.shape();
    out_shape.push_back(cols);
    Tensor out = empty(out_shape, table.dtype(), table.device());
    if (table.device().is_cuda()) {
      kernels::cuda::index_select(table.raw_data(), out.raw_data(), table.dtype(), idx.raw_data(),
                                  idx.dtype(), 1, table.shape()[0], idx.numel(), cols);
      return {out};
    }
    LOOM_DISPATCH_FLOAT(table.dtype(), "embedding", [&] {
      using T = scalar_t;
      LOOM_DISPATCH_INDEX(idx.dtype(), "embedding", [&] {
        gather_rows(table.data<T>(), idx.data<scalar_t>(), out.data<T>(), idx.numel(), cols);
      });
    });
    return {out};
  }
  std::vector<Tensor> backward(const SavedContext& ctx, const std::vector<Tensor>& g) override {
    if (!ctx.needs_grad[1]) return {Tensor(), Tensor()};
    return {Tensor(), embedding_backward(ctx.inputs[0], g[0], ctx.input_shapes[1][0])};
  }
};

// The transpose of EmbeddingOp: scatters [..., C] rows into a zero [V, C]. Its own gradient is
// the gather again, so gradients of gradients stay exact.
class EmbeddingBackwardOp final : public Op {
 public:
  explicit EmbeddingBackwardOp(int64_t num_rows) : num_rows_(num_rows) {}
  const char* name() const override { return "embedding_backward"; }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    const Tensor idx = in[0].contiguous(), src = in[1].contiguous();
    const int64_t cols = src.shape().back();
    Tensor out = zeros({num_rows_, cols}, src.dtype(), src.device());
    if (src.device().is_cuda()) {
      kernels::cuda::index_add(out.raw_data(), src.raw_data(), src.dtype(), idx.raw_data(),
                               idx.dtype(), 1, num_rows_, idx.numel(), cols);
      return {out};
    }
    LOOM_DISPATCH_FLOAT(src.dtype(), "embedding_backward", [&] {
      using T = scalar_t;
      LOOM_DISPATCH_INDEX(idx.dtype(), "embedding_backward", [&] {
        scatter_add_rows(src.data<T>(), idx.data<scalar_t>(), out.data<T>(), idx.numel(), cols);
      });
    });
    return {out};
  }
  std::vector<Tensor> backward(const SavedContext& ctx, const std::vector<Tensor>& g) override {
    if (!ctx.needs_grad[1]) return {Tensor(), Tensor()};
    return {Tensor(), apply<EmbeddingOp>({ctx.inputs[0], g[0]})[0]};
  }

 private:
  int64_t num_rows_;
};

Tensor embedding_backward(const Tensor& indices, const Tensor& grad, int64_t num_rows) {
  return apply<EmbeddingBackwardOp>({indices, grad}, num_rows)[0];
}

// ---- picking one entry per row (cross_entropy) --------------------------------------------------
// out[i] = x[i, ids[i]] for x [N, K] and validated i64 ids [N]; the gradient scatters back.
class PickOp final : public Op {
 public:
  const char* name() const override { return "pick"; }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override;
  std::vector<Tensor> backward(const SavedContext& ctx, const std::vector<Tensor>& g) override;
};

class PickBackwardOp final : public Op {
 public:
  explicit PickBackwardOp(int64_t classes) : classes_(classes) {}
  const char* name() const override { return "pick_backward"; }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    const Tensor ids = in[0].contiguous(), g = in[1].contiguous();
    Tensor out = zeros({g.numel(), classes_}, g.dtype(), g.device());
    if (g.device().is_cuda()) return {scatter_add(out, 1, ids.unsqueeze(1), g.unsqueeze(1))};
    LOOM_DISPATCH_FLOAT(g.dtype(), "pick_backward", [&] {
      const scalar_t* pg = g.data<scalar_t>();
      scalar_t* po = out.data<scalar_t>();
      const int64_t* pi = ids.data<int64_t>();
      for (int64_t i = 0; i < g.numel(); ++i) po[i * classes_ + pi[i]] = pg[i];
    });
    return {out};
  }
  std::vector<Tensor> backward(const SavedContext& ctx, const std::vector<Tensor>& g) override {
    if (!ctx.needs_grad[1]) return {Tensor(), Tensor()};
    return {Tensor(), apply<PickOp>({g[0], ctx.inputs[0]})[0]};
  }

 private:
  int64_t classes_;
};

std::vector<Tensor> PickOp::forward(const std::vector<Tensor>& in) {
  const Tensor x = in[0].contiguous(), ids = in[1].contiguous();
  const int64_t n = x.shape()[0], k = x.shape()[1];
  if (x.device().is_cuda()) return {gather(x, 1, ids.unsqueeze(1)).squeeze(1)};
  Tensor out = empty({n}, x.dtype(), x.device());
  LOOM_DISPATCH_FLOAT(x.dtype(), "pick", [&] {
    const scalar_t* px = x.data<scalar_t>();
    scalar_t* po = out.data<scalar_t>();
    const int64_t* pi = ids.data<int64_t>();
    for (int64_t i = 0; i < n; ++i) po[i] = px[i * k + pi[i]];
  });
  return {out};
}

std::vector<Tensor> PickOp::backward(const SavedContext& ctx, const std::vector<Tensor>& g) {
  if (!ctx.needs_grad[0]) return {Tensor(), Tensor()};
  return {apply<PickBackwardOp>({ctx.inputs[1], g[0]}, ctx.input_shapes[0][1])[0], Tensor()};
}

}  // namespace

Tensor softmax(const Tensor& x, int64_t dim) {
  return softmax_impl(x, dim, false);
}
Tensor log_softmax(const Tensor& x, int64_t dim) {
  return softmax_impl(x, dim, true);
}

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  check_norm_input(x, eps, "layer_norm");
  check_norm_param(weight, x, "layer_norm", "weight");
  check_norm_param(bias, x, "layer_norm", "bias");
  return apply<LayerNormOp>({x, weight, bias}, eps)[0];
}

Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps) {
  check_norm_input(x, eps, "rms_norm");
  check_norm_param(weight, x, "rms_norm", "weight");
  return apply<RmsNormOp>({x, weight}, eps)[0];
}

Tensor embedding(const Tensor& indices, const Tensor& table) {
  ops::common_device({&indices, &table}, "embedding");
  check_index_dtype(indices, "embedding", "indices");
  check_float(table, "embedding", "table");
  LOOM_CHECK(table.dim() == 2, "[embedding] table must be [V, C], got ", shape_str(table.shape()));
  const int64_t rows = table.shape()[0];
  const std::vector<int64_t> ids = host_ids(indices);
  for (size_t i = 0; i < ids.size(); ++i) {
    LOOM_CHECK(ids[i] >= 0 && ids[i] < rows, "[embedding] index ", ids[i], " at position ", i,
               " is out of range [0, ", rows, ") for table ", shape_str(table.shape()));
  }
  return apply<EmbeddingOp>({indices, table})[0];
}

// Built on the host (ids are read there for the range check anyway), then moved to the ids' device.
Tensor one_hot(const Tensor& indices, int64_t num_classes, DType dtype) {
  check_index_dtype(indices, "one_hot", "indices");
  LOOM_CHECK(num_classes >= 1, "[one_hot] num_classes must be >= 1, got ", num_classes);
  const std::vector<int64_t> ids = host_ids(indices);
  Shape shape = indices.shape();
  shape.push_back(num_classes);
  Tensor out = zeros(shape, dtype);
  LOOM_DISPATCH_ALL(dtype, "one_hot", [&] {
    scalar_t* p = out.data<scalar_t>();
    for (size_t i = 0; i < ids.size(); ++i) {
      LOOM_CHECK(ids[i] >= 0 && ids[i] < num_classes, "[one_hot] index ", ids[i], " at position ",
                 i, " is out of range [0, ", num_classes, ")");
      p[int64_t(i) * num_classes + ids[i]] = scalar_t(1);
    }
  });
  return out.to(indices.device());
}

Tensor dropout(const Tensor& x, double p, bool training, Generator& gen) {
  check_float(x, "dropout", "input");
  LOOM_CHECK(p >= 0 && p <= 1, "[dropout] p must be in [0, 1], got ", p);
  if (!training || p == 0) return x;
  if (p == 1) return x * 0.0;
  const Tensor keep = bernoulli(x.shape(), 1 - p, gen).to(x.device());
  return where(keep, x * (1.0 / (1 - p)), zeros({}, x.dtype()));
}

Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index) {
  ops::common_device({&logits, &targets}, "cross_entropy");
  check_float(logits, "cross_entropy", "logits");
  check_index_dtype(targets, "cross_entropy", "targets");
  LOOM_CHECK(logits.dim() >= 1 && drop_last(logits.shape()) == targets.shape(),
             "[cross_entropy] logits [..., K] and targets [...] disagree: logits ",
             shape_str(logits.shape()), ", targets ", shape_str(targets.shape()));
  const int64_t k = logits.shape().back();
  const int64_t n = targets.numel();
  LOOM_CHECK(k >= 1, "[cross_entropy] logits have no classes: ", shape_str(logits.shape()));
  std::vector<int64_t> ids = host_ids(targets);
  std::vector<double> keep(ids.size(), 1.0);
  int64_t count = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] == ignore_index) {
      ids[i] = 0;
      keep[i] = 0;
      continue;
    }
    LOOM_CHECK(ids[i] >= 0 && ids[i] < k, "[cross_entropy] target ", ids[i], " at position ", i,
               " is out of range [0, ", k, ") (ignore_index is ", ignore_index, ")");
    ++count;
  }
  const Tensor logp = log_softmax(logits.reshape({n, k}), -1);
  const Tensor picked = apply<PickOp>({logp, from_vector(ids, {n}).to(logits.device())})[0];
  const Tensor weights = from_vector(keep, {n}, logits.dtype()).to(logits.device());
  // With every target ignored this is 0/0 = NaN, as in PyTorch.
  return neg(sum(picked * weights)) / double(count);
}

Tensor mse_loss(const Tensor& input, const Tensor& target) {
  ops::common_device({&input, &target}, "mse_loss");
  check_float(input, "mse_loss", "input");
  LOOM_CHECK(input.shape() == target.shape(), "[mse_loss] input ", shape_str(input.shape()),
             " and target ", shape_str(target.shape()), " must have the same shape");
  LOOM_CHECK(input.dtype() == target.dtype(), "[mse_loss] input dtype ", dtype_name(input.dtype()),
             " differs from target dtype ", dtype_name(target.dtype()));
  LOOM_CHECK(input.numel() > 0, "[mse_loss] empty input ", shape_str(input.shape()));
  return mean(square(input - target));
}

Tensor scaled_dot_product_attention(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
                                    const Tensor& mask, std::optional<double> scale) {
  const char* op = "scaled_dot_product_attention";
  const Tensor q = autocast(q_in), k = autocast(k_in), v = autocast(v_in);
  ops::common_device({&q, &k, &v, &mask}, op);
  for (const Tensor* t : {&q, &k, &v}) {
    check_float(*t, op, "q, k and v");
    LOOM_CHECK(t->dim() >= 2, "[", op, "] q, k and v must be [.., T, D]; got q ",
               shape_str(q.shape()), ", k ", shape_str(k.shape()), ", v ", shape_str(v.shape()));
  }
  LOOM_CHECK(q.dtype() == k.dtype() && q.dtype() == v.dtype(), "[", op,
             "] q, k and v dtypes differ: ", dtype_name(q.dtype()), ", ", dtype_name(k.dtype()),
             ", ", dtype_name(v.dtype()));
  const int64_t d = q.shape().back();
  LOOM_CHECK(k.shape().back() == d && k.shape()[k.dim() - 2] == v.shape()[v.dim() - 2], "[", op,
             "] expects q [.., Tq, D], k [.., Tk, D], v [.., Tk, Dv]; got q ", shape_str(q.shape()),
             ", k ", shape_str(k.shape()), ", v ", shape_str(v.shape()));
  const double s = scale.value_or(1.0 / std::sqrt(double(d)));
  if (ops::flash_attention_applies(q, k, v, mask)) return ops::flash_attention(q, k, v, s);
  Tensor scores = matmul(q, k.transpose(-2, -1)) * s;
  if (mask.defined()) {
    LOOM_CHECK(mask.dtype() == DType::boolean, "[", op, "] mask must be bool, got ",
               dtype_name(mask.dtype()));
    LOOM_CHECK(broadcast_shapes(mask.shape(), scores.shape(), op) == scores.shape(), "[", op,
               "] mask ", shape_str(mask.shape()), " does not broadcast to the scores ",
               shape_str(scores.shape()));
    scores = where(mask, scores, full({}, -std::numeric_limits<double>::infinity()));
  }
  return matmul(softmax(scores, -1), v);
}

}  // namespace loom
