#pragma once
// Joining, splitting and indexing ops. Index tensors are i32 or i64; out-of-range indices throw
// loom::Error naming the op, the index and the valid range.
#include <vector>

#include "core/tensor.h"

namespace loom {

// Concatenates along `dim`; all other dims must match.
Tensor cat(const std::vector<Tensor>& xs, int64_t dim = 0);
// Stacks equal-shaped tensors along a new dim.
Tensor stack(const std::vector<Tensor>& xs, int64_t dim = 0);
// Pieces of the given sizes along dim (views).
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim = 0);
// n nearly equal pieces along dim (the last may be smaller), as torch.chunk.
std::vector<Tensor> chunk(const Tensor& x, int64_t n, int64_t dim = 0);

// x.index_select(dim, index): picks slices along dim by a 1-D index.
Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index);
// out[i][j] = x[i][index[i][j]] (dim = 1), as torch.gather; index has x's rank.
Tensor gather(const Tensor& x, int64_t dim, const Tensor& index);
// out = x, then out[.. index[i][j] ..] += src[i][j] along dim, as torch.scatter_add.
Tensor scatter_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src);
// out = x, then out.select(dim, index[i]) += src.select(dim, i), as torch.index_add.
Tensor index_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src);

// The k largest (or smallest) values along dim and their i64 indices, sorted by value
// (descending for largest); ties resolved by the lower index. Values are differentiable.
struct TopK {
  Tensor values, indices;
};
TopK topk(const Tensor& x, int64_t k, int64_t dim = -1, bool largest = true);

}  // namespace loom
