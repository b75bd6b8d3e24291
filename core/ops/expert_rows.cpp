#include "core/ops/expert_rows.h"

#include "core/autograd.h"
#include "core/ops/cuda_util.h"
#include "core/ops/index.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/cuda/moe.h"

namespace loom {

namespace {

constexpr int64_t kRowGrain = 64;  // rows per CPU task

// The row bookkeeping both devices' loops take (a plain struct of kernels/cuda/moe.h).
using Rows = kernels::cuda::ExpertRows;

Rows rows_of(const Tensor& token, const Tensor& position, int64_t n_tokens, int64_t width) {
  return {.token = token.data<int64_t>(),
          .position = position.data<int64_t>(),
          .n_tokens = n_tokens,
          .top_k = n_tokens > 0 ? position.numel() / n_tokens : 1,
          .n_rows = token.numel(),
          .width = width};
}

// The CPU twins of kernels/cuda/expert_rows.cu, same loops and summation order.
template <class T>
void combine_forward_cpu(const Rows& r, const T* base, const T* y, const T* weight, T* out) {
  kernels::cpu::parallel_for(0, r.n_tokens, kRowGrain, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      T* o = out + t * r.width;
      for (int64_t c = 0; c < r.width; ++c) o[c] = base[t * r.width + c];
      for (int64_t j = 0; j < r.top_k; ++j) {
        const int64_t row = r.position[t * r.top_k + j];
        if (row < 0) continue;
        const T w = weight[row];
        for (int64_t c = 0; c < r.width; ++c) o[c] += w * y[row * r.width + c];
      }
    }
  });
}

template <class T>
void combine_backward_cpu(const Rows& r, const T* g, const T* y, const T* weight, T* dy,
                          T* dweight) {
  kernels::cpu::parallel_for(0, r.n_rows, kRowGrain, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const T* grow = g + r.token[row] * r.width;
      T dot = 0;
      for (int64_t c = 0; c < r.width; ++c) {
        dy[row * r.width + c] = weight[row] * grow[c];
        dot += grow[c] * y[row * r.width + c];
      }
      dweight[row] = dot;
    }
  });
}

template <class T>
void gather_slot_sum_cpu(const Rows& r, const T* drows, T* dx) {
  kernels::cpu::parallel_for(0, r.n_tokens, kRowGrain, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      T* o = dx + t * r.width;
      for (int64_t c = 0; c < r.width; ++c) o[c] = 0;
      for (int64_t j = 0; j < r.top_k; ++j) {
        const int64_t row = r.position[t * r.top_k + j];
        if (row < 0) continue;
        for (int64_t c = 0; c < r.width; ++c) o[c] += drows[row * r.width + c];
      }
    }
  });
}

// dx[t] = sum of t's kept slot rows: the gradient of dispatch (not differentiable again).
class SlotSumOp final : public Op {
 public:
  explicit SlotSumOp(int64_t n_tokens) : n_tokens_(n_tokens) {}
  const char* name() const override { return "expert_slot_sum"; }
  bool saves_inputs() const override { return false; }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    const Tensor drows = in[0].contiguous();
    const Tensor &token = in[1], &position = in[2];
    Tensor dx = empty({n_tokens_, drows.size(1)}, drows.dtype(), drows.device());
    const Rows r = rows_of(token, position, n_tokens_, drows.size(1));
    if (drows.device().is_cuda()) {
      kernels::cuda::gather_slot_sum(r, drows.raw_data(), dx.raw_data(), drows.dtype());
      return {dx};
    }
    LOOM_DISPATCH_FLOAT(drows.dtype(), name(), [&] {
      gather_slot_sum_cpu(r, drows.data<scalar_t>(), dx.data<scalar_t>());
    });
    return {dx};
  }
  std::vector<Tensor> backward(const SavedContext&, const std::vector<Tensor>&) override {
    LOOM_FAIL("[dispatch_expert_rows] second derivatives are not supported");
  }

 private:
  int64_t n_tokens_;
};

class DispatchOp final : public Op {
 public:
  const char* name() const override { return "dispatch_expert_rows"; }
  bool saves_input(int index) const override { return index != 0; }  // token, position
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    return {index_select(in[0], 0, in[1])};  // grad mode is off inside forward
  }
  std::vector<Tensor> backward(const SavedContext& ctx, const std::vector<Tensor>& g) override {
    if (!ctx.needs_grad[0]) return {Tensor(), Tensor(), Tensor()};
    return {apply<SlotSumOp>({g[0], ctx.inputs[1], ctx.inputs[2]}, ctx.input_shapes[0][0])[0],
            Tensor(), Tensor()};
  }
};

// {dy, dweight} of combine from the output gradient g, y and weight (not differentiable again).
class CombineGradOp final : public Op {
 public:
  CombineGradOp(Tensor token, Tensor position) : token_(token), position_(position) {}
  const char* name() const override { return "combine_expert_rows_grad"; }
  bool saves_inputs() const override { return false; }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    const Tensor g = in[0].contiguous(), y = in[1].contiguous(), weight = in[2].contiguous();
    Tensor dy = empty(y.shape(), y.dtype(), y.device());
    Tensor dweight = empty(weight.shape(), weight.dtype(), weight.device());
    const Rows r = rows_of(token_, position_, g.size(0), g.size(1));
    if (g.device().is_cuda()) {
      kernels::cuda::combine_rows_backward(r, g.raw_data(), y.raw_data(), weight.raw_data(),
                                           dy.raw_data(), dweight.raw_data(), g.dtype(), y.dtype());
      return {dy, dweight};
    }
    LOOM_DISPATCH_FLOAT(g.dtype(), name(), [&] {
      combine_backward_cpu(r, g.data<scalar_t>(), y.data<scalar_t>(), weight.data<scalar_t>(),
                           dy.data<scalar_t>(), dweight.data<scalar_t>());
    });
    return {dy, dweight};
  }
  std::vector<Tensor> backward(const SavedContext&, const std::vector<Tensor>&) override {
    LOOM_FAIL("[combine_expert_rows] second derivatives are not supported");
  }

 private:
  Tensor token_, position_;
};

class CombineOp final : public Op {
 public:
  const char* name() const override { return "combine_expert_rows"; }
  bool saves_input(int index) const override { return index != 0; }  // y, weight, indices
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    const Tensor base = in[0].contiguous(), y = in[1].contiguous(), weight = in[2].contiguous();
    const Tensor &token = in[3], &position = in[4];
    Tensor out = empty(base.shape(), base.dtype(), base.device());
    const Rows r = rows_of(token, position, base.size(0), base.size(1));
    if (base.device().is_cuda()) {
      kernels::cuda::combine_rows_forward(r, base.raw_data(), y.raw_data(), weight.raw_data(),
                                          out.raw_data(), base.dtype(), y.dtype());
      return {out};
    }
    LOOM_DISPATCH_FLOAT(base.dtype(), name(), [&] {
      combine_forward_cpu(r, base.data<scalar_t>(), y.data<scalar_t>(), weight.data<scalar_t>(),
                          out.data<scalar_t>());
    });
    return {out};
  }
  std::vector<Tensor> backward(const SavedContext& ctx, const std::vector<Tensor>& g) override {
    const Tensor dbase = ctx.needs_grad[0] ? g[0] : Tensor();
    if (!ctx.needs_grad[1] && !ctx.needs_grad[2]) return {dbase, Tensor(), Tensor(), {}, {}};
    const std::vector<Tensor> d = apply<CombineGradOp>(
        {g[0].to(ctx.input_dtypes[0]), ctx.inputs[1], ctx.inputs[2]}, ctx.inputs[3], ctx.inputs[4]);
    return {dbase, ctx.needs_grad[1] ? d[0] : Tensor(), ctx.needs_grad[2] ? d[1] : Tensor(),
            Tensor(), Tensor()};
  }
};

// The checks both ops share: token i64 [M] and position i64 [N * k] on `device`.
void check_indices(const Tensor& token, const Tensor& position, int64_t n_tokens, int64_t rows,
                   const char* op) {
  LOOM_CHECK(token.defined() && position.defined(), "[", op, "] undefined token or position");
  LOOM_CHECK(token.dtype() == DType::i64 && position.dtype() == DType::i64, "[", op,
             "] token and position must be i64, got ", dtype_name(token.dtype()), " and ",
             dtype_name(position.dtype()));
  LOOM_CHECK(token.dim() == 1 && token.numel() == rows, "[", op, "] expected token [", rows,
             "], got ", shape_str(token.shape()));
  LOOM_CHECK(position.dim() == 1 && n_tokens > 0 && position.numel() % n_tokens == 0 &&
                 position.numel() >= n_tokens,
             "[", op, "] expected position [", n_tokens, " * k], got ",
             shape_str(position.shape()));
  LOOM_CHECK(token.is_contiguous() && position.is_contiguous(), "[", op,
             "] token and position must be contiguous");
}

}  // namespace

Tensor dispatch_expert_rows(const Tensor& x, const Tensor& token, const Tensor& position) {
  LOOM_CHECK(x.defined() && x.dim() == 2, "[dispatch_expert_rows] expected x [N, D]");
  LOOM_CHECK(is_floating(x.dtype()), "[dispatch_expert_rows] x must be floating, got ",
             dtype_name(x.dtype()));
  check_indices(token, position, x.size(0), token.defined() ? token.numel() : 0,
                "dispatch_expert_rows");
  ops::common_device({&x, &token, &position}, "dispatch_expert_rows");
  return apply<DispatchOp>({x, token, position})[0];
}

Tensor combine_expert_rows(const Tensor& base, const Tensor& y_in, const Tensor& weight,
                           const Tensor& token, const Tensor& position) {
  constexpr const char* op = "combine_expert_rows";
  LOOM_CHECK(base.defined() && y_in.defined() && weight.defined(), "[", op, "] undefined operand");
  LOOM_CHECK(base.dim() == 2 && y_in.dim() == 2 && y_in.size(1) == base.size(1), "[", op,
             "] expected base [N, D] and y [M, D], got ", shape_str(base.shape()), " and ",
             shape_str(y_in.shape()));
  LOOM_CHECK(weight.dim() == 1 && weight.numel() == y_in.size(0), "[", op, "] expected weight [",
             y_in.size(0), "], got ", shape_str(weight.shape()));
  LOOM_CHECK(
      is_floating(base.dtype()) && is_floating(y_in.dtype()) && weight.dtype() == base.dtype(), "[",
      op, "] base and weight must share one floating dtype and y be floating, got ",
      dtype_name(base.dtype()), ", ", dtype_name(weight.dtype()), " and ",
      dtype_name(y_in.dtype()));
  check_indices(token, position, base.size(0), y_in.size(0), op);
  const Device device = ops::common_device({&base, &y_in, &weight, &token, &position}, op);
  const bool mixed_ok = device.is_cuda() && base.dtype() == DType::f32 &&
                        (y_in.dtype() == DType::bf16 || y_in.dtype() == DType::f16);
  const Tensor y = y_in.dtype() == base.dtype() || mixed_ok ? y_in : y_in.to(base.dtype());
  return apply<CombineOp>({base, y, weight, token, position})[0];
}

}  // namespace loom
