#include "core/tensor.h"

#include <cmath>
#include <iomanip>
#include <sstream>

#include "core/autograd.h"
#include "core/ops/cuda_util.h"
#include "core/ops/view.h"
#include "kernels/cpu/strided.h"
#include "kernels/cuda/kernels.h"

namespace loom {

namespace {

std::shared_ptr<TensorImpl> new_impl(const Shape& shape, DType dtype, Device device) {
  for (int64_t d : shape) LOOM_CHECK(d >= 0, "[empty] negative size in shape ", shape_str(shape));
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(size_t(numel_of(shape)) * dtype_size(dtype), device);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return impl;
}

// Dispatch over every dtype, including the 16-bit float storage types (for copies and fills).
template <class F>
void dispatch_any(DType t, F&& f) {
  switch (t) {
    case DType::f32:
      f(float{});
      break;
    case DType::f64:
      f(double{});
      break;
    case DType::bf16:
      f(bf16{});
      break;
    case DType::f16:
      f(f16{});
      break;
    case DType::i32:
      f(int32_t{});
      break;
    case DType::i64:
      f(int64_t{});
      break;
    case DType::boolean:
      f(bool{});
      break;
  }
}

}  // namespace

int64_t Tensor::size(int64_t d) const {
  return shape()[wrap_dim(d, dim(), "size")];
}

bool Tensor::is_contiguous() const {
  int64_t expected = 1;
  for (int64_t i = dim() - 1; i >= 0; --i) {
    if (shape()[i] != 1 && strides()[i] != expected) return false;
    expected *= shape()[i];
  }
  return true;
}

const Tensor& Tensor::set_requires_grad(bool on) const {
  LOOM_CHECK(is_leaf(), "[requires_grad] can only be set on a leaf tensor (use detach())");
  LOOM_CHECK(!on || is_floating(dtype()),
             "[requires_grad] only floating tensors can require "
             "grad, got ",
             dtype_name(dtype()));
  impl().requires_grad = on;
  return *this;
}

void Tensor::backward(const Tensor& seed, bool retain_graph) const {
  run_backward(*this, seed, retain_graph);
}

Tensor Tensor::detach() const {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = storage();
  impl->shape = shape();
  impl->strides = strides();
  impl->offset = offset();
  impl->dtype = dtype();
  return Tensor(impl);
}

Tensor Tensor::reshape(const Shape& s) const {
  return ops::reshape(*this, s, /*allow_copy=*/true);
}
Tensor Tensor::view(const Shape& s) const {
  return ops::reshape(*this, s, /*allow_copy=*/false);
}
Tensor Tensor::flatten(int64_t start, int64_t end) const {
  if (dim() == 0) return reshape({1});
  start = wrap_dim(start, dim(), "flatten");
  end = wrap_dim(end, dim(), "flatten");
  Shape s(shape().begin(), shape().begin() + start);
  int64_t n = 1;
  for (int64_t i = start; i <= end; ++i) n *= shape()[i];
  s.push_back(n);
  s.insert(s.end(), shape().begin() + end + 1, shape().end());
  return reshape(s);
}
Tensor Tensor::permute(const std::vector<int64_t>& dims) const {
  return ops::permute(*this, dims);
}
Tensor Tensor::transpose(int64_t d0, int64_t d1) const {
  std::vector<int64_t> p(dim());
  for (int64_t i = 0; i < dim(); ++i) p[i] = i;
  std::swap(p[wrap_dim(d0, dim(), "transpose")], p[wrap_dim(d1, dim(), "transpose")]);
  return permute(p);
}
Tensor Tensor::narrow(int64_t d, int64_t start, int64_t length) const {
  return slice(d, start, start + length);
}
Tensor Tensor::slice(int64_t d, int64_t start, int64_t end, int64_t step) const {
  return ops::slice(*this, d, start, end, step);
}
Tensor Tensor::select(int64_t d, int64_t index) const {
  d = wrap_dim(d, dim(), "select");
  if (index < 0) index += shape()[d];
  LOOM_CHECK(index >= 0 && index < shape()[d], "[select] index ", index, " out of range for dim ",
             d, " of shape ", shape_str(shape()));
  return slice(d, index, index + 1).squeeze(d);
}
Tensor Tensor::expand(const Shape& s) const {
  return ops::expand(*this, s);
}
Tensor Tensor::squeeze(int64_t d) const {
  d = wrap_dim(d, dim(), "squeeze");
  LOOM_CHECK(shape()[d] == 1, "[squeeze] dim ", d, " has size ", shape()[d], ", not 1");
  Shape s = shape();
  s.erase(s.begin() + d);
  return view(s);
}
Tensor Tensor::unsqueeze(int64_t d) const {
  d = wrap_dim(d, dim() + 1, "unsqueeze");
  Shape s = shape();
  s.insert(s.begin() + d, 1);
  return view(s);
}

Tensor Tensor::contiguous() const {
  return is_contiguous() ? *this : clone();
}
Tensor Tensor::clone() const {
  return ops::copy(*this, dtype(), device());
}
Tensor Tensor::to(DType t) const {
  return t == dtype() ? *this : ops::copy(*this, t, device());
}
Tensor Tensor::to(Device d) const {
  return d == device() ? *this : ops::copy(*this, dtype(), d);
}

double Tensor::item() const {
  LOOM_CHECK(numel() == 1, "[item] tensor has ", numel(), " elements, expected 1");
  return to_vector<double>()[0];
}

template <class T>
std::vector<T> Tensor::to_vector() const {
  Tensor host = device().is_cpu() ? *this : to(Device::cpu());
  std::vector<T> out(size_t(host.numel()));
  const Strides dst = contiguous_strides(host.shape());
  dispatch_any(host.dtype(), [&](auto tag) {
    using S = decltype(tag);
    kernels::cpu::strided_copy(int(host.dim()), host.shape().data(), out.data(), dst.data(),
                               static_cast<const S*>(host.raw_data()), host.strides().data());
  });
  return out;
}
template std::vector<float> Tensor::to_vector<float>() const;
template std::vector<double> Tensor::to_vector<double>() const;
template std::vector<int32_t> Tensor::to_vector<int32_t>() const;
template std::vector<int64_t> Tensor::to_vector<int64_t>() const;
template std::vector<uint8_t> Tensor::to_vector<uint8_t>() const;

std::string Tensor::str(int64_t max_per_dim) const {
  if (!defined()) return "Tensor(undefined)";
  std::ostringstream os;
  os << "Tensor(" << shape_str(shape()) << ", " << dtype_name(dtype()) << ", " << device().str();
  if (requires_grad()) os << ", requires_grad";
  os << ")\n";
  const std::vector<double> v = to_vector<double>();
  const Strides st = contiguous_strides(shape());
  // Recursive print with elision of the middle of long dims.
  std::function<void(int64_t, int64_t)> rec = [&](int64_t d, int64_t base) {
    if (d == dim()) {
      os << std::setprecision(5) << v[size_t(base)];
      return;
    }
    os << "[";
    const int64_t n = shape()[d];
    for (int64_t i = 0; i < n; ++i) {
      if (n > max_per_dim && i == max_per_dim / 2) {
        os << "..., ";
        i = n - max_per_dim / 2 - 1;
        continue;
      }
      rec(d + 1, base + i * st[d]);
      if (i + 1 < n) os << (d + 1 == dim() ? ", " : ",\n ");
    }
    os << "]";
  };
  rec(0, 0);
  return os.str();
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) {
  return os << t.str();
}

Tensor empty(const Shape& shape, DType dtype, Device device) {
  return Tensor(new_impl(shape, dtype, device));
}

Tensor full(const Shape& shape, double value, DType dtype, Device device) {
  if (device.is_cuda()) {
    Tensor t = empty(shape, dtype, device);
    kernels::cuda::fill(t.raw_data(), dtype, t.numel(), value);
    return t;
  }
  Tensor host = empty(shape, dtype, Device::cpu());
  dispatch_any(dtype, [&](auto tag) {
    using T = decltype(tag);
    T* p = static_cast<T*>(host.raw_data());
    const T v = kernels::cpu::convert<T>(value);
    for (int64_t i = 0, n = host.numel(); i < n; ++i) p[i] = v;
  });
  return host;
}

Tensor zeros(const Shape& shape, DType dtype, Device device) {
  return full(shape, 0, dtype, device);
}
Tensor ones(const Shape& shape, DType dtype, Device device) {
  return full(shape, 1, dtype, device);
}
Tensor zeros_like(const Tensor& t) {
  return zeros(t.shape(), t.dtype(), t.device());
}
Tensor ones_like(const Tensor& t) {
  return ones(t.shape(), t.dtype(), t.device());
}
Tensor full_like(const Tensor& t, double v) {
  return full(t.shape(), v, t.dtype(), t.device());
}
Tensor scalar(double value, DType dtype) {
  return full({}, value, dtype);
}

Tensor arange(double start, double end, double step, DType dtype) {
  LOOM_CHECK(step != 0, "[arange] step must be non-zero");
  const int64_t n = std::max<int64_t>(0, int64_t(std::ceil((end - start) / step)));
  std::vector<double> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = start + double(i) * step;
  return from_vector(v, {n}, dtype);
}

Tensor linspace(double start, double end, int64_t steps, DType dtype) {
  LOOM_CHECK(steps >= 0, "[linspace] steps must be >= 0, got ", steps);
  std::vector<double> v(static_cast<size_t>(steps));
  for (int64_t i = 0; i < steps; ++i)
    v[size_t(i)] = steps == 1 ? start : start + (end - start) * double(i) / double(steps - 1);
  return from_vector(v, {steps}, dtype);
}

template <class T>
Tensor from_vector(const std::vector<T>& values, const Shape& shape, DType dtype) {
  LOOM_CHECK(int64_t(values.size()) == numel_of(shape), "[from_vector] ", values.size(),
             " values do not fill shape ", shape_str(shape));
  Tensor t = empty(shape, dtype);
  const Strides st = contiguous_strides(shape);
  dispatch_any(dtype, [&](auto tag) {
    using D = decltype(tag);
    kernels::cpu::strided_copy(int(shape.size()), shape.data(), static_cast<D*>(t.raw_data()),
                               st.data(), values.data(), st.data());
  });
  return t;
}
template <class T>
Tensor from_vector(const std::vector<T>& values, const Shape& shape) {
  return from_vector(values, shape, dtype_of<T>());
}
#define LOOM_INSTANTIATE_FROM_VECTOR(T)                                       \
  template Tensor from_vector<T>(const std::vector<T>&, const Shape&, DType); \
  template Tensor from_vector<T>(const std::vector<T>&, const Shape&);
LOOM_INSTANTIATE_FROM_VECTOR(float)
LOOM_INSTANTIATE_FROM_VECTOR(double)
LOOM_INSTANTIATE_FROM_VECTOR(int32_t)
LOOM_INSTANTIATE_FROM_VECTOR(int64_t)
template Tensor from_vector<uint8_t>(const std::vector<uint8_t>&, const Shape&, DType);

void copy_into(const Tensor& dst, const Tensor& src) {
  if (dst.device() != src.device()) {  // move first (e.g. loading a host state into CUDA)
    copy_into(dst, src.to(dst.device()));
    return;
  }
  const Shape& s = dst.shape();
  broadcast_shapes(src.shape(), s, "copy_into");
  if (dst.device().is_cuda()) {
    kernels::cuda::copy(ops::iter_shape(s, "copy_into"), ops::operand(src, s),
                        ops::operand(dst, s));
    return;
  }
  const Strides sst = broadcast_strides(src.shape(), src.strides(), s);
  dispatch_any(dst.dtype(), [&](auto dtag) {
    using D = decltype(dtag);
    dispatch_any(src.dtype(), [&](auto stag) {
      using S = decltype(stag);
      kernels::cpu::strided_copy(int(s.size()), s.data(), static_cast<D*>(dst.raw_data()),
                                 dst.strides().data(), static_cast<const S*>(src.raw_data()),
                                 sst.data());
    });
  });
}

}  // namespace loom
