#pragma once
// Tensor: a cheap, shared handle to a strided view of a Storage, plus optional autograd state.
//
// Copying a Tensor copies the handle (like shared_ptr): both refer to the same TensorImpl, so
// `requires_grad`, `grad` and hooks set through one are seen through the other. View methods
// (reshape, permute, narrow, expand, ...) return new TensorImpls that share the storage and are
// differentiable. Every method that computes throws loom::Error prefixed with its op name on
// misuse. The op set lives in core/ops/*.h; this header holds the handle, views and creation.
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/shape.h"
#include "core/storage.h"

namespace loom {

class Node;
class Tensor;

// Called after a leaf's .grad received this backward pass's full contribution.
using GradHook = std::function<void(Tensor& leaf)>;

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  Strides strides;
  int64_t offset = 0;  // in elements
  DType dtype = DType::f32;

  // autograd
  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;
  std::shared_ptr<Node> grad_fn;  // null for leaves
  int output_nr = 0;              // which output of grad_fn this tensor is
  std::vector<GradHook> hooks;
  std::string name;  // optional, used in error messages and hooks (e.g. a parameter name)
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // -- metadata ----------------------------------------------------------------------------------
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl().shape; }
  const Strides& strides() const { return impl().strides; }
  int64_t offset() const { return impl().offset; }
  int64_t dim() const { return int64_t(impl().shape.size()); }
  int64_t size(int64_t d) const;
  int64_t numel() const { return numel_of(impl().shape); }
  DType dtype() const { return impl().dtype; }
  Device device() const { return impl().storage->device(); }
  bool is_contiguous() const;
  const std::shared_ptr<Storage>& storage() const { return impl().storage; }
  TensorImpl* impl_ptr() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_shared() const { return impl_; }
  bool same(const Tensor& o) const { return impl_ == o.impl_; }

  // Typed pointer to the first element (storage base + offset). Checks the dtype matches T.
  template <class T>
  T* data() const {
    LOOM_CHECK(dtype_of<T>() == dtype(), "[data] tensor has dtype ", dtype_name(dtype()),
               ", requested ", dtype_name(dtype_of<T>()));
    return static_cast<T*>(storage()->data()) + offset();
  }
  void* raw_data() const {
    return static_cast<char*>(storage()->data()) + offset() * int64_t(dtype_size(dtype()));
  }

  // -- autograd ----------------------------------------------------------------------------------
  bool requires_grad() const { return impl().requires_grad; }
  // Marks a leaf as trainable. Throws for a non-leaf or a non-floating tensor.
  const Tensor& set_requires_grad(bool on = true) const;
  bool is_leaf() const { return impl().grad_fn == nullptr; }
  const std::shared_ptr<Node>& grad_fn() const { return impl().grad_fn; }
  Tensor grad() const { return Tensor(impl().grad); }
  void set_grad(const Tensor& g) const { impl().grad = g.impl_; }
  void zero_grad() const { impl().grad.reset(); }
  void register_hook(GradHook hook) const { impl().hooks.push_back(std::move(hook)); }
  const std::string& name() const { return impl().name; }
  const Tensor& set_name(std::string n) const {
    impl().name = std::move(n);
    return *this;
  }

  // Reverse-mode differentiation from this tensor. With no seed the tensor must hold one element
  // (seed 1). retain_graph keeps saved tensors so backward can run through the graph again.
  void backward(const Tensor& seed = Tensor(), bool retain_graph = false) const;
  // A new handle to the same storage without autograd history.
  Tensor detach() const;

  // -- views (differentiable, no copy) -----------------------------------------------------------
  Tensor reshape(const Shape& shape) const;  // copies only when the strides do not allow a view
  Tensor view(const Shape& shape) const;     // throws when a copy would be needed
  Tensor flatten(int64_t start = 0, int64_t end = -1) const;
  Tensor permute(const std::vector<int64_t>& dims) const;
  Tensor transpose(int64_t d0, int64_t d1) const;
  Tensor t() const { return transpose(-2, -1); }
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const;
  Tensor slice(int64_t dim, int64_t start, int64_t end, int64_t step = 1) const;
  Tensor select(int64_t dim, int64_t index) const;  // narrow + squeeze
  Tensor expand(const Shape& shape) const;          // -1 keeps a dim
  Tensor squeeze(int64_t dim) const;
  Tensor unsqueeze(int64_t dim) const;

  // -- copies and conversion (differentiable) ----------------------------------------------------
  Tensor contiguous() const;  // returns *this when already contiguous
  Tensor clone() const;
  Tensor to(DType dtype) const;
  Tensor to(Device device) const;

  // -- host access -------------------------------------------------------------------------------
  double item() const;  // one-element tensor to double
  template <class T>
  std::vector<T> to_vector() const;  // contiguous copy in row-major order, converted to T
  std::string str(int64_t max_per_dim = 6) const;

 private:
  TensorImpl& impl() const {
    LOOM_CHECK(impl_ != nullptr, "[tensor] use of an undefined tensor");
    return *impl_;
  }
  std::shared_ptr<TensorImpl> impl_;
};

std::ostream& operator<<(std::ostream& os, const Tensor& t);

// -- creation ------------------------------------------------------------------------------------
Tensor empty(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
Tensor zeros(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
Tensor ones(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
Tensor full(const Shape& shape, double value, DType dtype = DType::f32,
            Device device = Device::cpu());
Tensor zeros_like(const Tensor& t);
Tensor ones_like(const Tensor& t);
Tensor full_like(const Tensor& t, double value);
Tensor scalar(double value, DType dtype = DType::f32);  // 0-dim
Tensor arange(double start, double end, double step = 1, DType dtype = DType::f32);
Tensor linspace(double start, double end, int64_t steps, DType dtype = DType::f32);
// Copies host data (converted from T to `dtype`, default dtype_of<T>) into a new tensor.
template <class T>
Tensor from_vector(const std::vector<T>& values, const Shape& shape);
template <class T>
Tensor from_vector(const std::vector<T>& values, const Shape& shape, DType dtype);

// Grad mode: while a NoGradGuard lives on this thread, ops record no graph; a GradModeGuard sets
// the mode either way for its lifetime (activation checkpointing records inside a backward pass).
bool grad_enabled();
class GradModeGuard {
 public:
  explicit GradModeGuard(bool enabled);
  ~GradModeGuard();
  GradModeGuard(const GradModeGuard&) = delete;
  GradModeGuard& operator=(const GradModeGuard&) = delete;

 private:
  bool prev_;
};
class NoGradGuard : public GradModeGuard {
 public:
  NoGradGuard() : GradModeGuard(false) {}
};

// Copies src into dst elementwise (shapes must match; broadcasting src is allowed; dtypes convert;
// a src on another device is moved to dst's first).
// Not recorded by autograd: for optimizer updates, buffers and loading state.
void copy_into(const Tensor& dst, const Tensor& src);

}  // namespace loom
