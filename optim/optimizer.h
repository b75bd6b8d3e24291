#pragma once
// The optimizer interface: a list of parameter tensors, a learning rate, and an in-place update.
//
// An Optimizer keeps handles to the parameters it was given (the same TensorImpls, so a Module's
// parameters and the optimizer's are one object). step() reads each parameter's .grad and writes
// the parameter's storage in place under NoGradGuard, so parameters keep their identity, their
// storage and their `requires_grad`; parameters whose .grad is undefined are skipped (their state
// does not advance either), as in PyTorch. Parameters must be contiguous f32 tensors on the CPU;
// optimizer state is f32 and shaped like the parameter. zero_grad() zeroes existing gradients in
// place, as nn::Module::zero_grad does, so gradients that are views into a flat buffer stay
// attached (PyTorch's set_to_none=False); a zeroed gradient is still a gradient, so step() then
// applies weight decay and momentum to that parameter.
// The learning rate is read at each step, so a schedule sets it with set_lr() between steps.
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

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

 protected:
  // Checks every parameter (defined, CPU, contiguous, f32) and the learning rate; `name` prefixes
  // the errors ("[adamw] ...").
  Optimizer(std::vector<Tensor> params, double lr, const char* name)
      : params_(std::move(params)), lr_(0), name_(name) {
    set_lr(lr);
    for (size_t i = 0; i < params_.size(); ++i) {
      const Tensor& p = params_[i];
      LOOM_CHECK(p.defined(), "[", name_, "] parameter ", i, " is an undefined tensor");
      LOOM_CHECK(p.is_leaf(), "[", name_, "] parameter ", param_label(i),
                 " is not a leaf tensor (it would never receive a .grad)");
      LOOM_CHECK(p.device().is_cpu(), "[", name_, "] parameter ", param_label(i), " is on ",
                 p.device().str(), "; only CPU parameters are supported");
      LOOM_CHECK(p.dtype() == DType::f32, "[", name_, "] parameter ", param_label(i), " has dtype ",
                 dtype_name(p.dtype()), "; parameters must be f32");
      LOOM_CHECK(p.is_contiguous(), "[", name_, "] parameter ", param_label(i),
                 " is not contiguous");
    }
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
