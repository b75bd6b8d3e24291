#pragma once
// Reductions over a list of dims (negative dims allowed; an empty list reduces every dim).
// keepdim leaves the reduced dims with size 1. Sums accumulate in double (f32) in a fixed order,
// so results do not depend on the thread count.
#include <vector>

#include "core/tensor.h"

namespace loom {

using Dims = std::vector<int64_t>;

Tensor sum(const Tensor& x, const Dims& dims = {}, bool keepdim = false);
Tensor mean(const Tensor& x, const Dims& dims = {}, bool keepdim = false);
// Max over dims; the gradient is shared evenly between tied maxima.
Tensor amax(const Tensor& x, const Dims& dims = {}, bool keepdim = false);
Tensor amin(const Tensor& x, const Dims& dims = {}, bool keepdim = false);
// Index (i64) of the first maximum along one dim. Not differentiable.
Tensor argmax(const Tensor& x, int64_t dim, bool keepdim = false);
// Variance; correction 1 is the unbiased estimator, 0 the population variance.
Tensor var(const Tensor& x, const Dims& dims = {}, bool keepdim = false, int64_t correction = 1);
// log(sum(exp(x))) over dims, computed stably.
Tensor logsumexp(const Tensor& x, const Dims& dims, bool keepdim = false);
// p-norm over dims (p = 2: sqrt of the sum of squares).
Tensor norm(const Tensor& x, double p = 2, const Dims& dims = {}, bool keepdim = false);

// Sums a broadcast gradient back to `shape` (the inverse of broadcasting `shape` to g's shape).
Tensor sum_to_shape(const Tensor& g, const Shape& shape);

}  // namespace loom
