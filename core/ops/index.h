#pragma once
// Joining, splitting and indexing ops. Index tensors are i32 or i64 (any layout); indices must
// lie in [0, size) (no negative wrap-around), else loom::Error names the op, the index, its
// position and the valid range. Ops that only move data (cat, stack, index_select, gather) take
// any dtype; the accumulating ones (scatter_add, index_add) and topk take f32, f64, i32 or i64.
// Gradients flow to the data operands, never to indices. Accumulation runs in index order within
// each output element, so results do not depend on the thread count.
#include <vector>

#include "core/tensor.h"

namespace loom {

// Concatenates along `dim`; dtypes and all other dims must match (pieces may be empty).
Tensor cat(const std::vector<Tensor>& xs, int64_t dim = 0);
// Stacks equal-shaped tensors along a new dim.
Tensor stack(const std::vector<Tensor>& xs, int64_t dim = 0);
// Pieces of the given sizes along dim (views).
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim = 0);
// Pieces of ceil(size / n) along dim, the last one smaller (views), as torch.chunk: this can give
// fewer than n pieces (5 in 4 chunks gives 2, 2, 1); an empty dim gives n empty pieces.
std::vector<Tensor> chunk(const Tensor& x, int64_t n, int64_t dim = 0);
// The slices x.select(dim, i) for every i (views), as one op: its backward stacks the slices'
// gradients in one copy, where separate selects would each scatter into a zero tensor of x's
// shape and then be summed (q, k, v out of one qkv projection).
std::vector<Tensor> unbind(const Tensor& x, int64_t dim = 0);

// x.index_select(dim, index): picks slices along dim by a 1-D index.
Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index);
// out[i][j] = x[i][index[i][j]] (dim = 1), as torch.gather; out has index's shape. index has x's
// rank and is no larger than x in every dim but `dim`.
Tensor gather(const Tensor& x, int64_t dim, const Tensor& index);
// out = x, then out[.. index[i][j] ..] += src[i][j] along dim, as torch.scatter_add. index, src
// and x have the same rank; index is no larger than src in any dim, nor than x outside `dim`.
Tensor scatter_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src);
// out = x, then out.select(dim, index[i]) += src.select(dim, i), as torch.index_add. index is
// 1-D; src is x's shape with dim replaced by index's length.
Tensor index_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src);

// The k largest (or smallest) values along dim and their i64 indices, sorted by value
// (descending for largest); ties resolved by the lower index; NaN ranks above every number.
// 0 <= k <= size(dim). Values are differentiable (the gradient goes to the picked elements).
struct TopK {
  Tensor values, indices;
};
TopK topk(const Tensor& x, int64_t k, int64_t dim = -1, bool largest = true);

}  // namespace loom
