#include "core/ops/view.h"

#include <algorithm>
#include <optional>

#include "core/autograd.h"
#include "core/ops/reduce.h"

namespace loom::ops {

namespace {

Tensor make_view(const Tensor& x, Shape shape, Strides strides, int64_t offset) {
  Tensor v = x.detach();
  TensorImpl* impl = v.impl_ptr();
  impl->shape = std::move(shape);
  impl->strides = std::move(strides);
  impl->offset = offset;
  return v;
}

// Strides for viewing (shape, strides) as `target` without a copy, or nullopt when impossible.
// Walks the old dims from the innermost out in "chunks" that are contiguous among themselves; each
// chunk must be covered exactly by a run of new dims.
std::optional<Strides> view_strides(const Shape& shape, const Strides& strides,
                                    const Shape& target) {
  if (shape.empty() || numel_of(shape) == 0) return contiguous_strides(target);
  Strides out(target.size());
  int64_t view_d = int64_t(target.size()) - 1;
  int64_t chunk_stride = strides.back(), tensor_numel = 1, view_numel = 1;
  for (int64_t d = int64_t(shape.size()) - 1; d >= 0; --d) {
    tensor_numel *= shape[d];
    const bool chunk_ends =
        d == 0 || (shape[d - 1] != 1 && strides[d - 1] != tensor_numel * chunk_stride);
    if (!chunk_ends) continue;
    while (view_d >= 0 && (view_numel < tensor_numel || target[view_d] == 1)) {
      out[view_d] = view_numel * chunk_stride;
      view_numel *= target[view_d];
      --view_d;
    }
    if (view_numel != tensor_numel) return std::nullopt;
    if (d > 0) {
      chunk_stride = strides[d - 1];
      tensor_numel = view_numel = 1;
    }
  }
  if (view_d != -1) return std::nullopt;
  return out;
}

class ReshapeOp final : public Op {
 public:
  ReshapeOp(Shape shape, bool allow_copy) : shape_(std::move(shape)), allow_copy_(allow_copy) {}
  const char* name() const override { return "reshape"; }
  bool saves_inputs() const override { return false; }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    const Tensor& x = in[0];
    if (auto st = view_strides(x.shape(), x.strides(), shape_)) {
      return {make_view(x, shape_, *st, x.offset())};
    }
    LOOM_CHECK(allow_copy_, "[view] cannot view a tensor of shape ", shape_str(x.shape()),
               " and strides ", shape_str(x.strides()), " as ", shape_str(shape_),
               " without a copy; use reshape() or contiguous()");
    Tensor c = copy(x, x.dtype(), x.device());
    return {make_view(c, shape_, contiguous_strides(shape_), 0)};
  }
  std::vector<Tensor> backward(const SavedContext& ctx, const std::vector<Tensor>& g) override {
    return {g[0].reshape(ctx.input_shapes[0])};
  }

 private:
  Shape shape_;
  bool allow_copy_;
};

class PermuteOp final : public Op {
 public:
  explicit PermuteOp(std::vector<int64_t> dims) : dims_(std::move(dims)) {}
  const char* name() const override { return "permute"; }
  bool saves_inputs() const override { return false; }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    const Tensor& x = in[0];
    Shape s(dims_.size());
    Strides st(dims_.size());
    for (size_t i = 0; i < dims_.size(); ++i) {
      s[i] = x.shape()[dims_[i]];
      st[i] = x.strides()[dims_[i]];
    }
    return {make_view(x, s, st, x.offset())};
  }
  std::vector<Tensor> backward(const SavedContext&, const std::vector<Tensor>& g) override {
    std::vector<int64_t> inv(dims_.size());
    for (size_t i = 0; i < dims_.size(); ++i) inv[dims_[i]] = int64_t(i);
    return {g[0].permute(inv)};
  }

 private:
  std::vector<int64_t> dims_;
};

// The adjoint of slicing: a zero tensor of the input's shape with `g` written into the slice.
class SliceBackwardOp final : public Op {
 public:
  SliceBackwardOp(Shape full, int64_t dim, int64_t start, int64_t end, int64_t step)
      : full_(std::move(full)), dim_(dim), start_(start), end_(end), step_(step) {}
  const char* name() const override { return "slice_backward"; }
  bool saves_inputs() const override { return false; }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    Tensor out = zeros(full_, in[0].dtype(), in[0].device());
    copy_into(out.slice(dim_, start_, end_, step_), in[0]);
    return {out};
  }
  std::vector<Tensor> backward(const SavedContext&, const std::vector<Tensor>& g) override {
    return {g[0].slice(dim_, start_, end_, step_)};
  }

 private:
  Shape full_;
  int64_t dim_, start_, end_, step_;
};

class SliceOp final : public Op {
 public:
  SliceOp(int64_t dim, int64_t start, int64_t end, int64_t step)
      : dim_(dim), start_(start), end_(end), step_(step) {}
  const char* name() const override { return "slice"; }
  bool saves_inputs() const override { return false; }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    const Tensor& x = in[0];
    Shape s = x.shape();
    Strides st = x.strides();
    s[dim_] = end_ <= start_ ? 0 : (end_ - start_ + step_ - 1) / step_;
    st[dim_] *= step_;
    return {make_view(x, s, st, x.offset() + start_ * x.strides()[dim_])};
  }
  std::vector<Tensor> backward(const SavedContext& ctx, const std::vector<Tensor>& g) override {
    return apply<SliceBackwardOp>({g[0]}, ctx.input_shapes[0], dim_, start_, end_, step_);
  }

 private:
  int64_t dim_, start_, end_, step_;
};

class ExpandOp final : public Op {
 public:
  explicit ExpandOp(Shape shape) : shape_(std::move(shape)) {}
  const char* name() const override { return "expand"; }
  bool saves_inputs() const override { return false; }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    const Tensor& x = in[0];
    return {make_view(x, shape_, broadcast_strides(x.shape(), x.strides(), shape_), x.offset())};
  }
  std::vector<Tensor> backward(const SavedContext& ctx, const std::vector<Tensor>& g) override {
    return {sum_to_shape(g[0], ctx.input_shapes[0])};
  }

 private:
  Shape shape_;
};

class CopyOp final : public Op {
 public:
  CopyOp(DType dtype, Device device, Device input_device)
      : dtype_(dtype), device_(device), input_device_(input_device) {}
  const char* name() const override { return "copy"; }
  bool saves_inputs() const override { return false; }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    const Tensor& x = in[0];
    if (x.device() == device_) {
      Tensor out = empty(x.shape(), dtype_, device_);
      copy_into(out, x);
      return {out};
    }
    // Across devices: convert and compact on the source's side, then move the bytes.
    const bool ready = x.dtype() == dtype_ && x.is_contiguous();
    const Tensor src = ready ? x : copy(x, dtype_, x.device());
    Tensor out = empty(x.shape(), dtype_, device_);
    copy_bytes(out.raw_data(), device_, src.raw_data(), src.device(),
               size_t(src.numel()) * dtype_size(dtype_));
    return {out};
  }
  std::vector<Tensor> backward(const SavedContext& ctx, const std::vector<Tensor>& g) override {
    if (!is_floating(ctx.input_dtypes[0])) return {Tensor()};
    return {copy(g[0], ctx.input_dtypes[0], input_device_)};
  }

 private:
  DType dtype_;
  Device device_;
  Device input_device_;
};

}  // namespace

Tensor reshape(const Tensor& x, const Shape& shape_in, bool allow_copy) {
  Shape shape = shape_in;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      LOOM_CHECK(infer < 0, "[reshape] only one dim can be -1 in ", shape_str(shape_in));
      infer = int64_t(i);
    } else {
      LOOM_CHECK(shape[i] >= 0, "[reshape] invalid size in ", shape_str(shape_in));
      known *= shape[i];
    }
  }
  if (infer >= 0) {
    LOOM_CHECK(known != 0 && x.numel() % known == 0, "[reshape] cannot reshape ",
               shape_str(x.shape()), " into ", shape_str(shape_in));
    shape[infer] = x.numel() / known;
  }
  LOOM_CHECK(numel_of(shape) == x.numel(), "[reshape] cannot reshape ", shape_str(x.shape()), " (",
             x.numel(), " elements) into ", shape_str(shape_in));
  if (shape == x.shape()) return x;
  return apply<ReshapeOp>({x}, shape, allow_copy)[0];
}

Tensor permute(const Tensor& x, const std::vector<int64_t>& dims_in) {
  LOOM_CHECK(int64_t(dims_in.size()) == x.dim(), "[permute] got ", dims_in.size(),
             " dims for a tensor of shape ", shape_str(x.shape()));
  std::vector<int64_t> dims(dims_in.size());
  std::vector<bool> seen(dims.size(), false);
  for (size_t i = 0; i < dims.size(); ++i) {
    dims[i] = wrap_dim(dims_in[i], x.dim(), "permute");
    LOOM_CHECK(!seen[dims[i]], "[permute] dim ", dims[i], " repeated");
    seen[dims[i]] = true;
  }
  bool identity = true;
  for (size_t i = 0; i < dims.size(); ++i) identity &= dims[i] == int64_t(i);
  if (identity) return x;
  return apply<PermuteOp>({x}, dims)[0];
}

Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end, int64_t step) {
  dim = wrap_dim(dim, x.dim(), "slice");
  LOOM_CHECK(step >= 1, "[slice] step must be >= 1, got ", step);
  const int64_t n = x.shape()[dim];
  auto clampi = [n](int64_t v) { return std::clamp<int64_t>(v < 0 ? v + n : v, 0, n); };
  start = clampi(start);
  end = std::max(start, clampi(end));
  if (start == 0 && end == n && step == 1) return x;
  return apply<SliceOp>({x}, dim, start, end, step)[0];
}

Tensor expand(const Tensor& x, const Shape& shape_in) {
  LOOM_CHECK(shape_in.size() >= size_t(x.dim()), "[expand] cannot expand ", shape_str(x.shape()),
             " to fewer dims ", shape_str(shape_in));
  Shape shape = shape_in;
  const size_t lead = shape.size() - size_t(x.dim());
  for (size_t i = 0; i < shape.size(); ++i) {
    const int64_t have = i < lead ? 1 : x.shape()[i - lead];
    if (shape[i] == -1) {
      LOOM_CHECK(i >= lead, "[expand] -1 not allowed for a new leading dim");
      shape[i] = have;
    }
    LOOM_CHECK(have == shape[i] || have == 1, "[expand] cannot expand ", shape_str(x.shape()),
               " to ", shape_str(shape_in), " (dim ", i, ")");
  }
  if (shape == x.shape()) return x;
  return apply<ExpandOp>({x}, shape)[0];
}

Tensor copy(const Tensor& x, DType dtype, Device device) {
  return apply<CopyOp>({x}, dtype, device, x.device())[0];
}

}  // namespace loom::ops
