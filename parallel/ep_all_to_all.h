#pragma once
// The token exchange of expert parallelism (docs/EXPERT_PARALLEL.md): E experts over an ep group
// of P ranks, rank j holding the L = E / P experts [j L, (j + 1) L).
//
// Layouts. A source rank's rows are sorted by global expert id (moe::sort_by_expert), so the rows
// for rank j's experts are one contiguous block and blocks follow rank order: exactly the
// rank-major send layout of Communicator::all_to_all_v. A rank receives them rank-major too
// (rank 0's rows for its L experts, then rank 1's, ...), while its experts want expert-major rows
// (local expert 0's rows from rank 0, from rank 1, ..., then local expert 1's, ...). Row order
// inside a (source rank, expert) block is kept, so the expert-major order is deterministic.
//
//   plan_expert_exchange   pure: the counts and permutations of one exchange
//   exchange_expert_counts collective: all-to-all of the per-expert counts, then the plan
//   expert_dispatch        x [M, ...] expert-sorted on the source -> [R, ...] expert-major here
//   expert_combine         the inverse: [R, ...] expert-major -> [M, ...] back on the source
//
// expert_dispatch and expert_combine are differentiable and conjugate: each is the variable-count
// all-to-all of collectives.h (parallel::all_to_all, whose backward is the reverse all-to-all with
// the send and receive counts swapped) composed with the permutation between the rank-major and
// the expert-major layout (index_select, whose backward is the inverse permutation). Hence
//   backward of expert_dispatch = expert_combine of the gradient, and
//   backward of expert_combine  = expert_dispatch of the gradient.
// Every rank of the ep group must call them in the same order, also with zero rows to send or
// to receive (the call still takes part in the collective), and with the same requires_grad, so
// that the backward collectives match. Errors throw loom::Error "[expert_exchange] ..." naming the
// sizes, or the Communicator's error naming the group and rank.
#include <cstdint>
#include <span>
#include <vector>

#include "parallel/collectives.h"

namespace loom::parallel {

struct ExpertExchange {
  int ranks = 1;                       // P
  int64_t local_experts = 0;           // L
  std::vector<int64_t> send_counts;    // [P]: rows this rank sends to rank j
  std::vector<int64_t> recv_counts;    // [P]: rows this rank receives from rank j
  std::vector<int64_t> expert_counts;  // [L]: rows local expert l receives from all ranks together
  // i64 [R], R = sum(recv_counts): the rank-major row at each expert-major position, and the
  // inverse. Undefined when L == 1 (the two layouts coincide).
  Tensor to_expert_major, to_rank_major;
};

// send_per_expert: this rank's rows per global expert [P * L]; recv_per_rank_expert: rows it
// receives, entry j * L + l from rank j for local expert l [P * L]. Throws unless both have P * L
// non-negative entries for P >= 1, L >= 1.
ExpertExchange plan_expert_exchange(std::span<const int64_t> send_per_expert,
                                    std::span<const int64_t> recv_per_rank_expert, int ranks);

// Collective over ep: sends entry j * L + l of counts_per_expert (this rank's rows for global
// expert j L + l) to rank j, and returns the plan of the exchange. counts_per_expert.size() must
// be divisible by ep->size().
ExpertExchange exchange_expert_counts(std::span<const int64_t> counts_per_expert, const Group& ep);

// x [sum(send_counts), ...] in expert-sorted order -> [sum(recv_counts), ...], expert-major.
Tensor expert_dispatch(const Tensor& x, const Group& ep, const ExpertExchange& plan);
// y [sum(recv_counts), ...] expert-major -> [sum(send_counts), ...], in the order dispatch read.
Tensor expert_combine(const Tensor& y, const Group& ep, const ExpertExchange& plan);

}  // namespace loom::parallel
