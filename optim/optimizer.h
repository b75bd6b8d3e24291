#pragma once
// The optimizer interface: a list of parameter tensors, a learning rate, and an in-place update.
//
// An Optimizer keeps handles to the parameters it was given (the same TensorImpls, so a Module's
// parameters and the optimizer's are one object). step() reads each parameter's .grad and writes
// the parameter's storage in place under NoGradGuard, so parameters keep their identity, their
// storage and their `requires_grad`; parameters whose .grad is undefined are skipped (their state
// does not advance either), as in PyTorch. Parameters must be contiguous f32 tensors of one device
// (AdamW and Muon run on CUDA too; SGD on the CPU only); optimizer state is f32, shaped like the
// parameter and on its device. zero_grad() zeroes existing gradients in
// place, as nn::Module::zero_grad does, so gradients that are views into a flat buffer stay
// attached (PyTorch's set_to_none=False); a zeroed gradient is still a gradient, so step() then
// applies weight decay and momentum to that parameter.
// The learning rate is read at each step, so a schedule sets it with set_lr() between steps.
//
// State: every optimizer describes its per-parameter state by kind (state_dict.h), so checkpoints,
// resharding and memory reports work for every optimizer alike without knowing its type.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "optim/state_dict.h"

namespace loom::optim {

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // Applies one update to every parameter that has a gradient.
  virtual void step() = 0;
  // Zeroes every existing parameter gradient in place; undefined gradients stay undefined.
  void zero_grad() {
    for (const Tensor& p : params_) {
      const Tensor g = p.grad();
      if (g.defined()) copy_into(g, zeros({}, g.dtype(), g.device()));
    }
  }

  double lr() const { return lr_; }
  void set_lr(double lr) {
    LOOM_CHECK(lr >= 0, "[", name_, "] learning rate must be >= 0, got ", lr);
    lr_ = lr;
  }
  const std::vector<Tensor>& params() const { return params_; }

  // The kinds of state parameter i keeps (the same for every parameter of a single-type optimizer).
  virtual StateKinds state_kinds(size_t i) const = 0;
  // The whole logical state of every parameter, in params() order. Collective for a sharded
  // optimizer (every rank gets everything).
  virtual std::vector<ParamState> state() const = 0;
  // Replaces the state: one whole entry per parameter, the same on every rank (a sharded optimizer
  // keeps what it owns; not collective). Absent tensor kinds are cleared (created afresh at the
  // next step), tensors are copied. Throws naming the parameter for a kind this optimizer does not
  // keep, a missing counter or a tensor not shaped like its parameter.
  virtual void load_state(const std::vector<ParamState>& state) = 0;
  // Bytes of optimizer state this process holds now; state is created at a parameter's first
  // step, so this grows then. Never collective. The default sums the tensors of state(), which
  // optimizers whose state() communicates override.
  virtual int64_t state_bytes() const {
    int64_t bytes = 0;
    for (const ParamState& s : state())
      for (const auto& [kind, t] : s.tensors) bytes += t.numel() * int64_t(dtype_size(t.dtype()));
    return bytes;
  }

 protected:
  // Checks every parameter (defined, one device, contiguous, f32) and the learning rate; `name`
  // prefixes the errors ("[adamw] ..."). Optimizers without a CUDA path call require_cpu().
  Optimizer(std::vector<Tensor> params, double lr, const char* name)
      : params_(std::move(params)), lr_(0), name_(name) {
    set_lr(lr);
    for (size_t i = 0; i < params_.size(); ++i) {
      const Tensor& p = params_[i];
      LOOM_CHECK(p.defined(), "[", name_, "] parameter ", i, " is an undefined tensor");
      LOOM_CHECK(p.is_leaf(), "[", name_, "] parameter ", param_label(i),
                 " is not a leaf tensor (it would never receive a .grad)");
      LOOM_CHECK(p.device() == params_[0].device(), "[", name_, "] parameter ", param_label(i),
                 " is on ", p.device().str(), " but parameter ", param_label(0), " is on ",
                 params_[0].device().str(), "; one optimizer updates parameters of one device");
      LOOM_CHECK(p.dtype() == DType::f32, "[", name_, "] parameter ", param_label(i), " has dtype ",
                 dtype_name(p.dtype()), "; parameters must be f32");
      LOOM_CHECK(p.is_contiguous(), "[", name_, "] parameter ", param_label(i),
                 " is not contiguous");
    }
  }

  // Throws unless every parameter lives on the host (for optimizers that update through pointers).
  void require_cpu() const {
    for (size_t i = 0; i < params_.size(); ++i)
      LOOM_CHECK(params_[i].device().is_cpu(), "[", name_, "] parameter ", param_label(i),
                 " is on ", params_[i].device().str(),
                 "; this optimizer updates CPU parameters only");
  }

  // Throws unless `state` has one entry per parameter.
  void check_state_count(const std::vector<ParamState>& state) const {
    LOOM_CHECK(state.size() == params_.size(), "[", name_, "] load_state got ", state.size(),
               " parameter states for ", params_.size(), " parameters");
  }
  // check_param_state (state_dict.h) for parameter i.
  void check_param_state_of(size_t i, const ParamState& state) const {
    check_param_state(state, state_kinds(i), params_[i], name_, param_label(i));
  }

  // A readable name for parameter i in error messages: 'name' when set, else #index.
  std::string param_label(size_t i) const {
    const std::string& n = params_[i].name();
    return n.empty() ? "#" + std::to_string(i) : "'" + n + "'";
  }

  // Parameter i's gradient as a contiguous f32 tensor, or undefined when it has none. Throws
  // when the gradient's shape or dtype does not match the parameter.
  Tensor grad_of(size_t i) const {
    const Tensor& p = params_[i];
    Tensor g = p.grad();
    if (!g.defined()) return g;
    LOOM_CHECK(g.shape() == p.shape() && g.dtype() == p.dtype(), "[", name_, "] parameter ",
               param_label(i), " ", shape_str(p.shape()), " has a gradient of shape ",
               shape_str(g.shape()), " and dtype ", dtype_name(g.dtype()));
    return g.contiguous();
  }

  std::vector<Tensor> params_;
  double lr_;
  const char* name_;
};

}  // namespace loom::optim
