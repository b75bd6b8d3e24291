#include "models/nn/module.h"

#include <unordered_set>

namespace loom::nn {

// -- StateDict
// --------------------------------------------------------------------------------------

void StateDict::insert(std::string name, Tensor tensor) {
  LOOM_CHECK(!contains(name), "[StateDict] duplicate key '", name, "'");
  index_.emplace(name, items_.size());
  items_.emplace_back(std::move(name), std::move(tensor));
}

const Tensor* StateDict::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &items_[it->second].second;
}

const Tensor& StateDict::at(const std::string& name) const {
  const Tensor* t = find(name);
  LOOM_CHECK(t != nullptr, "[StateDict] no key '", name, "'");
  return *t;
}

// -- registration
// -----------------------------------------------------------------------------------

void Module::check_new_name(const std::string& name, const char* what) const {
  LOOM_CHECK(!name.empty() && name.find('.') == std::string::npos, "[Module] invalid ", what,
             " name '", name, "': names must be non-empty and contain no '.'");
  LOOM_CHECK(names_.count(name) == 0, "[Module] cannot register ", what, " '", name,
             "': the name is already taken in this module");
}

Tensor Module::register_parameter(const std::string& name, Tensor tensor) {
  check_new_name(name, "parameter");
  LOOM_CHECK(tensor.defined(), "[Module] parameter '", name, "' is undefined");
  LOOM_CHECK(tensor.is_leaf(), "[Module] parameter '", name,
             "' is the result of a recorded op; pass a leaf (detach() it)");
  LOOM_CHECK(is_floating(tensor.dtype()), "[Module] parameter '", name, "' must be floating, got ",
             dtype_name(tensor.dtype()));
  tensor.set_requires_grad(true);
  names_.emplace(name, Kind::parameter);
  parameters_.emplace_back(name, tensor);
  return tensor;
}

Tensor Module::register_buffer(const std::string& name, Tensor tensor) {
  check_new_name(name, "buffer");
  LOOM_CHECK(tensor.defined(), "[Module] buffer '", name, "' is undefined");
  LOOM_CHECK(!tensor.requires_grad(), "[Module] buffer '", name,
             "' requires grad; register it as a parameter or detach() it");
  names_.emplace(name, Kind::buffer);
  buffers_.emplace_back(name, tensor);
  return tensor;
}

void Module::add_child(const std::string& name, std::shared_ptr<Module> module) {
  check_new_name(name, "module");
  LOOM_CHECK(module != nullptr, "[Module] child module '", name, "' is null");
  LOOM_CHECK(module.get() != this, "[Module] cannot register a module as its own child");
  names_.emplace(name, Kind::module);
  children_.emplace_back(name, std::move(module));
}

// -- listing
// ----------------------------------------------------------------------------------------

void Module::collect(const std::string& prefix, std::vector<std::pair<std::string, Tensor>>* params,
                     std::vector<std::pair<std::string, Tensor>>* buffers) const {
  if (params)
    for (const auto& [name, t] : parameters_) params->emplace_back(prefix + name, t);
  if (buffers)
    for (const auto& [name, t] : buffers_) buffers->emplace_back(prefix + name, t);
  for (const auto& [name, child] : children_) child->collect(prefix + name + ".", params, buffers);
}

std::vector<std::pair<std::string, Tensor>> Module::named_parameters() const {
  std::vector<std::pair<std::string, Tensor>> all, unique;
  collect("", &all, nullptr);
  std::unordered_set<const TensorImpl*> seen;
  for (auto& item : all)
    if (seen.insert(item.second.impl_ptr()).second) unique.push_back(std::move(item));
  return unique;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& item : named_parameters()) out.push_back(std::move(item.second));
  return out;
}

std::vector<std::pair<std::string, Tensor>> Module::named_buffers() const {
  std::vector<std::pair<std::string, Tensor>> out;
  collect("", nullptr, &out);
  return out;
}

std::vector<std::pair<std::string, std::shared_ptr<Module>>> Module::named_children() const {
  return children_;
}

std::vector<std::pair<std::string, Module*>> Module::named_modules() {
  std::vector<std::pair<std::string, Module*>> out{{"", this}};
  for (const auto& [name, child] : children_)
    for (const auto& [sub, m] : child->named_modules())
      out.emplace_back(sub.empty() ? name : name + "." + sub, m);
  return out;
}

int64_t Module::num_parameters(bool trainable_only) const {
  int64_t n = 0;
  for (const auto& [name, t] : named_parameters())
    if (!trainable_only || t.requires_grad()) n += t.numel();
  return n;
}

// -- state
// ------------------------------------------------------------------------------------------

StateDict Module::state_dict() const {
  std::vector<std::pair<std::string, Tensor>> params, buffers;
  collect("", &params, &buffers);
  StateDict out;
  // Tied tensors appear under each of their names, so a checkpoint loads into either layout.
  for (auto& [name, t] : params) out.insert(name, t);
  for (auto& [name, t] : buffers) out.insert(name, t);
  return out;
}

namespace {

std::string join_keys(const std::vector<std::string>& keys) {
  std::string s;
  for (size_t i = 0; i < keys.size(); ++i) s += (i ? ", '" : "'") + keys[i] + "'";
  return s;
}

}  // namespace

void Module::load_state_dict(const StateDict& state, bool strict) {
  const StateDict own = state_dict();
  std::vector<std::string> missing, unexpected;
  std::vector<std::pair<Tensor, Tensor>> copies;  // (destination, source)
  for (const auto& [name, dst] : own) {
    const Tensor* src = state.find(name);
    if (src == nullptr) {
      missing.push_back(name);
      continue;
    }
    LOOM_CHECK(src->defined(), "[load_state_dict] key '", name, "' holds an undefined tensor");
    LOOM_CHECK(src->shape() == dst.shape(), "[load_state_dict] shape mismatch for '", name,
               "': expected ", shape_str(dst.shape()), ", got ", shape_str(src->shape()));
    LOOM_CHECK(is_floating(src->dtype()) == is_floating(dst.dtype()), "[load_state_dict] key '",
               name, "' has dtype ", dtype_name(src->dtype()), " but the module holds ",
               dtype_name(dst.dtype()));
    copies.emplace_back(dst, *src);
  }
  for (const auto& [name, t] : state)
    if (!own.contains(name)) unexpected.push_back(name);
  if (strict) {
    LOOM_CHECK(missing.empty(), "[load_state_dict] missing key(s) ", join_keys(missing));
    LOOM_CHECK(unexpected.empty(), "[load_state_dict] unexpected key(s) ", join_keys(unexpected));
  }
  NoGradGuard no_grad;
  for (const auto& [dst, src] : copies)
    copy_into(dst, src.device() == dst.device() ? src : src.to(dst.device()));
}

// -- modes and housekeeping
// -------------------------------------------------------------------------

Module& Module::train(bool on) {
  training_ = on;
  for (const auto& [name, child] : children_) child->train(on);
  return *this;
}

void Module::zero_grad() {
  for (const Tensor& p : parameters()) {
    const Tensor g = p.grad();
    if (g.defined()) copy_into(g, zeros({}, g.dtype(), g.device()));
  }
}

void Module::rewrite_tensors(const std::function<Tensor(const Tensor&)>& convert) {
  std::vector<std::pair<std::string, Tensor>> params, buffers;
  collect("", &params, &buffers);
  params.insert(params.end(), buffers.begin(), buffers.end());
  std::unordered_set<TensorImpl*> done;
  NoGradGuard no_grad;
  for (const auto& [name, t] : params) {
    TensorImpl* impl = t.impl_ptr();
    if (!done.insert(impl).second) continue;
    const Tensor converted = convert(t);
    if (converted.same(t)) continue;
    // Rewriting the impl (not swapping handles) is what keeps parameter identity.
    impl->storage = converted.storage();
    impl->strides = converted.strides();
    impl->offset = converted.offset();
    impl->dtype = converted.dtype();
    impl->grad.reset();
  }
}

Module& Module::to(DType dtype) {
  LOOM_CHECK(is_floating(dtype), "[Module] to() needs a floating dtype, got ", dtype_name(dtype));
  rewrite_tensors([dtype](const Tensor& t) { return is_floating(t.dtype()) ? t.to(dtype) : t; });
  return *this;
}

Module& Module::to(Device device) {
  rewrite_tensors([device](const Tensor& t) { return t.to(device); });
  return *this;
}

}  // namespace loom::nn
