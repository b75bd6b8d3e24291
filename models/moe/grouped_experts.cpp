#include "models/moe/grouped_experts.h"

#include "core/autograd.h"
#include "core/ops/elementwise.h"
#include "core/ops/index.h"
#include "core/ops/linalg.h"
#include "core/ops/nn.h"
#include "models/nn/init.h"

namespace loom::moe {

namespace {

// Splits x along dim 0 into views of the given sizes, as one node whose backward is a single cat
// (times grad_scale when it is not 1). Slicing piece by piece would make every piece's backward
// allocate a zero tensor of x's full shape (E full-size buffers per stacked weight); here unused
// pieces just get zero gradients.
class SplitRowsOp final : public Op {
 public:
  SplitRowsOp(std::vector<int64_t> sizes, double grad_scale)
      : sizes_(std::move(sizes)), grad_scale_(grad_scale) {}
  const char* name() const override { return "moe_split_rows"; }
  bool saves_inputs() const override { return false; }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    std::vector<Tensor> pieces;
    pieces.reserve(sizes_.size());
    int64_t offset = 0;
    for (int64_t s : sizes_) {
      pieces.push_back(in[0].narrow(0, offset, s));
      offset += s;
    }
    return pieces;
  }
  std::vector<Tensor> backward(const SavedContext&, const std::vector<Tensor>& g) override {
    const Tensor whole = cat(g, 0);
    return {grad_scale_ == 1 ? whole : whole * grad_scale_};
  }

 private:
  std::vector<int64_t> sizes_;
  double grad_scale_;
};

std::vector<Tensor> split_rows(const Tensor& x, const std::vector<int64_t>& sizes,
                               double grad_scale = 1) {
  return apply<SplitRowsOp>({x}, sizes, grad_scale);
}

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
  const std::vector<int64_t> ones(size_t(n_local), 1);
  const std::vector<Tensor> xs = split_rows(x_sorted, counts);
  const std::vector<Tensor> wg = split_rows(w_gate_, ones, grad_scale_);
  const std::vector<Tensor> wu = split_rows(w_up_, ones, grad_scale_);
  const std::vector<Tensor> wd = split_rows(w_down_, ones, grad_scale_);
  std::vector<Tensor> ys;
  ys.reserve(size_t(n_local));
  for (int64_t l = 0; l < n_local; ++l) {
    const Tensor& x = xs[size_t(l)];
    const Tensor hidden =
        silu(linear(x, wg[size_t(l)].squeeze(0))) * linear(x, wu[size_t(l)].squeeze(0));
    ys.push_back(linear(hidden, wd[size_t(l)].squeeze(0)));
  }
  return ys.size() == 1 ? ys[0] : cat(ys, 0);
}

}  // namespace loom::moe
