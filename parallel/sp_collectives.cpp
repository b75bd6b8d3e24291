#include "parallel/sp_collectives.h"

namespace loom::parallel {

namespace {

void check_args(const char* op, const Group& group, const Tensor& x) {
  LOOM_CHECK(group != nullptr, "[", op, "] the group is null");
  LOOM_CHECK(x.defined(), "[", op, "] ", group->describe(), ": x is an undefined tensor");
  LOOM_CHECK(x.dim() >= 1, "[", op, "] ", group->describe(), ": x must have a dim, got a scalar");
}

int64_t wrap_dim(const char* op, const Group& group, const Tensor& x, int64_t dim) {
  LOOM_CHECK(dim >= -x.dim() && dim < x.dim(), "[", op, "] ", group->describe(), ": dim ", dim,
             " is out of range for x of shape ", shape_str(x.shape()));
  return dim < 0 ? dim + x.dim() : dim;
}

void check_divisible(const char* op, const Group& group, const Tensor& x, int64_t dim) {
  LOOM_CHECK(x.size(dim) % group->size() == 0, "[", op, "] ", group->describe(), ": dim ", dim,
             " of x ", shape_str(x.shape()), " has size ", x.size(dim),
             ", not divisible by the group size ", group->size());
}

// The permutation of `rank` dims that brings `dim` to the front, keeping the others in order.
std::vector<int64_t> to_front(int64_t rank, int64_t dim) {
  std::vector<int64_t> perm{dim};
  for (int64_t i = 0; i < rank; ++i)
    if (i != dim) perm.push_back(i);
  return perm;
}

std::vector<int64_t> inverse(const std::vector<int64_t>& perm) {
  std::vector<int64_t> inv(perm.size());
  for (size_t i = 0; i < perm.size(); ++i) inv[size_t(perm[i])] = int64_t(i);
  return inv;
}

}  // namespace

Tensor all_gather_along(const Tensor& x, const Group& group, int64_t dim) {
  check_args("all_gather_along", group, x);
  const int64_t d = wrap_dim("all_gather_along", group, x, dim);
  const std::vector<int64_t> perm = to_front(x.dim(), d);
  return all_gather_from(x.permute(perm), group).permute(inverse(perm));
}

Tensor reduce_scatter_along(const Tensor& x, const Group& group, int64_t dim) {
  check_args("reduce_scatter_along", group, x);
  const int64_t d = wrap_dim("reduce_scatter_along", group, x, dim);
  check_divisible("reduce_scatter_along", group, x, d);
  const std::vector<int64_t> perm = to_front(x.dim(), d);
  return reduce_scatter_to(x.permute(perm), group).permute(inverse(perm));
}

Tensor all_to_all_along(const Tensor& x, const Group& group, int64_t scatter_dim,
                        int64_t gather_dim) {
  const char* op = "all_to_all_along";
  check_args(op, group, x);
  const int64_t s = wrap_dim(op, group, x, scatter_dim), g = wrap_dim(op, group, x, gather_dim);
  LOOM_CHECK(s != g, "[", op, "] ", group->describe(), ": scatter_dim and gather_dim are both ", s,
             " for x of shape ", shape_str(x.shape()));
  check_divisible(op, group, x, s);
  const int64_t S = group->size(), rank = x.dim();
  // Chunk j of the scatter dim becomes row j of a leading axis, which all_to_all exchanges: the
  // row received from rank j lands in row j. That axis then moves in front of the gather dim and
  // merges with it, which is the rank-major concatenation.
  Shape rest = x.shape();
  rest[size_t(s)] /= S;
  Shape split = rest;
  split.insert(split.begin() + s, S);
  const Tensor rows = x.reshape(split).permute(to_front(rank + 1, s));
  const std::vector<int64_t> ones(static_cast<size_t>(S), 1);
  const Tensor received = all_to_all(rows, group, ones, ones);  // [S, rest...]
  std::vector<int64_t> perm;
  for (int64_t i = 1; i <= g; ++i) perm.push_back(i);
  perm.push_back(0);
  for (int64_t i = g + 1; i <= rank; ++i) perm.push_back(i);
  Shape merged = rest;
  merged[size_t(g)] *= S;
  return received.permute(perm).reshape(merged);
}

}  // namespace loom::parallel
