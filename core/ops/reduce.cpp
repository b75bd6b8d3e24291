#include "core/ops/reduce.h"

#include <algorithm>
#include <array>
#include <optional>

#include "core/autograd.h"
#include "core/ops/elementwise.h"
#include "kernels/cpu/reduce.h"
#include "kernels/cuda/kernels.h"

namespace loom {

namespace {

struct ReducePlan {
  std::vector<bool> reduced;  // per input dim
  Shape keep_shape;           // reduced dims kept as 1
  Shape out_shape;            // per keepdim
  int64_t rows = 1, n = 1;
};

ReducePlan plan_reduce(const Shape& shape, const Dims& dims, bool keepdim, const char* op) {
  ReducePlan p;
  const int64_t nd = int64_t(shape.size());
  p.reduced.assign(size_t(nd), dims.empty());
  for (int64_t d : dims) {
    const int64_t w = wrap_dim(d, nd, op);
    LOOM_CHECK(!p.reduced[w], "[", op, "] dim ", d, " repeated");
    p.reduced[w] = true;
  }
  for (int64_t i = 0; i < nd; ++i) {
    p.keep_shape.push_back(p.reduced[i] ? 1 : shape[i]);
    if (p.reduced[i]) {
      p.n *= shape[i];
    } else {
      p.rows *= shape[i];
    }
    if (!p.reduced[i] || keepdim) p.out_shape.push_back(p.reduced[i] ? 1 : shape[i]);
  }
  return p;
}

// x permuted so kept dims come first and reduced dims last, made contiguous: [rows, n].
Tensor rows_layout(const Tensor& x, const ReducePlan& p) {
  std::vector<int64_t> perm;
  for (int64_t i = 0; i < x.dim(); ++i)
    if (!p.reduced[i]) perm.push_back(i);
  for (int64_t i = 0; i < x.dim(); ++i)
    if (p.reduced[i]) perm.push_back(i);
  return x.permute(perm).contiguous();
}

// For a reduction over one run of consecutive dims followed by kept dims ([O, R, C] summed over R:
// bias gradients, modulation gradients summed over tokens), the extents {O, R, C}, which the CUDA
// column kernel reduces without a transposing copy; nullopt for other patterns.
std::optional<std::array<int64_t, 3>> column_reduction(const Shape& shape, const ReducePlan& p) {
  const size_t nd = shape.size();
  size_t first = 0;
  while (first < nd && !p.reduced[first]) ++first;
  size_t last = first;
  while (last < nd && p.reduced[last]) ++last;
  if (first == nd || last == nd) return std::nullopt;  // nothing reduced, or reduced dims last
  for (size_t i = last; i < nd; ++i)
    if (p.reduced[i]) return std::nullopt;
  std::array<int64_t, 3> e{1, 1, 1};
  for (size_t i = 0; i < nd; ++i) e[i < first ? 0 : (i < last ? 1 : 2)] *= shape[i];
  if (e[0] > 65535) return std::nullopt;
  return e;
}

kernels::cuda::RowReduce cuda_kind(kernels::cpu::RowReduce kind) {
  switch (kind) {
    case kernels::cpu::RowReduce::sum:
      return kernels::cuda::RowReduce::sum;
    case kernels::cpu::RowReduce::max:
      return kernels::cuda::RowReduce::max;
    case kernels::cpu::RowReduce::min:
      return kernels::cuda::RowReduce::min;
  }
  return kernels::cuda::RowReduce::sum;
}

class ReduceOp final : public Op {
 public:
  ReduceOp(Dims dims, bool keepdim, kernels::cpu::RowReduce kind, const char* name)
      : dims_(std::move(dims)), keepdim_(keepdim), kind_(kind), name_(name) {}
  const char* name() const override { return name_; }
  bool saves_inputs() const override { return kind_ != kernels::cpu::RowReduce::sum; }
  bool saves_outputs() const override { return kind_ != kernels::cpu::RowReduce::sum; }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    const Tensor& x = in[0];
    const ReducePlan p = plan_reduce(x.shape(), dims_, keepdim_, name_);
    if (kind_ != kernels::cpu::RowReduce::sum) {
      LOOM_CHECK(p.n > 0, "[", name_, "] reduction over an empty dim of shape ",
                 shape_str(x.shape()));
    }
    if (x.device().is_cuda() && x.is_contiguous()) {
      if (const auto e = column_reduction(x.shape(), p)) {
        Tensor out = empty(p.out_shape, x.dtype(), x.device());
        kernels::cuda::reduce_cols(x.raw_data(), out.raw_data(), x.dtype(), (*e)[0], (*e)[1],
                                   (*e)[2], cuda_kind(kind_));
        return {out};
      }
    }
    const Tensor xr = rows_layout(x, p);
    Tensor out = empty(p.out_shape, x.dtype(), x.device());
    if (x.device().is_cuda()) {
      kernels::cuda::reduce_rows(xr.raw_data(), out.raw_data(), x.dtype(), p.rows, p.n,
                                 cuda_kind(kind_));
      return {out};
    }
    // Integer inputs (counts, masks as i64) reduce too; their results carry no gradient.
    auto run = [&]<class T>(T) {
      kernels::cpu::reduce_rows(xr.data<T>(), out.data<T>(), p.rows, p.n, kind_);
    };
    switch (x.dtype()) {
      case DType::f32:
        run(float{});
        break;
      case DType::f64:
        run(double{});
        break;
      case DType::i32:
        run(int32_t{});
        break;
      case DType::i64:
        run(int64_t{});
        break;
      default:
        LOOM_FAIL("[", name_, "] dtype ", dtype_name(x.dtype()), " is not supported on the CPU");
    }
    return {out};
  }
  std::vector<Tensor> backward(const SavedContext& ctx, const std::vector<Tensor>& g) override {
    const Shape& in_shape = ctx.input_shapes[0];
    const ReducePlan p = plan_reduce(in_shape, dims_, keepdim_, name_);
    const Tensor gk = g[0].reshape(p.keep_shape);
    if (kind_ == kernels::cpu::RowReduce::sum) return {gk.expand(in_shape)};
    // max/min: split the gradient evenly between the elements equal to the extremum.
    const Tensor hit = eq(ctx.inputs[0], ctx.outputs[0].reshape(p.keep_shape));
    const Tensor mask = where(hit, ones({}, gk.dtype()), zeros({}, gk.dtype()));
    const Tensor count = sum(mask, dims_, true);
    return {mask * (gk / count)};
  }

 private:
  Dims dims_;
  bool keepdim_;
  kernels::cpu::RowReduce kind_;
  const char* name_;
};

Tensor reduce(const Tensor& x, const Dims& dims, bool keepdim, kernels::cpu::RowReduce kind,
              const char* name) {
  return apply<ReduceOp>({x}, dims, keepdim, kind, name)[0];
}

int64_t reduced_count(const Shape& shape, const Dims& dims) {
  if (dims.empty()) return numel_of(shape);
  int64_t n = 1;
  for (int64_t d : dims) n *= shape[wrap_dim(d, int64_t(shape.size()), "reduce")];
  return n;
}

}  // namespace

Tensor sum(const Tensor& x, const Dims& dims, bool keepdim) {
  return reduce(x, dims, keepdim, kernels::cpu::RowReduce::sum, "sum");
}

Tensor mean(const Tensor& x, const Dims& dims, bool keepdim) {
  const int64_t n = reduced_count(x.shape(), dims);
  LOOM_CHECK(n > 0, "[mean] mean over zero elements of shape ", shape_str(x.shape()));
  return sum(x, dims, keepdim) / double(n);
}

Tensor amax(const Tensor& x, const Dims& dims, bool keepdim) {
  return reduce(x, dims, keepdim, kernels::cpu::RowReduce::max, "amax");
}

Tensor amin(const Tensor& x, const Dims& dims, bool keepdim) {
  return reduce(x, dims, keepdim, kernels::cpu::RowReduce::min, "amin");
}

Tensor argmax(const Tensor& x, int64_t dim, bool keepdim) {
  const ReducePlan p = plan_reduce(x.shape(), {dim}, keepdim, "argmax");
  LOOM_CHECK(p.n > 0, "[argmax] empty dim in shape ", shape_str(x.shape()));
  NoGradGuard guard;
  const Tensor xr = rows_layout(x, p);
  Tensor out = empty(p.out_shape, DType::i64, x.device());
  if (x.device().is_cuda()) {
    kernels::cuda::arg_reduce_rows(xr.raw_data(), out.data<int64_t>(), x.dtype(), p.rows, p.n,
                                   true);
    return out;
  }
  LOOM_DISPATCH_FLOAT(x.dtype(), "argmax", [&] {
    kernels::cpu::arg_reduce_rows(xr.data<scalar_t>(), out.data<int64_t>(), p.rows, p.n, true);
  });
  return out;
}

Tensor var(const Tensor& x, const Dims& dims, bool keepdim, int64_t correction) {
  const int64_t n = reduced_count(x.shape(), dims);
  LOOM_CHECK(n - correction > 0, "[var] ", n, " elements with correction ", correction);
  const Tensor centered = x - mean(x, dims, true);
  return sum(square(centered), dims, keepdim) / double(n - correction);
}

Tensor logsumexp(const Tensor& x, const Dims& dims, bool keepdim) {
  const Tensor m = amax(x, dims, true).detach();
  Tensor out = log(sum(exp(x - m), dims, true)) + m;
  if (keepdim) return out;
  const ReducePlan p = plan_reduce(x.shape(), dims, false, "logsumexp");
  return out.reshape(p.out_shape);
}

Tensor norm(const Tensor& x, double p, const Dims& dims, bool keepdim) {
  LOOM_CHECK(p > 0, "[norm] p must be > 0, got ", p);
  if (p == 2) return sqrt(sum(square(x), dims, keepdim));
  if (p == 1) return sum(abs(x), dims, keepdim);
  return pow(sum(pow(abs(x), p), dims, keepdim), 1.0 / p);
}

Tensor sum_to_shape(const Tensor& g, const Shape& shape) {
  if (g.shape() == shape) return g;
  const int64_t lead = g.dim() - int64_t(shape.size());
  LOOM_CHECK(lead >= 0, "[sum_to_shape] cannot sum ", shape_str(g.shape()), " to ",
             shape_str(shape));
  Dims dims;
  for (int64_t i = 0; i < g.dim(); ++i) {
    if (i < lead || (shape[i - lead] == 1 && g.shape()[i] != 1)) dims.push_back(i);
  }
  Tensor s = dims.empty() ? g : sum(g, dims, true);
  return s.reshape(shape);
}

}  // namespace loom
