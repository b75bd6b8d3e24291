#include "optim/sharded.h"

#include <algorithm>

namespace loom::optim {

namespace {

// FNV-1a over the cost model and every shape: equal on every rank that has the same parameters.
int64_t plan_fingerprint(const std::vector<Tensor>& params, ShardCost cost) {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&](uint64_t v) {
    h ^= v;
    h *= 1099511628211ull;
  };
  mix(uint64_t(cost));
  for (const Tensor& p : params) {
    mix(p.shape().size());
    for (int64_t d : p.shape()) mix(uint64_t(d));
  }
  return int64_t(h >> 1);  // non-negative, so that its negation is representable
}

}  // namespace

ShardedOptimizer::ShardedOptimizer(std::vector<Tensor> params, const OptimizerFactory& make_inner,
                                   ShardCost cost, std::shared_ptr<parallel::Communicator> dp)
    : Optimizer(std::move(params), 0, "sharded"), dp_(std::move(dp)) {
  LOOM_CHECK(dp_ != nullptr, "[sharded] needs a data-parallel communicator");
  // Validates every parameter and the configuration identically on every rank, before any
  // collective, so that a bad recipe throws everywhere instead of leaving ranks waiting.
  const std::unique_ptr<Optimizer> probe = make_inner(params_);
  kinds_ = probe->state_kinds(0);
  set_lr(probe->lr());

  std::vector<Shape> shapes;
  for (const Tensor& p : params_) shapes.push_back(p.shape());
  plan_ = make_shard_plan(shapes, cost, dp_->size());

  // Every rank must have built the same plan, or the all-gathers would mismatch.
  const int64_t units = int64_t(plan_.units.size()), print = plan_fingerprint(params_, cost);
  Tensor check = from_vector<int64_t>({units, print, -units, -print}, {4});
  dp_->all_reduce(check, parallel::ReduceOp::max);
  const auto c = check.to_vector<int64_t>();
  LOOM_CHECK(c[0] == -c[2] && c[1] == -c[3], "[sharded] ", dp_->describe(),
             ": ranks were given different parameters (shapes or count differ; this rank has ",
             params_.size(), " parameters in ", units, " units)");

  NoGradGuard no_grad;
  inner_index_.assign(plan_.units.size(), -1);
  std::vector<Tensor> mine;
  for (size_t u = 0; u < plan_.units.size(); ++u) {
    const ShardUnit& unit = plan_.units[u];
    const Tensor& p = params_[unit.param];
    Tensor view = unit_of(p.detach(), u);
    view.set_name(unit.whole ? p.name() : p.name() + "[" + std::to_string(unit.begin) + "]");
    unit_views_.push_back(view);
    if (plan_.owner[u] != dp_->rank()) continue;
    inner_index_[u] = int64_t(owned_.size());
    owned_.push_back(u);
    mine.push_back(view);
  }
  inner_ = make_inner(std::move(mine));
}

Tensor ShardedOptimizer::unit_of(const Tensor& t, size_t u) const {
  const ShardUnit& unit = plan_.units[u];
  return unit.whole ? t : t.narrow(0, unit.begin, unit.length);
}

void ShardedOptimizer::all_gather_units(
    const std::function<Tensor(size_t)>& pack,
    const std::function<void(size_t, const Tensor&)>& unpack) const {
  const int64_t shard = *std::max_element(plan_.rank_numel.begin(), plan_.rank_numel.end());
  if (shard == 0) return;
  const Device device = params_.front().device();
  // The padding after this rank's units is sent but never read.
  Tensor send = empty({shard}, DType::f32, device);
  int64_t at = 0;
  for (size_t u : owned_) {
    const int64_t n = plan_.units[u].numel;
    const Tensor values = pack(u);
    copy_into(send.narrow(0, at, n),
              values.defined() ? values.reshape({n}) : zeros({}, DType::f32, device));
    at += n;
  }
  Tensor recv = empty({dp_->size() * shard}, DType::f32, device);
  dp_->all_gather(send, recv);
  std::vector<int64_t> offset(static_cast<size_t>(dp_->size()));
  for (size_t r = 0; r < offset.size(); ++r) offset[r] = int64_t(r) * shard;
  for (size_t u = 0; u < plan_.units.size(); ++u) {
    int64_t& from = offset[size_t(plan_.owner[u])];
    unpack(u, recv.narrow(0, from, plan_.units[u].numel));
    from += plan_.units[u].numel;
  }
}

void ShardedOptimizer::step() {
  NoGradGuard no_grad;
  for (size_t u : owned_) {
    const Tensor g = params_[plan_.units[u].param].grad();
    unit_views_[u].set_grad(g.defined() ? unit_of(g, u) : Tensor());
  }
  inner_->set_lr(lr_);
  inner_->step();
  for (size_t u : owned_) unit_views_[u].set_grad(Tensor());
  // With one rank every unit is owned and already updated in place.
  if (dp_->size() == 1) return;
  all_gather_units([&](size_t u) { return unit_views_[u]; },
                   [&](size_t u, const Tensor& values) {
                     copy_into(unit_views_[u], values.reshape(unit_views_[u].shape()));
                   });
}

StateKinds ShardedOptimizer::state_kinds(size_t) const {
  return kinds_;
}

std::vector<ParamState> ShardedOptimizer::state() const {
  NoGradGuard no_grad;
  const std::vector<ParamState> local = inner_->state();
  const size_t num_units = plan_.units.size();
  const size_t T = kinds_.tensors.size(), C = kinds_.counters.size(), W = T + C;
  std::vector<ParamState> out(params_.size());
  if (num_units == 0 || W == 0) return out;

  // Row u: for each tensor kind 1 when unit u's owner has it, then each counter's value. Only the
  // owner writes a row, so the sum over ranks is the owner's row.
  Tensor info = zeros({int64_t(num_units), int64_t(W)}, DType::i64);
  int64_t* row = info.data<int64_t>();
  for (size_t u : owned_) {
    const ParamState& s = local[size_t(inner_index_[u])];
    for (size_t t = 0; t < T; ++t) row[u * W + t] = int64_t(s.tensors.count(kinds_.tensors[t]));
    for (size_t c = 0; c < C; ++c) row[u * W + T + c] = s.counters.at(kinds_.counters[c]);
  }
  dp_->all_reduce(info, parallel::ReduceOp::sum);

  // The units of one parameter step together, so they agree on counters and on which tensors
  // exist; anything else is a bug worth stopping for.
  auto agree = [&](size_t u, const std::string& kind, auto& slot, int64_t value) {
    LOOM_CHECK(slot == value || slot == -1, "[sharded] parameter ",
               param_label(plan_.units[u].param), ": its units disagree on state '", kind, "'");
    slot = value;
  };
  for (size_t c = 0; c < C; ++c) {
    std::vector<int64_t> value(params_.size(), -1);
    for (size_t u = 0; u < num_units; ++u)
      agree(u, kinds_.counters[c], value[plan_.units[u].param], row[u * W + T + c]);
    for (size_t i = 0; i < params_.size(); ++i)
      if (value[i] != -1) out[i].counters[kinds_.counters[c]] = value[i];
  }
  for (size_t t = 0; t < T; ++t) {
    const std::string& kind = kinds_.tensors[t];
    std::vector<int64_t> present(params_.size(), -1);
    for (size_t u = 0; u < num_units; ++u)
      agree(u, kind, present[plan_.units[u].param], row[u * W + t]);
    if (std::none_of(present.begin(), present.end(), [](int64_t p) { return p == 1; })) continue;
    for (size_t i = 0; i < params_.size(); ++i)
      if (present[i] == 1)
        out[i].tensors[kind] = empty(params_[i].shape(), DType::f32, params_[i].device());
    all_gather_units(
        [&](size_t u) {
          const auto& tensors = local[size_t(inner_index_[u])].tensors;
          const auto it = tensors.find(kind);
          return it == tensors.end() ? Tensor() : it->second;
        },
        [&](size_t u, const Tensor& values) {
          const size_t i = plan_.units[u].param;
          if (present[i] != 1) return;
          const Tensor dst = unit_of(out[i].tensors[kind], u);
          copy_into(dst, values.reshape(dst.shape()));
        });
  }
  return out;
}

void ShardedOptimizer::load_state(const std::vector<ParamState>& state) {
  check_state_count(state);
  for (size_t i = 0; i < params_.size(); ++i) check_param_state_of(i, state[i]);
  NoGradGuard no_grad;
  std::vector<ParamState> mine(owned_.size());
  for (size_t k = 0; k < owned_.size(); ++k) {
    const size_t u = owned_[k];
    const ParamState& whole = state[plan_.units[u].param];
    for (const auto& [kind, t] : whole.tensors) mine[k].tensors[kind] = unit_of(t, u);
    mine[k].counters = whole.counters;
  }
  inner_->load_state(mine);
}

int64_t ShardedOptimizer::state_bytes() const {
  return inner_->state_bytes();
}

std::unique_ptr<ShardedOptimizer> distributed_muon(std::vector<Tensor> params,
                                                   const MuonConfig& config,
                                                   std::shared_ptr<parallel::Communicator> dp) {
  return std::make_unique<ShardedOptimizer>(
      std::move(params),
      [config](std::vector<Tensor> p) { return std::make_unique<Muon>(std::move(p), config); },
      ShardCost::newton_schulz, std::move(dp));
}

std::unique_ptr<ShardedOptimizer> zero1_adamw(std::vector<Tensor> params, const AdamWConfig& config,
                                              std::shared_ptr<parallel::Communicator> dp) {
  return std::make_unique<ShardedOptimizer>(
      std::move(params),
      [config](std::vector<Tensor> p) { return std::make_unique<AdamW>(std::move(p), config); },
      ShardCost::numel, std::move(dp));
}

}  // namespace loom::optim
