#pragma once
// Module: the base of every layer. A module owns named parameters (trainable leaves), named
// buffers (tensors saved with the model but never trained, e.g. a fixed position embedding) and
// named child modules; it has no virtual forward, each subclass declares the forward it needs.
//
// Names are local ("weight") and joined with dots along the tree ("blocks.0.attn.qkv.weight").
// Every listing is in registration order, depth first: a module's own parameters, then each
// child's. Subclasses keep their own Tensor/shared_ptr handles to what they register; those
// handles stay valid for the module's life because nothing here replaces a registered tensor:
// load_state_dict copies values in place and to(dtype) rewrites the same TensorImpl, so an
// optimizer holding parameters keeps working. Misuse throws loom::Error prefixed "[Module]".
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace loom::nn {

// Name -> tensor in insertion order, with lookup by name. The currency of checkpoints.
class StateDict {
 public:
  using Item = std::pair<std::string, Tensor>;

  // Throws when `name` is already present.
  void insert(std::string name, Tensor tensor);
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  // nullptr when absent.
  const Tensor* find(const std::string& name) const;
  // Throws naming the key when absent.
  const Tensor& at(const std::string& name) const;
  size_t size() const { return items_.size(); }
  bool empty() const { return items_.empty(); }
  std::vector<Item>::const_iterator begin() const { return items_.begin(); }
  std::vector<Item>::const_iterator end() const { return items_.end(); }

 private:
  std::vector<Item> items_;
  std::unordered_map<std::string, size_t> index_;
};

class Module {
 public:
  Module() = default;
  virtual ~Module() = default;
  // Copying would silently share (or not share) parameters; hold modules by shared_ptr instead.
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // -- registration (names: non-empty, no '.', unique within this module) -------------------------
  // Registers a floating leaf as a trainable parameter (sets requires_grad) and returns the same
  // handle. Throws for a non-leaf or non-floating tensor.
  Tensor register_parameter(const std::string& name, Tensor tensor);
  // Registers a tensor that is saved and loaded but not trained. Throws if it requires grad.
  Tensor register_buffer(const std::string& name, Tensor tensor);
  // Registers a child; its entries appear under "name.". Returns the child for chaining.
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> module) {
    add_child(name, module);
    return module;
  }

  // -- listing -----------------------------------------------------------------------------------
  // Every parameter with its dotted name; a tensor registered twice (weight tying) is listed once,
  // under its first name, so an optimizer built from this updates it once.
  std::vector<std::pair<std::string, Tensor>> named_parameters() const;
  std::vector<Tensor> parameters() const;
  std::vector<std::pair<std::string, Tensor>> named_buffers() const;
  // Direct children, in registration order.
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> named_children() const;
  // This module ("") and every descendant with its dotted path, depth first.
  std::vector<std::pair<std::string, Module*>> named_modules();
  // Element count of the parameters (tied ones once); trainable_only skips frozen ones.
  int64_t num_parameters(bool trainable_only = false) const;

  // -- state -------------------------------------------------------------------------------------
  // Every parameter (named_parameters order, but a tied tensor under each of its names), then
  // every buffer, as handles to the live tensors (not copies): clone them to snapshot values.
  StateDict state_dict() const;
  // Copies values into the registered tensors in place (no graph recorded; dtypes convert). All
  // keys are validated before anything is written, so a failed load leaves the module untouched.
  // Throws naming the key for a missing key or an unexpected key (when strict) and for a shape
  // mismatch (always, with the expected and the given shape).
  void load_state_dict(const StateDict& state, bool strict = true);

  // -- modes and housekeeping --------------------------------------------------------------------
  // Sets the training flag of this module and every descendant (dropout, class dropout read it).
  Module& train(bool on = true);
  Module& eval() { return train(false); }
  bool is_training() const { return training_; }
  // Zeroes existing parameter gradients in place rather than dropping them, so gradient views
  // into a flat buffer (data-parallel buckets) stay attached. Undefined gradients stay undefined.
  void zero_grad();
  // Converts every floating parameter and buffer to `dtype` in place: the TensorImpl is kept and
  // gets new storage (so tensors that shared storage no longer do); gradients are dropped. For fp64
  // gradient checks of whole modules; mixed precision does not use it (fp32 master weights).
  Module& to(DType dtype);
  // Moves every parameter and buffer to `device` in place, the same way (identity kept, gradients
  // dropped): build the model, move it, then build the optimizer.
  Module& to(Device device);

 private:
  enum class Kind { parameter, buffer, module };
  void check_new_name(const std::string& name, const char* what) const;
  // Replaces each distinct parameter/buffer's storage by that of convert(tensor), in place.
  void rewrite_tensors(const std::function<Tensor(const Tensor&)>& convert);
  void add_child(const std::string& name, std::shared_ptr<Module> module);
  // Appends (prefix + name, tensor) for every parameter / buffer of the subtree, without dedup.
  void collect(const std::string& prefix, std::vector<std::pair<std::string, Tensor>>* params,
               std::vector<std::pair<std::string, Tensor>>* buffers) const;

  std::vector<std::pair<std::string, Tensor>> parameters_;
  std::vector<std::pair<std::string, Tensor>> buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  std::unordered_map<std::string, Kind> names_;
  bool training_ = true;
};

}  // namespace loom::nn
