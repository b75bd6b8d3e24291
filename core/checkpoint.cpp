#include "core/checkpoint.h"

#include <optional>

#include "core/autocast.h"
#include "core/autograd.h"
#include "core/ops/elementwise.h"
#include "core/ops/reduce.h"

namespace loom {

namespace {

class CheckpointOp final : public Op {
 public:
  explicit CheckpointOp(CheckpointFn f) : f_(std::move(f)), autocast_(autocast_dtype()) {}
  const char* name() const override { return "checkpoint"; }
  // Forward runs with recording off (apply_op's rule), so f's intermediates are dropped.
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override { return run(in); }

  std::vector<Tensor> backward(const SavedContext& ctx, const std::vector<Tensor>& g) override {
    std::vector<Tensor> in;
    for (size_t i = 0; i < ctx.inputs.size(); ++i) {
      Tensor t = ctx.inputs[i].defined() ? ctx.inputs[i].detach() : Tensor();
      if (t.defined() && ctx.needs_grad[i]) t.set_requires_grad(true);
      in.push_back(t);
    }
    {
      GradModeGuard record(true);
      const std::vector<Tensor> out = run(in);
      // One scalar whose gradient is the incoming one: sum_i <out_i, g_i> over floating outputs
      // that carry a gradient (a single output takes its gradient as the seed directly).
      Tensor total;
      for (size_t i = 0; i < out.size(); ++i) {
        if (!is_floating(out[i].dtype()) || !out[i].requires_grad()) continue;
        if (out.size() == 1) {
          out[i].backward(g[i]);
          break;
        }
        const Tensor term = sum(out[i] * g[i].to(out[i].dtype()));
        total = total.defined() ? total + term : term;
      }
      if (total.defined()) total.backward();
    }
    std::vector<Tensor> grads;
    for (const Tensor& t : in) grads.push_back(t.defined() && t.requires_grad() ? t.grad() : Tensor());
    return grads;
  }

 private:
  std::vector<Tensor> run(const std::vector<Tensor>& in) const {
    AutocastGuard autocast(autocast_.value_or(DType::f32), autocast_.has_value());
    return f_(in);
  }

  CheckpointFn f_;
  std::optional<DType> autocast_;  // the forward's, restored for the replay
};

}  // namespace

std::vector<Tensor> checkpoint(const CheckpointFn& f, const std::vector<Tensor>& inputs) {
  LOOM_CHECK(bool(f), "[checkpoint] empty function");
  return apply_op(std::make_shared<CheckpointOp>(f), inputs);
}

}  // namespace loom
