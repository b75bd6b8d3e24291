#include "models/moe/expert_dispatch.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace loom::moe {

ExpertDispatch sort_by_expert(const Tensor& topk_idx, int64_t n_experts, int64_t capacity) {
  LOOM_CHECK(topk_idx.defined() && topk_idx.dim() == 2, "[MoELayer] top-k indices must be [N, k]");
  LOOM_CHECK(topk_idx.dtype() == DType::i64 || topk_idx.dtype() == DType::i32,
             "[MoELayer] top-k indices must be i64 or i32, got ", dtype_name(topk_idx.dtype()));
  LOOM_CHECK(n_experts >= 1, "[MoELayer] n_experts must be positive, got ", n_experts);
  LOOM_CHECK(capacity >= 0, "[MoELayer] expert capacity must be >= 0 (0 = no limit), got ",
             capacity);
  const std::vector<int64_t> idx = topk_idx.to_vector<int64_t>();
  const int64_t k = topk_idx.size(1), m = int64_t(idx.size());
  std::vector<int64_t> routed(size_t(n_experts), 0);
  for (int64_t p = 0; p < m; ++p) {
    const int64_t e = idx[size_t(p)];
    LOOM_CHECK(e >= 0 && e < n_experts, "[MoELayer] expert id ", e, " at assignment ", p,
               " is out of range [0, ", n_experts, ")");
    ++routed[size_t(e)];
  }
  ExpertDispatch d;
  d.counts = routed;
  d.dropped.assign(size_t(n_experts), 0);
  if (capacity > 0) {
    for (size_t e = 0; e < routed.size(); ++e) {
      d.counts[e] = std::min(routed[e], capacity);
      d.dropped[e] = routed[e] - d.counts[e];
    }
  }
  // next[e]: the next sorted position of expert e; end[e]: one past its last kept position.
  std::vector<int64_t> next(size_t(n_experts), 0), end(size_t(n_experts), 0);
  int64_t kept = 0;
  for (size_t e = 0; e < routed.size(); ++e) {
    next[e] = kept;
    kept += d.counts[e];
    end[e] = kept;
  }
  d.order = empty({kept}, DType::i64);
  d.token = empty({kept}, DType::i64);
  int64_t* order = d.order.data<int64_t>();
  int64_t* token = d.token.data<int64_t>();
  for (int64_t p = 0; p < m; ++p) {
    const size_t e = size_t(idx[size_t(p)]);
    if (next[e] == end[e]) continue;  // over capacity: dropped
    const int64_t pos = next[e]++;
    order[pos] = p;
    token[pos] = p / k;
  }
  d.order = d.order.to(topk_idx.device());
  d.token = d.token.to(topk_idx.device());
  return d;
}

int64_t expert_capacity(double capacity_factor, int64_t n_tokens, int64_t top_k,
                        int64_t n_experts) {
  LOOM_CHECK(capacity_factor >= 0 && std::isfinite(capacity_factor),
             "[MoELayer] capacity_factor must be finite and >= 0 (0 = dropless), got ",
             capacity_factor);
  LOOM_CHECK(n_tokens >= 1 && top_k >= 1 && n_experts >= 1,
             "[MoELayer] expert capacity needs positive sizes, got ", n_tokens, " tokens, top_k ",
             top_k, ", ", n_experts, " experts");
  if (capacity_factor == 0) return 0;
  return int64_t(std::ceil(capacity_factor * double(n_tokens * top_k) / double(n_experts)));
}

}  // namespace loom::moe
