#include "core/ops/index.h"

#include <algorithm>
#include <numeric>

#include "core/autograd.h"
#include "core/ops/cuda_util.h"
#include "core/ops/op_util.h"
#include "kernels/cpu/index.h"
#include "kernels/cuda/kernels.h"

namespace loom {

namespace {

using ops::dispatch_arith;

void check_index_tensor(const Tensor& index, const char* op) {
  LOOM_CHECK(index.defined(), "[", op, "] index tensor is undefined");
  LOOM_CHECK(index.dtype() == DType::i32 || index.dtype() == DType::i64, "[", op,
             "] index dtype must be i32 or i64, got ", dtype_name(index.dtype()));
}

// The data-moving kernels only copy elements, so they run on an unsigned type of the same size.
template <class F>
void dispatch_bytes(DType t, F&& f) {
  switch (dtype_size(t)) {
    case 1:
      f(uint8_t{});
      return;
    case 2:
      f(uint16_t{});
      return;
    case 4:
      f(uint32_t{});
      return;
    case 8:
      f(uint64_t{});
      return;
    default:
      LOOM_ASSERT(false, "unexpected element size ", dtype_size(t));
  }
}

template <class T>
T* ptr(const Tensor& t) {
  return static_cast<T*>(t.raw_data());
}

Shape unravel(int64_t flat, const Shape& shape) {
  Shape pos(shape.size());
  for (int64_t d = int64_t(shape.size()) - 1; d >= 0; --d) {
    pos[d] = flat % shape[d];
    flat /= shape[d];
  }
  return pos;
}

// `index` must be contiguous; names the first offending index and where it sits. A CUDA index is
// not copied to the host for this (it would stall the device at every index op): the CUDA kernels
// check their indices and report a bad one at the next synchronization (kernels/cuda/index_fault.h).
void check_range(const Tensor& index, int64_t size, int64_t dim, const Shape& x_shape,
                 const char* op) {
  if (index.device().is_cuda()) return;
  LOOM_DISPATCH_INDEX(index.dtype(), op, [&] {
    const scalar_t* p = index.data<scalar_t>();
    const int64_t bad = kernels::cpu::first_out_of_range(p, index.numel(), size);
    if (bad < 0) return;
    LOOM_FAIL("[", op, "] index ", int64_t(p[bad]), " at position ",
              shape_str(unravel(bad, index.shape())), " is out of range [0, ", size, ") for dim ",
              dim, " of input shape ", shape_str(x_shape));
  });
}

struct AroundDim {
  int64_t outer = 1, n = 1, inner = 1;
};

AroundDim around(const Shape& s, int64_t dim) {
  AroundDim a;
  for (int64_t d = 0; d < int64_t(s.size()); ++d) {
    if (d < dim) a.outer *= s[d];
    if (d > dim) a.inner *= s[d];
  }
  a.n = s[dim];
  return a;
}

// Zero-pads t at the end of each dim up to `shape`, through cat so that it stays differentiable.
Tensor pad_end(Tensor t, const Shape& shape) {
  for (int64_t d = 0; d < t.dim(); ++d) {
    if (t.size(d) == shape[d]) continue;
    Shape zshape = t.shape();
    zshape[d] = shape[d] - t.size(d);
    t = cat({t, zeros(zshape, t.dtype(), t.device())}, d);
  }
  return t;
}

// ---- cat --------------------------------------------------------------------------------------
class CatOp final : public Op {
 public:
  explicit CatOp(int64_t dim) : dim_(dim) {}
  const char* name() const override { return "cat"; }
  bool saves_inputs() const override { return false; }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    Shape shape = in[0].shape();
    shape[dim_] = 0;
    for (const Tensor& x : in) shape[dim_] += x.size(dim_);
    Tensor out = empty(shape, in[0].dtype(), in[0].device());
    int64_t offset = 0;
    for (const Tensor& x : in) {
      const int64_t len = x.size(dim_);
      if (len > 0 && x.numel() > 0) copy_into(out.narrow(dim_, offset, len), x);
      offset += len;
    }
    return {out};
  }
  std::vector<Tensor> backward(const SavedContext& ctx, const std::vector<Tensor>& g) override {
    std::vector<Tensor> grads(ctx.input_shapes.size());
    int64_t offset = 0;
    for (size_t i = 0; i < grads.size(); ++i) {
      const int64_t len = ctx.input_shapes[i][dim_];
      if (ctx.needs_grad[i]) grads[i] = g[0].narrow(dim_, offset, len);
      offset += len;
    }
    return grads;
  }

 private:
  int64_t dim_;
};

// ---- unbind -----------------------------------------------------------------------------------
// An uninitialized tensor of this shape whose memory is laid out like `strides` when they describe
// a dense permutation of the dims (a permuted view of a contiguous tensor), else contiguous. A
// gradient built in its input's layout lets the permutes and views before it stay free.
Tensor empty_in_layout(const Shape& shape, const Strides& strides, DType dtype, Device device) {
  const size_t nd = shape.size();
  std::vector<int64_t> order(nd);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return strides[a] > strides[b]; });
  int64_t expect = 1;
  for (size_t i = nd; i-- > 0;) {
    const int64_t d = order[i];
    if (shape[d] == 1) continue;
    if (strides[d] != expect) return empty(shape, dtype, device);
    expect *= shape[d];
  }
  Shape dense(nd);
  std::vector<int64_t> inverse(nd);
  for (size_t i = 0; i < nd; ++i) {
    dense[i] = shape[order[i]];
    inverse[order[i]] = int64_t(i);
  }
  return empty(dense, dtype, device).permute(inverse);
}

class UnbindOp final : public Op {
 public:
  explicit UnbindOp(int64_t dim) : dim_(dim) {}
  const char* name() const override { return "unbind"; }
  bool saves_inputs() const override { return false; }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    input_strides_ = in[0].strides();
    std::vector<Tensor> out;
    for (int64_t i = 0; i < in[0].size(dim_); ++i) out.push_back(in[0].select(dim_, i));
    return out;
  }
  // The slices' gradients copied into one tensor laid out like the input — or, when they already
  // are the slices of such a tensor (flash attention writes dq, dk, dv into one packed buffer),
  // that tensor itself, without a copy.
  std::vector<Tensor> backward(const SavedContext& ctx, const std::vector<Tensor>& g) override {
    if (Tensor whole = packed_slices(ctx.input_shapes[0], g); whole.defined()) return {whole};
    Tensor out = empty_in_layout(ctx.input_shapes[0], input_strides_, g[0].dtype(), g[0].device());
    for (size_t i = 0; i < g.size(); ++i) copy_into(out.select(dim_, int64_t(i)), g[i]);
    return {out};
  }

 private:
  // A view of g's common storage with the input's shape and strides when g[i] is exactly its
  // slice i along dim_ for every i; else undefined.
  Tensor packed_slices(const Shape& shape, const std::vector<Tensor>& g) const {
    Strides slice_strides = input_strides_;
    slice_strides.erase(slice_strides.begin() + dim_);
    for (size_t i = 0; i < g.size(); ++i) {
      const Tensor& gi = g[i];
      if (!gi.defined() || gi.storage() != g[0].storage() || gi.dtype() != g[0].dtype() ||
          gi.strides() != slice_strides ||
          gi.offset() != g[0].offset() + int64_t(i) * input_strides_[size_t(dim_)])
        return Tensor();
    }
    auto impl = std::make_shared<TensorImpl>();
    impl->storage = g[0].storage();
    impl->shape = shape;
    impl->strides = input_strides_;
    impl->offset = g[0].offset();
    impl->dtype = g[0].dtype();
    return Tensor(std::move(impl));
  }

  int64_t dim_;
  Strides input_strides_;
};

// ---- index_select / index_add -----------------------------------------------------------------
class IndexSelectOp final : public Op {
 public:
  explicit IndexSelectOp(int64_t dim) : dim_(dim) {}
  const char* name() const override { return "index_select"; }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    const Tensor x = in[0].contiguous(), index = in[1].contiguous();
    check_range(index, x.size(dim_), dim_, x.shape(), "index_select");
    Shape shape = x.shape();
    shape[dim_] = index.numel();
    Tensor out = empty(shape, x.dtype(), x.device());
    const AroundDim a = around(x.shape(), dim_);
    if (x.device().is_cuda()) {
      kernels::cuda::index_select(x.raw_data(), out.raw_data(), x.dtype(), index.raw_data(),
                                  index.dtype(), a.outer, a.n, index.numel(), a.inner);
      return {out};
    }
    dispatch_bytes(x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      LOOM_DISPATCH_INDEX(index.dtype(), "index_select", [&] {
        kernels::cpu::index_select(ptr<T>(x), ptr<T>(out), index.data<scalar_t>(), a.outer, a.n,
                                   index.numel(), a.inner);
      });
    });
    return {out};
  }
  std::vector<Tensor> backward(const SavedContext& ctx, const std::vector<Tensor>& g) override {
    if (!ctx.needs_grad[0]) return {Tensor(), Tensor()};
    const Tensor z = zeros(ctx.input_shapes[0], g[0].dtype(), g[0].device());
    return {index_add(z, dim_, ctx.inputs[1], g[0]), Tensor()};
  }

 private:
  int64_t dim_;
};

class IndexAddOp final : public Op {
 public:
  explicit IndexAddOp(int64_t dim) : dim_(dim) {}
  const char* name() const override { return "index_add"; }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    const Tensor &x = in[0], index = in[1].contiguous(), src = in[2].contiguous();
    check_range(index, x.size(dim_), dim_, x.shape(), "index_add");
    Tensor out = empty(x.shape(), x.dtype(), x.device());
    copy_into(out, x);
    const AroundDim a = around(x.shape(), dim_);
    if (x.device().is_cuda()) {
      kernels::cuda::index_add(out.raw_data(), src.raw_data(), x.dtype(), index.raw_data(),
                               index.dtype(), a.outer, a.n, index.numel(), a.inner);
      return {out};
    }
    dispatch_arith(x.dtype(), false, "index_add", [&](auto tag) {
      using T = decltype(tag);
      LOOM_DISPATCH_INDEX(index.dtype(), "index_add", [&] {
        kernels::cpu::index_add(out.data<T>(), src.data<T>(), index.data<scalar_t>(), a.outer, a.n,
                                index.numel(), a.inner);
      });
    });
    return {out};
  }
  std::vector<Tensor> backward(const SavedContext& ctx, const std::vector<Tensor>& g) override {
    return {ctx.needs_grad[0] ? g[0] : Tensor(), Tensor(),
            ctx.needs_grad[2] ? index_select(g[0], dim_, ctx.inputs[1]) : Tensor()};
  }

 private:
  int64_t dim_;
};

// ---- gather / scatter_add ---------------------------------------------------------------------
class GatherOp final : public Op {
 public:
  explicit GatherOp(int64_t dim) : dim_(dim) {}
  const char* name() const override { return "gather"; }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    const Tensor &x = in[0], index = in[1].contiguous();
    check_range(index, x.size(dim_), dim_, x.shape(), "gather");
    Tensor out = empty(index.shape(), x.dtype(), x.device());
    if (x.device().is_cuda()) {
      kernels::cuda::gather(ops::iter_shape(index.shape(), "gather"), int(dim_), x.size(dim_),
                            ops::operand(x, x.shape()), ops::operand(index, index.shape()),
                            ops::operand(out, index.shape()));
      return {out};
    }
    dispatch_bytes(x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      LOOM_DISPATCH_INDEX(index.dtype(), "gather", [&] {
        kernels::cpu::gather(int(index.dim()), index.shape().data(), int(dim_), ptr<T>(x),
                             x.strides().data(), index.data<scalar_t>(), index.strides().data(),
                             ptr<T>(out), out.strides().data());
      });
    });
    return {out};
  }
  std::vector<Tensor> backward(const SavedContext& ctx, const std::vector<Tensor>& g) override {
    if (!ctx.needs_grad[0]) return {Tensor(), Tensor()};
    const Tensor z = zeros(ctx.input_shapes[0], g[0].dtype(), g[0].device());
    return {scatter_add(z, dim_, ctx.inputs[1], g[0]), Tensor()};
  }

 private:
  int64_t dim_;
};

class ScatterAddOp final : public Op {
 public:
  explicit ScatterAddOp(int64_t dim) : dim_(dim) {}
  const char* name() const override { return "scatter_add"; }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    const Tensor &x = in[0], index = in[1].contiguous(), &src = in[2];
    check_range(index, x.size(dim_), dim_, x.shape(), "scatter_add");
    Tensor out = empty(x.shape(), x.dtype(), x.device());
    copy_into(out, x);
    if (x.device().is_cuda()) {
      kernels::cuda::scatter_add(ops::iter_shape(index.shape(), "scatter_add"), int(dim_),
                                 x.size(dim_), ops::operand(out, out.shape()), ops::operand(index, index.shape()),
                                 ops::operand(src, src.shape()));
      return {out};
    }
    dispatch_arith(x.dtype(), false, "scatter_add", [&](auto tag) {
      using T = decltype(tag);
      LOOM_DISPATCH_INDEX(index.dtype(), "scatter_add", [&] {
        kernels::cpu::scatter_add(int(index.dim()), index.shape().data(), int(dim_), out.data<T>(),
                                  out.strides().data(), index.data<scalar_t>(),
                                  index.strides().data(), src.data<T>(), src.strides().data());
      });
    });
    return {out};
  }
  std::vector<Tensor> backward(const SavedContext& ctx, const std::vector<Tensor>& g) override {
    Tensor gsrc;
    if (ctx.needs_grad[2]) {
      // Elements of src outside the index's extent are never read, so their gradient is zero.
      gsrc = pad_end(gather(g[0], dim_, ctx.inputs[1]), ctx.input_shapes[2]);
    }
    return {ctx.needs_grad[0] ? g[0] : Tensor(), Tensor(), gsrc};
  }

 private:
  int64_t dim_;
};

// ---- topk -------------------------------------------------------------------------------------
class TopKOp final : public Op {
 public:
  TopKOp(int64_t k, int64_t dim, bool largest) : k_(k), dim_(dim), largest_(largest) {}
  const char* name() const override { return "topk"; }
  bool saves_inputs() const override { return false; }
  bool saves_outputs() const override { return true; }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    const Tensor& x = in[0];
    Shape shape = x.shape();
    shape[dim_] = k_;
    Tensor values = empty(shape, x.dtype(), x.device());
    Tensor indices = empty(shape, DType::i64, x.device());
    if (x.device().is_cuda()) return cuda_topk(x);
    dispatch_arith(x.dtype(), false, "topk", [&](auto tag) {
      using T = decltype(tag);
      kernels::cpu::topk(int(x.dim()), x.shape().data(), int(dim_), x.data<T>(), x.strides().data(),
                         k_, largest_, values.data<T>(), values.strides().data(),
                         indices.data<int64_t>(), indices.strides().data());
    });
    return {values, indices};
  }
  std::vector<Tensor> backward(const SavedContext& ctx, const std::vector<Tensor>& g) override {
    const Tensor z = zeros(ctx.input_shapes[0], g[0].dtype(), g[0].device());
    return {scatter_add(z, dim_, ctx.outputs[1], g[0])};
  }

 private:
  // The row kernel wants the ranked dim innermost and contiguous.
  std::vector<Tensor> cuda_topk(const Tensor& x_in) const {
    const int64_t last = x_in.dim() - 1;
    const Tensor x = (dim_ == last ? x_in : x_in.transpose(dim_, last)).contiguous();
    Shape shape = x.shape();
    shape.back() = k_;
    Tensor values = empty(shape, x.dtype(), x.device());
    Tensor indices = empty(shape, DType::i64, x.device());
    const int64_t n = x.shape().back();
    kernels::cuda::topk_rows(x.raw_data(), values.raw_data(), indices.data<int64_t>(), x.dtype(),
                             n > 0 ? x.numel() / n : 0, n, k_, largest_);
    if (dim_ == last) return {values, indices};
    return {values.transpose(dim_, last).contiguous(), indices.transpose(dim_, last).contiguous()};
  }

  int64_t k_, dim_;
  bool largest_;
};

// Shared argument checks of the ops that take (x, dim, index[, src]).
int64_t check_indexed(const Tensor& x, int64_t dim, const Tensor& index, const char* op) {
  LOOM_CHECK(x.defined(), "[", op, "] input tensor is undefined");
  check_index_tensor(index, op);
  ops::common_device({&x, &index}, op);
  LOOM_CHECK(x.dim() >= 1, "[", op, "] input must have at least one dim, got a zero-dim tensor");
  return wrap_dim(dim, x.dim(), op);
}

void check_src(const Tensor& x, const Tensor& src, const char* op) {
  LOOM_CHECK(src.defined(), "[", op, "] src tensor is undefined");
  ops::common_device({&x, &src}, op);
  LOOM_CHECK(src.dtype() == x.dtype(), "[", op, "] src dtype ", dtype_name(src.dtype()),
             " differs from input dtype ", dtype_name(x.dtype()));
}

}  // namespace

Tensor cat(const std::vector<Tensor>& xs, int64_t dim) {
  LOOM_CHECK(!xs.empty(), "[cat] needs at least one tensor");
  for (size_t i = 0; i < xs.size(); ++i) {
    LOOM_CHECK(xs[i].defined(), "[cat] tensor ", i, " is undefined");
    LOOM_CHECK(xs[i].device() == xs[0].device(), "[cat] tensor ", i, " is on ",
               xs[i].device().str(), " but tensor 0 is on ", xs[0].device().str());
  }
  const Tensor& x0 = xs[0];
  LOOM_CHECK(x0.dim() >= 1, "[cat] zero-dim tensors cannot be concatenated (use stack)");
  const int64_t d = wrap_dim(dim, x0.dim(), "cat");
  for (size_t i = 1; i < xs.size(); ++i) {
    const Tensor& x = xs[i];
    LOOM_CHECK(x.dtype() == x0.dtype(), "[cat] tensor ", i, " has dtype ", dtype_name(x.dtype()),
               " but tensor 0 has ", dtype_name(x0.dtype()));
    bool match = x.dim() == x0.dim();
    for (int64_t k = 0; match && k < x.dim(); ++k) match = k == d || x.size(k) == x0.size(k);
    LOOM_CHECK(match, "[cat] tensor ", i, " has shape ", shape_str(x.shape()),
               " but tensor 0 has shape ", shape_str(x0.shape()), "; all dims except dim ", d,
               " must match");
  }
  return apply<CatOp>(xs, d)[0];
}

Tensor stack(const std::vector<Tensor>& xs, int64_t dim) {
  LOOM_CHECK(!xs.empty(), "[stack] needs at least one tensor");
  for (size_t i = 0; i < xs.size(); ++i) {
    LOOM_CHECK(xs[i].defined(), "[stack] tensor ", i, " is undefined");
    LOOM_CHECK(xs[i].shape() == xs[0].shape(), "[stack] tensor ", i, " has shape ",
               shape_str(xs[i].shape()), " but tensor 0 has shape ", shape_str(xs[0].shape()),
               "; stack needs equal shapes");
  }
  const int64_t d = wrap_dim(dim, xs[0].dim() + 1, "stack");
  std::vector<Tensor> parts;
  parts.reserve(xs.size());
  for (const Tensor& x : xs) parts.push_back(x.unsqueeze(d));
  return cat(parts, d);
}

std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim) {
  LOOM_CHECK(x.dim() >= 1, "[split] cannot split a zero-dim tensor");
  const int64_t d = wrap_dim(dim, x.dim(), "split");
  int64_t total = 0;
  for (int64_t s : sizes) {
    LOOM_CHECK(s >= 0, "[split] negative size ", s, " in sizes ", shape_str(sizes));
    total += s;
  }
  LOOM_CHECK(total == x.size(d), "[split] sizes ", shape_str(sizes), " sum to ", total, " but dim ",
             d, " of shape ", shape_str(x.shape()), " has size ", x.size(d));
  std::vector<Tensor> pieces;
  pieces.reserve(sizes.size());
  int64_t offset = 0;
  for (int64_t s : sizes) {
    pieces.push_back(x.slice(d, offset, offset + s));
    offset += s;
  }
  return pieces;
}

std::vector<Tensor> unbind(const Tensor& x, int64_t dim) {
  LOOM_CHECK(x.dim() >= 1, "[unbind] cannot unbind a zero-dim tensor");
  const int64_t d = wrap_dim(dim, x.dim(), "unbind");
  LOOM_CHECK(x.size(d) >= 1, "[unbind] dim ", d, " of shape ", shape_str(x.shape()), " is empty");
  return apply<UnbindOp>({x}, d);
}

std::vector<Tensor> chunk(const Tensor& x, int64_t n, int64_t dim) {
  LOOM_CHECK(n >= 1, "[chunk] number of chunks must be >= 1, got ", n);
  LOOM_CHECK(x.dim() >= 1, "[chunk] cannot chunk a zero-dim tensor");
  const int64_t d = wrap_dim(dim, x.dim(), "chunk");
  const int64_t size = x.size(d);
  // An empty dim still yields n (empty) pieces; otherwise every piece but the last has
  // ceil(size / n) elements, which can leave fewer than n pieces.
  if (size == 0) return split(x, std::vector<int64_t>(size_t(n), 0), d);
  const int64_t step = (size + n - 1) / n;
  std::vector<int64_t> sizes;
  for (int64_t offset = 0; offset < size; offset += step) {
    sizes.push_back(std::min(step, size - offset));
  }
  return split(x, sizes, d);
}

Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index) {
  const int64_t d = check_indexed(x, dim, index, "index_select");
  LOOM_CHECK(index.dim() == 1, "[index_select] index must be 1-D, got shape ",
             shape_str(index.shape()));
  return apply<IndexSelectOp>({x, index}, d)[0];
}

Tensor gather(const Tensor& x, int64_t dim, const Tensor& index) {
  const int64_t d = check_indexed(x, dim, index, "gather");
  LOOM_CHECK(index.dim() == x.dim(), "[gather] index shape ", shape_str(index.shape()),
             " must have as many dims as input shape ", shape_str(x.shape()));
  for (int64_t k = 0; k < x.dim(); ++k) {
    LOOM_CHECK(k == d || index.size(k) <= x.size(k), "[gather] index shape ",
               shape_str(index.shape()), " exceeds input shape ", shape_str(x.shape()), " at dim ",
               k, " (only the gathered dim ", d, " may be larger)");
  }
  return apply<GatherOp>({x, index}, d)[0];
}

Tensor scatter_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src) {
  const int64_t d = check_indexed(x, dim, index, "scatter_add");
  check_src(x, src, "scatter_add");
  LOOM_CHECK(index.dim() == x.dim() && src.dim() == x.dim(), "[scatter_add] input ",
             shape_str(x.shape()), ", index ", shape_str(index.shape()), " and src ",
             shape_str(src.shape()), " must have the same number of dims");
  for (int64_t k = 0; k < x.dim(); ++k) {
    LOOM_CHECK(index.size(k) <= src.size(k) && (k == d || index.size(k) <= x.size(k)),
               "[scatter_add] index shape ", shape_str(index.shape()), " exceeds src shape ",
               shape_str(src.shape()), " or input shape ", shape_str(x.shape()), " at dim ", k,
               " (only the scattered dim ", d, " may exceed the input)");
  }
  return apply<ScatterAddOp>({x, index, src}, d)[0];
}

Tensor index_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src) {
  const int64_t d = check_indexed(x, dim, index, "index_add");
  check_src(x, src, "index_add");
  LOOM_CHECK(index.dim() == 1, "[index_add] index must be 1-D, got shape ",
             shape_str(index.shape()));
  Shape expected = x.shape();
  expected[d] = index.numel();
  LOOM_CHECK(src.shape() == expected, "[index_add] src shape ", shape_str(src.shape()),
             " does not match ", shape_str(expected), " (input shape ", shape_str(x.shape()),
             " with dim ", d, " replaced by the index length ", index.numel(), ")");
  return apply<IndexAddOp>({x, index, src}, d)[0];
}

TopK topk(const Tensor& x, int64_t k, int64_t dim, bool largest) {
  LOOM_CHECK(x.defined(), "[topk] input tensor is undefined");
  LOOM_CHECK(x.dim() >= 1, "[topk] input must have at least one dim, got a zero-dim tensor");
  const int64_t d = wrap_dim(dim, x.dim(), "topk");
  LOOM_CHECK(k >= 0 && k <= x.size(d), "[topk] k = ", k, " is out of range [0, ", x.size(d),
             "] for dim ", d, " of shape ", shape_str(x.shape()));
  std::vector<Tensor> out = apply<TopKOp>({x}, k, d, largest);
  return {out[0], out[1]};
}

}  // namespace loom
