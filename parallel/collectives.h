#pragma once
// Differentiable collectives: the building blocks of tensor, sequence and expert parallelism,
// in conjugate pairs (Megatron-Core tensor_parallel/mappings.py). Each is an ordinary autograd Op
// whose backward is the conjugate collective, so a parallel layer is written as plain forward code
// and its gradients come out right per rank. Each function runs its collective over `group` and
// returns a contiguous tensor; copy_to's output, and scatter_to's when the chunk is already
// contiguous, share x's storage (ops never write their inputs; in-place Communicator calls on such
// an output would also change x):
//
//   function            forward                              backward (of grad_y)
//   copy_to             y = x                                all_reduce(sum)
//   reduce_from         y = all_reduce(sum) of x             identity
//   scatter_to(dim)     y = this rank's chunk of x along dim all_gather along dim
//   gather_from(dim)    y = all_gather along dim             this rank's chunk along dim
//   reduce_scatter_to   y = reduce_scatter(sum), dim 0       all_gather along dim 0
//   all_gather_from     y = all_gather along dim 0           reduce_scatter(sum) along dim 0
//   all_to_all          y = all_to_all_v(send, recv counts)  all_to_all_v(recv, send counts)
//
// copy_to / reduce_from bracket a tensor-parallel region (input replicated, partial outputs
// summed). scatter_to / gather_from move between replicated and dim-sharded activations whose
// gradient is itself replicated. reduce_scatter_to / all_gather_from are the sequence-parallel
// pair: all_gather_from's gradient is summed over ranks because each rank's copy of the gathered
// tensor feeds a different partial computation. all_to_all is its own inverse with the counts
// swapped (expert dispatch and combine). Chunks and gathers are rank-major: rank r owns rows (or
// slices along dim) [r * n, (r + 1) * n).
//
// Because the backward runs collectives, every rank of `group` must build the same graph through
// these ops (same calls, same order, same requires_grad), or backward deadlocks. Data movement
// takes any dtype; the reducing ones take what Communicator's reductions take. Argument errors
// throw loom::Error "[op] group <name> (...): ..." as the Communicator does.
#include <cstdint>
#include <memory>
#include <vector>

#include "core/autograd.h"
#include "parallel/communicator.h"

namespace loom::parallel {

using Group = std::shared_ptr<Communicator>;

// Identity forward; the gradient is summed over the group.
Tensor copy_to(const Tensor& x, const Group& group);
// Sum over the group forward; the gradient passes through unchanged.
Tensor reduce_from(const Tensor& x, const Group& group);
// x [.., S * n, ..] -> [.., n, ..] along dim (S = group size, x.size(dim) divisible by S); the
// gradient is gathered along dim.
Tensor scatter_to(const Tensor& x, const Group& group, int64_t dim = -1);
// x [.., n, ..] -> [.., S * n, ..] along dim, rank-major; the gradient is split along dim.
Tensor gather_from(const Tensor& x, const Group& group, int64_t dim = -1);
// x [S * n, ...] -> [n, ...]: this rank's rows of the sum over the group; the gradient is gathered.
Tensor reduce_scatter_to(const Tensor& x, const Group& group);
// x [n, ...] -> [S * n, ...], rank-major; the gradient is summed and scattered (reduce_scatter).
Tensor all_gather_from(const Tensor& x, const Group& group);
// x [sum(send_counts), ...] -> [sum(recv_counts), ...] as Communicator::all_to_all_v; the
// gradient travels back by the same call with the counts swapped.
Tensor all_to_all(const Tensor& x, const Group& group, std::vector<int64_t> send_counts,
                  std::vector<int64_t> recv_counts);

}  // namespace loom::parallel
