#pragma once
// Differentiable collectives over a chosen dim, for activations split along their tokens:
// Megatron sequence parallelism (tokens split over the tensor-parallel group between a row- and
// the next column-parallel linear) and DeepSpeed-Ulysses (tokens split over the sequence-parallel
// group, turned into head shards around attention). Each is a composition of the conjugate pairs
// of collectives.h with views, so its backward is the conjugate collective:
//
//   function                                  forward                      backward (of grad_y)
//   all_gather_along(x, g, dim)               all-gather along dim         reduce-scatter(sum)
//                                                                          along dim
//   reduce_scatter_along(x, g, dim)           reduce-scatter(sum) along    all-gather along dim
//                                             dim
//   all_to_all_along(x, g, scatter, gather)   x split along `scatter` into all_to_all_along(grad_y,
//                                             S chunks, chunk j sent to    g, gather, scatter)
//                                             rank j; the S chunks received
//                                             concatenated along `gather`
//
// S is the group size; chunks and concatenations are rank-major (rank r owns slice r), as in
// collectives.h. all_gather_along / reduce_scatter_along are all_gather_from / reduce_scatter_to
// with `dim` moved to the front and back: all_gather_along's gradient is summed over ranks because
// every rank's copy of the gathered tensor feeds a different partial computation (a
// column-parallel linear's weight shard). all_to_all_along is its own conjugate with the dims
// swapped: with x [B, T/S, H, hd] (this rank's tokens, every head),
//   all_to_all_along(x, sp, 2, 1) -> [B, T, H/S, hd]  (every token, this rank's heads)
//   all_to_all_along(y, sp, 1, 2) -> back to [B, T/S, H, hd].
//
// As with every collective op, all ranks of the group must make the same calls in the same order
// with the same shapes and requires_grad. Argument errors throw loom::Error "[op] group <name>
// (...): ..." naming the shape, the dim and the group size.
#include <cstdint>

#include "parallel/collectives.h"

namespace loom::parallel {

// x [.., n, ..] (n at dim) -> [.., S * n, ..]: every rank's x concatenated along dim.
Tensor all_gather_along(const Tensor& x, const Group& group, int64_t dim);
// x [.., S * n, ..] -> [.., n, ..]: this rank's slice along dim of the sum over the group.
// x.size(dim) must be divisible by S.
Tensor reduce_scatter_along(const Tensor& x, const Group& group, int64_t dim);
// x.size(scatter_dim) divisible by S, scatter_dim != gather_dim. The result has x's shape with
// size(scatter_dim) / S and size(gather_dim) * S.
Tensor all_to_all_along(const Tensor& x, const Group& group, int64_t scatter_dim,
                        int64_t gather_dim);

}  // namespace loom::parallel
