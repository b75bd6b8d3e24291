#include "models/moe/moe_layer.h"

#include <cmath>

#include "core/autocast.h"
#include "core/ops/elementwise.h"
#include "core/ops/expert_rows.h"
#include "core/ops/index.h"
#include "core/ops/linalg.h"
#include "core/ops/nn.h"
#include "core/ops/reduce.h"
#include "models/nn/init.h"
#include "parallel/ep_all_to_all.h"

namespace loom::moe {

namespace {

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
  LOOM_CHECK(cfg.capacity_factor >= 0 && std::isfinite(cfg.capacity_factor),
             "[MoELayer] capacity_factor must be finite and >= 0 (0 = dropless), got ",
             cfg.capacity_factor);
  if (cfg.d_ff == 0) cfg.d_ff = 4 * cfg.d_model;
  return cfg;
}

// d.routed without reading the device: kept plus dropped assignments per expert.
std::vector<int64_t> routed_on_host(const ExpertDispatch& d) {
  std::vector<int64_t> routed = d.counts;
  for (size_t e = 0; e < routed.size(); ++e) routed[e] += d.dropped[e];
  return routed;
}

}  // namespace

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

// ---- MoELayer -----------------------------------------------------------------------------------

MoELayer::MoELayer(const MoEConfig& cfg, Generator& init_gen,
                   std::shared_ptr<parallel::Communicator> ep)
    : cfg_(resolved(cfg)), ep_(ep && ep->size() > 1 ? std::move(ep) : nullptr) {
  router_ =
      register_module("router", std::make_shared<Router>(cfg_.d_model, cfg_.n_experts, init_gen));
  experts_ = register_module(
      "experts",
      std::make_shared<GroupedExperts>(cfg_.d_model, cfg_.d_ff, cfg_.n_experts, init_gen, ep_));
  if (cfg_.shared_hidden > 0) {
    shared_ = register_module(
        "shared",
        std::make_shared<nn::SwiGLU>(
            nn::SwiGLUConfig{.dim = cfg_.d_model, .hidden_dim = cfg_.shared_hidden}, init_gen));
  }
}

Tensor MoELayer::run_experts(const Tensor& x_sorted, const std::vector<int64_t>& counts) const {
  if (!ep_) return experts_->forward(x_sorted, counts);
  const parallel::ExpertExchange plan = parallel::exchange_expert_counts(counts, ep_);
  const Tensor received = parallel::expert_dispatch(x_sorted, ep_, plan);
  return parallel::expert_combine(experts_->forward(received, plan.expert_counts), ep_, plan);
}

Tensor MoELayer::load_fractions(const ExpertDispatch& d, int64_t n, DType dtype) const {
  Tensor routed = d.routed;
  int64_t tokens = n;
  if (ep_ && cfg_.aux_loss_global_counts) {
    std::vector<int64_t> totals = routed_on_host(d);  // then the token count
    totals.push_back(n);
    const Tensor t = from_vector(totals, {cfg_.n_experts + 1});
    ep_->all_reduce(t, parallel::ReduceOp::sum);
    routed = t.narrow(0, 0, cfg_.n_experts).to(d.routed.device());
    tokens = t.to_vector<int64_t>().back();
  }
  // In f64 whatever the dtype, so every device rounds f_i once, from the same value.
  return (routed.to(DType::f64) * double(cfg_.n_experts) / double(tokens * cfg_.top_k)).to(dtype);
}

MoELayer::Output MoELayer::forward(const Tensor& h) const {
  LOOM_CHECK(h.defined(), "[MoELayer] input is undefined");
  LOOM_CHECK(h.dim() >= 2 && h.shape().back() == cfg_.d_model, "[MoELayer] expected input [.., ",
             cfg_.d_model, "] ([B, T, D] or [N, D]), got ", shape_str(h.shape()));
  // The input may also come in the autocast dtype (DiT's fused LayerNorm + modulate emits bf16
  // under autocast); the routed and shared contributions are accumulated, and the output given,
  // in the parameters' dtype all the same.
  const DType acc = experts_->w_gate().dtype();
  LOOM_CHECK(h.dtype() == acc || (autocast_dtype() == h.dtype() && h.device().is_cuda()),
             "[MoELayer] input dtype ", dtype_name(h.dtype()),
             " differs from the parameters' dtype ", dtype_name(acc),
             " (and is not the autocast dtype)");
  const int64_t n = h.numel() / cfg_.d_model, k = cfg_.top_k, n_experts = cfg_.n_experts;
  LOOM_CHECK(n >= 1, "[MoELayer] input has no tokens: ", shape_str(h.shape()));
  const Tensor x = h.reshape({n, cfg_.d_model});

  const Tensor probs = router_->forward(x);
  const TopK top = topk(probs, k, -1);
  const ExpertDispatch d = sort_by_expert(top.indices, n_experts,
                                          expert_capacity(cfg_.capacity_factor, n, k, n_experts));

  const Tensor x_sorted = dispatch_expert_rows(x, d.token, d.position);
  const Tensor weight_sorted = index_select(top.values.reshape({n * k}), 0, d.order).to(acc);
  // The shared expert's output is the base the routed contributions are added to, in the
  // parameters' dtype (f32 under autocast, whose expert matmuls answer in bf16).
  const Tensor base =
      shared_ ? shared_->forward(x).to(acc) : zeros({n, cfg_.d_model}, acc, h.device());

  Output out;
  out.y =
      combine_expert_rows(base, run_experts(x_sorted, d.counts), weight_sorted, d.token, d.position)
          .reshape(h.shape());
  if (is_training())
    out.aux_loss = sum(mean(probs, {0}) * load_fractions(d, n, probs.dtype())) * cfg_.aux_loss_coef;
  out.expert_counts = from_vector(routed_on_host(d), {n_experts});
  out.dropped = from_vector(d.dropped, {n_experts});
  return out;
}

}  // namespace loom::moe
