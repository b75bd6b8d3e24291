#include "models/moe/grouped_experts.h"

#include "core/autocast.h"
#include "core/autograd.h"
#include "core/ops/elementwise.h"
#include "core/ops/moe_ops.h"
#include "models/nn/init.h"

namespace loom::moe {

namespace {

// Identity forward (a view of w); backward multiplies the gradient by `scale`. Applied to the whole
// local stacks, so under ep the 1/P of the expert gradients costs one multiply per stack.
class ScaleGradOp final : public Op {
 public:
  explicit ScaleGradOp(double scale) : scale_(scale) {}
  const char* name() const override { return "moe_scale_grad"; }
  bool saves_inputs() const override { return false; }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    return {in[0].view(in[0].shape())};
  }
  std::vector<Tensor> backward(const SavedContext&, const std::vector<Tensor>& g) override {
    return {g[0] * scale_};
  }

 private:
  double scale_;
};

int ep_size(const std::shared_ptr<parallel::Communicator>& ep) {
  return ep ? ep->size() : 1;
}

}  // namespace

GroupedExperts::GroupedExperts(int64_t d_model, int64_t d_ff, int64_t n_experts,
                               Generator& init_gen, std::shared_ptr<parallel::Communicator> ep) {
  const int ranks = ep_size(ep);
  LOOM_CHECK(n_experts % ranks == 0, "[MoELayer] n_experts (", n_experts,
             ") must be divisible by the ep group size (", ranks, ")");
  Tensor gate = empty({n_experts, d_ff, d_model});
  Tensor up = empty({n_experts, d_ff, d_model});
  Tensor down = empty({n_experts, d_model, d_ff});
  // Per-slice init: the fans of the stacked 3-D tensor would mix E into them.
  for (int64_t e = 0; e < n_experts; ++e) {
    nn::init::xavier_uniform_(gate.select(0, e), init_gen);
    nn::init::xavier_uniform_(up.select(0, e), init_gen);
    nn::init::xavier_uniform_(down.select(0, e), init_gen);
  }
  if (ranks == 1) {
    w_gate_ = register_parameter("w_gate", gate);
    w_up_ = register_parameter("w_up", up);
    w_down_ = register_parameter("w_down", down);
    return;
  }
  const nn::ShardSpec spec = nn::ShardSpec::over(ep, 0);
  w_gate_ = register_sharded_parameter("w_gate", gate, spec);
  w_up_ = register_sharded_parameter("w_up", up, spec);
  w_down_ = register_sharded_parameter("w_down", down, spec);
  first_expert_ = int64_t(ep->rank()) * (n_experts / ranks);
  grad_scale_ = 1.0 / ranks;
}

Tensor GroupedExperts::forward(const Tensor& x_sorted, const std::vector<int64_t>& counts) const {
  const int64_t n_local = w_gate_.size(0), d_model = w_gate_.size(2);
  LOOM_CHECK(int64_t(counts.size()) == n_local, "[MoELayer] expected ", n_local,
             " expert counts (local experts), got ", counts.size());
  int64_t total = 0;
  for (int64_t c : counts) {
    LOOM_CHECK(c >= 0, "[MoELayer] negative expert count ", c);
    total += c;
  }
  LOOM_CHECK(x_sorted.dim() == 2 && x_sorted.size(0) == total && x_sorted.size(1) == d_model,
             "[MoELayer] expected sorted rows [", total, ", ", d_model, "], got ",
             shape_str(x_sorted.shape()));
  // Cast once for the gate and up products (a no-op without autocast).
  const Tensor x = autocast(x_sorted);
  const Tensor hidden =
      swiglu(grouped_linear(x, scaled(w_gate_), counts), grouped_linear(x, scaled(w_up_), counts));
  return grouped_linear(hidden, scaled(w_down_), counts);
}

Tensor GroupedExperts::scaled(const Tensor& w) const {
  return grad_scale_ == 1 ? w : apply<ScaleGradOp>({w}, grad_scale_)[0];
}

}  // namespace loom::moe
