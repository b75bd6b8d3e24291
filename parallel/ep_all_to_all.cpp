#include "parallel/ep_all_to_all.h"

#include "core/ops/index.h"

namespace loom::parallel {

ExpertExchange plan_expert_exchange(std::span<const int64_t> send_per_expert,
                                    std::span<const int64_t> recv_per_rank_expert, int ranks) {
  const int64_t n = int64_t(send_per_expert.size());
  LOOM_CHECK(ranks >= 1 && n >= ranks && n % ranks == 0, "[expert_exchange] ", n,
             " experts do not split evenly over ", ranks, " ranks");
  LOOM_CHECK(int64_t(recv_per_rank_expert.size()) == n, "[expert_exchange] expected ", n,
             " received counts (", ranks, " ranks x ", n / ranks, " local experts), got ",
             recv_per_rank_expert.size());
  ExpertExchange x;
  x.ranks = ranks;
  x.local_experts = n / ranks;
  const int64_t L = x.local_experts;
  x.send_counts.assign(size_t(ranks), 0);
  x.recv_counts.assign(size_t(ranks), 0);
  x.expert_counts.assign(size_t(L), 0);
  // start[j * L + l]: first rank-major row of the block rank j sent for local expert l.
  std::vector<int64_t> start(static_cast<size_t>(n));
  int64_t rows = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t s = send_per_expert[size_t(i)], r = recv_per_rank_expert[size_t(i)];
    LOOM_CHECK(s >= 0 && r >= 0, "[expert_exchange] counts must be >= 0, got send ", s,
               " and receive ", r, " at entry ", i);
    x.send_counts[size_t(i / L)] += s;
    x.recv_counts[size_t(i / L)] += r;
    x.expert_counts[size_t(i % L)] += r;
    start[size_t(i)] = rows;
    rows += r;
  }
  if (L == 1) return x;
  x.to_expert_major = empty({rows}, DType::i64);
  x.to_rank_major = empty({rows}, DType::i64);
  int64_t* to_em = x.to_expert_major.data<int64_t>();
  int64_t* to_rm = x.to_rank_major.data<int64_t>();
  int64_t pos = 0;
  for (int64_t l = 0; l < L; ++l) {
    for (int64_t j = 0; j < ranks; ++j) {
      const int64_t first = start[size_t(j * L + l)];
      for (int64_t i = 0; i < recv_per_rank_expert[size_t(j * L + l)]; ++i, ++pos) {
        to_em[pos] = first + i;
        to_rm[first + i] = pos;
      }
    }
  }
  return x;
}

ExpertExchange exchange_expert_counts(std::span<const int64_t> counts_per_expert, const Group& ep) {
  LOOM_CHECK(ep != nullptr, "[expert_exchange] the ep group is null");
  const int ranks = ep->size();
  const int64_t n = int64_t(counts_per_expert.size());
  LOOM_CHECK(n >= ranks && n % ranks == 0, "[expert_exchange] ", ep->describe(), ": ", n,
             " experts do not split evenly over ", ranks, " ranks");
  const std::vector<int64_t> per_rank(size_t(ranks), n / ranks);
  const Tensor send =
      from_vector(std::vector<int64_t>(counts_per_expert.begin(), counts_per_expert.end()), {n});
  const Tensor recv = empty({n}, DType::i64);
  ep->all_to_all_v(send, recv, per_rank, per_rank);
  return plan_expert_exchange(counts_per_expert, recv.to_vector<int64_t>(), ranks);
}

Tensor expert_dispatch(const Tensor& x, const Group& ep, const ExpertExchange& plan) {
  const Tensor received = all_to_all(x, ep, plan.send_counts, plan.recv_counts);
  if (!plan.to_expert_major.defined()) return received;
  return index_select(received, 0, plan.to_expert_major.to(x.device()));
}

Tensor expert_combine(const Tensor& y, const Group& ep, const ExpertExchange& plan) {
  const Tensor rank_major =
      plan.to_rank_major.defined() ? index_select(y, 0, plan.to_rank_major.to(y.device())) : y;
  return all_to_all(rank_major, ep, plan.recv_counts, plan.send_counts);
}

}  // namespace loom::parallel
