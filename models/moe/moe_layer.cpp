#include "models/moe/moe_layer.h"

#include <cmath>

#include "core/autocast.h"
#include "core/autograd.h"
#include "core/ops/elementwise.h"
#include "core/ops/index.h"
#include "core/ops/linalg.h"
#include "core/ops/nn.h"
#include "core/ops/reduce.h"
#include "models/nn/init.h"

namespace loom::moe {

namespace {

// Splits x along dim 0 into views of the given sizes, as one node whose backward is a single cat.
// Slicing piece by piece would make every piece's backward allocate a zero tensor of x's full
// shape (E full-size buffers per stacked weight); here unused pieces just get zero gradients.
class SplitRowsOp final : public Op {
 public:
  explicit SplitRowsOp(std::vector<int64_t> sizes) : sizes_(std::move(sizes)) {}
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
    return {cat(g, 0)};
  }

 private:
  std::vector<int64_t> sizes_;
};

std::vector<Tensor> split_rows(const Tensor& x, const std::vector<int64_t>& sizes) {
  return apply<SplitRowsOp>({x}, sizes);
}

DType router_dtype(DType t) {
  return t == DType::f64 ? DType::f64 : DType::f32;
}

MoEConfig resolved(MoEConfig cfg) {
  LOOM_CHECK(cfg.d_model > 0, "[MoELayer] d_model must be positive, got ", cfg.d_model);
  LOOM_CHECK(cfg.n_experts > 0, "[MoELayer] n_experts must be positive, got ", cfg.n_experts);
  LOOM_CHECK(cfg.top_k >= 1 && cfg.top_k <= cfg.n_experts, "[MoELayer] top_k must lie in [1, ",
             cfg.n_experts, "] (n_experts), got ", cfg.top_k);
  LOOM_CHECK(cfg.d_ff >= 0, "[MoELayer] d_ff must be >= 0 (0 means 4 * d_model), got ", cfg.d_ff);
  LOOM_CHECK(cfg.shared_hidden >= 0,
             "[MoELayer] shared_hidden must be >= 0 (0 means no shared expert), got ",
             cfg.shared_hidden);
  LOOM_CHECK(cfg.aux_loss_coef >= 0 && std::isfinite(cfg.aux_loss_coef),
             "[MoELayer] aux_loss_coef must be finite and >= 0, got ", cfg.aux_loss_coef);
  if (cfg.d_ff == 0) cfg.d_ff = 4 * cfg.d_model;
  return cfg;
}

}  // namespace

ExpertDispatch sort_by_expert(const Tensor& topk_idx, int64_t n_experts) {
  LOOM_CHECK(topk_idx.defined() && topk_idx.dim() == 2, "[MoELayer] top-k indices must be [N, k]");
  LOOM_CHECK(topk_idx.dtype() == DType::i64 || topk_idx.dtype() == DType::i32,
             "[MoELayer] top-k indices must be i64 or i32, got ", dtype_name(topk_idx.dtype()));
  LOOM_CHECK(n_experts >= 1, "[MoELayer] n_experts must be positive, got ", n_experts);
  const std::vector<int64_t> idx = topk_idx.to_vector<int64_t>();
  const int64_t k = topk_idx.size(1), m = int64_t(idx.size());
  ExpertDispatch d;
  d.counts.assign(size_t(n_experts), 0);
  for (int64_t p = 0; p < m; ++p) {
    const int64_t e = idx[size_t(p)];
    LOOM_CHECK(e >= 0 && e < n_experts, "[MoELayer] expert id ", e, " at assignment ", p,
               " is out of range [0, ", n_experts, ")");
    ++d.counts[size_t(e)];
  }
  std::vector<int64_t> next(size_t(n_experts), 0);
  for (int64_t e = 1; e < n_experts; ++e)
    next[size_t(e)] = next[size_t(e - 1)] + d.counts[size_t(e - 1)];
  d.order = empty({m}, DType::i64);
  d.token = empty({m}, DType::i64);
  int64_t* order = d.order.data<int64_t>();
  int64_t* token = d.token.data<int64_t>();
  for (int64_t p = 0; p < m; ++p) {
    const int64_t pos = next[size_t(idx[size_t(p)])]++;
    order[pos] = p;
    token[pos] = p / k;
  }
  d.order = d.order.to(topk_idx.device());
  d.token = d.token.to(topk_idx.device());
  return d;
}

// ---- Router -------------------------------------------------------------------------------------

Router::Router(int64_t d_model, int64_t n_experts, Generator& init_gen) {
  weight_ = register_parameter("weight", empty({n_experts, d_model}));
  nn::init::kaiming_uniform_(weight_, init_gen, std::sqrt(5.0));
}

Tensor Router::forward(const Tensor& x) const {
  // Routing decisions are discontinuous in the logits, so they are taken in at least fp32 even
  // when the experts run in a lower precision.
  const DType t = router_dtype(x.dtype());
  AutocastGuard keep(t);  // autocast would run this matmul in bf16
  return softmax(linear(x.to(t), weight_.to(t)), -1);
}

// ---- GroupedExperts -----------------------------------------------------------------------------

GroupedExperts::GroupedExperts(int64_t d_model, int64_t d_ff, int64_t n_experts,
                               Generator& init_gen) {
  w_gate_ = register_parameter("w_gate", empty({n_experts, d_ff, d_model}));
  w_up_ = register_parameter("w_up", empty({n_experts, d_ff, d_model}));
  w_down_ = register_parameter("w_down", empty({n_experts, d_model, d_ff}));
  // Per-slice init: the fans of the stacked 3-D tensor would mix E into them.
  for (int64_t e = 0; e < n_experts; ++e) {
    nn::init::xavier_uniform_(w_gate_.select(0, e), init_gen);
    nn::init::xavier_uniform_(w_up_.select(0, e), init_gen);
    nn::init::xavier_uniform_(w_down_.select(0, e), init_gen);
  }
}

Tensor GroupedExperts::forward(const Tensor& x_sorted, const std::vector<int64_t>& counts) const {
  const int64_t n_experts = w_gate_.size(0), d_model = w_gate_.size(2);
  LOOM_CHECK(int64_t(counts.size()) == n_experts, "[MoELayer] expected ", n_experts,
             " expert counts, got ", counts.size());
  int64_t total = 0;
  for (int64_t c : counts) {
    LOOM_CHECK(c >= 0, "[MoELayer] negative expert count ", c);
    total += c;
  }
  LOOM_CHECK(x_sorted.dim() == 2 && x_sorted.size(0) == total && x_sorted.size(1) == d_model,
             "[MoELayer] expected sorted rows [", total, ", ", d_model, "], got ",
             shape_str(x_sorted.shape()));
  const std::vector<int64_t> ones(size_t(n_experts), 1);
  const std::vector<Tensor> xs = split_rows(x_sorted, counts);
  const std::vector<Tensor> wg = split_rows(w_gate_, ones);
  const std::vector<Tensor> wu = split_rows(w_up_, ones);
  const std::vector<Tensor> wd = split_rows(w_down_, ones);
  std::vector<Tensor> ys;
  ys.reserve(size_t(n_experts));
  for (int64_t e = 0; e < n_experts; ++e) {
    if (counts[size_t(e)] == 0) continue;
    const Tensor& x = xs[size_t(e)];
    const Tensor hidden =
        silu(linear(x, wg[size_t(e)].squeeze(0))) * linear(x, wu[size_t(e)].squeeze(0));
    ys.push_back(linear(hidden, wd[size_t(e)].squeeze(0)));
  }
  return ys.size() == 1 ? ys[0] : cat(ys, 0);
}

// ---- MoELayer -----------------------------------------------------------------------------------

MoELayer::MoELayer(const MoEConfig& cfg, Generator& init_gen) : cfg_(resolved(cfg)) {
  router_ =
      register_module("router", std::make_shared<Router>(cfg_.d_model, cfg_.n_experts, init_gen));
  experts_ = register_module("experts", std::make_shared<GroupedExperts>(cfg_.d_model, cfg_.d_ff,
                                                                         cfg_.n_experts, init_gen));
  if (cfg_.shared_hidden > 0) {
    shared_ = register_module(
        "shared",
        std::make_shared<nn::SwiGLU>(
            nn::SwiGLUConfig{.dim = cfg_.d_model, .hidden_dim = cfg_.shared_hidden}, init_gen));
  }
}

MoELayer::Output MoELayer::forward(const Tensor& h) const {
  LOOM_CHECK(h.defined(), "[MoELayer] input is undefined");
  LOOM_CHECK(h.dim() >= 2 && h.shape().back() == cfg_.d_model, "[MoELayer] expected input [.., ",
             cfg_.d_model, "] ([B, T, D] or [N, D]), got ", shape_str(h.shape()));
  LOOM_CHECK(h.dtype() == experts_->w_gate().dtype(), "[MoELayer] input dtype ",
             dtype_name(h.dtype()), " differs from the parameters' dtype ",
             dtype_name(experts_->w_gate().dtype()));
  const int64_t n = h.numel() / cfg_.d_model, k = cfg_.top_k, n_experts = cfg_.n_experts;
  LOOM_CHECK(n >= 1, "[MoELayer] input has no tokens: ", shape_str(h.shape()));
  const Tensor x = h.reshape({n, cfg_.d_model});

  const Tensor probs = router_->forward(x);
  const TopK top = topk(probs, k, -1);
  ExpertDispatch d = sort_by_expert(top.indices, n_experts);

  const Tensor x_sorted = index_select(x, 0, d.token);
  const Tensor weight_sorted = index_select(top.values.reshape({n * k}), 0, d.order).to(h.dtype());
  const Tensor y_sorted = experts_->forward(x_sorted, d.counts) * weight_sorted.unsqueeze(1);
  // The shared expert's output doubles as the accumulator of the routed contributions.
  // Accumulated in the input's dtype (f32 under autocast, whose expert matmuls answer in bf16).
  const Tensor base = shared_ ? shared_->forward(x).to(h.dtype())
                              : zeros({n, cfg_.d_model}, h.dtype(), h.device());

  Output out;
  out.y = index_add(base, 0, d.token, y_sorted.to(h.dtype())).reshape(h.shape());
  if (is_training()) {
    std::vector<double> f(static_cast<size_t>(n_experts));
    for (int64_t e = 0; e < n_experts; ++e)
      f[size_t(e)] = double(n_experts) * double(d.counts[size_t(e)]) / double(n * k);
    const Tensor load = from_vector(f, {n_experts}, probs.dtype()).to(probs.device());
    out.aux_loss = sum(mean(probs, {0}) * load) * cfg_.aux_loss_coef;
  }
  out.expert_counts = from_vector(d.counts, {n_experts});
  return out;
}

}  // namespace loom::moe
