#include "parallel/collectives.h"

#include <numeric>

namespace loom::parallel {

namespace {

const Group& check_group(const char* op, const Group& group, const Tensor& x) {
  LOOM_CHECK(group != nullptr, "[", op, "] the group is null");
  LOOM_CHECK(x.defined(), "[", op, "] ", group->describe(), ": x is an undefined tensor");
  return group;
}

// Wraps a possibly negative dim of x (which must have one).
int64_t check_dim(const char* op, const Group& group, const Tensor& x, int64_t dim) {
  LOOM_CHECK(x.dim() >= 1, "[", op, "] ", group->describe(), ": x must have a dim, got a scalar");
  LOOM_CHECK(dim >= -x.dim() && dim < x.dim(), "[", op, "] ", group->describe(), ": dim ", dim,
             " is out of range for x of shape ", shape_str(x.shape()));
  return dim < 0 ? dim + x.dim() : dim;
}

// Checks that x.size(dim) splits evenly over the group; returns the wrapped dim.
int64_t check_split_dim(const char* op, const Group& group, const Tensor& x, int64_t dim) {
  const int64_t d = check_dim(op, group, x, dim);
  LOOM_CHECK(x.size(d) % group->size() == 0, "[", op, "] ", group->describe(), ": dim ", d,
             " of x ", shape_str(x.shape()), " has size ", x.size(d),
             ", not divisible by the group size ", group->size());
  return d;
}

// Concatenation over the group along dim, rank-major. One all_gather of the flattened tensor
// fills [S, ...x.shape]; moving that leading axis next to dim and merging gives the result.
Tensor gather_along(Communicator& comm, const Tensor& x, int64_t dim) {
  const Tensor xc = x.contiguous();
  const int64_t s = comm.size();
  Tensor buf = empty({s, xc.numel()}, xc.dtype(), xc.device());
  comm.all_gather(xc.reshape({1, xc.numel()}), buf);
  Shape stacked{s};
  stacked.insert(stacked.end(), xc.shape().begin(), xc.shape().end());
  Shape merged = xc.shape();
  merged[size_t(dim)] *= s;
  Tensor g = buf.view(stacked);
  if (dim != 0) {
    std::vector<int64_t> perm;
    for (int64_t i = 1; i <= dim; ++i) perm.push_back(i);
    perm.push_back(0);
    for (int64_t i = dim + 1; i < int64_t(stacked.size()); ++i) perm.push_back(i);
    g = g.permute(perm).contiguous();
  }
  return g.reshape(merged);
}

Tensor chunk_of(const Communicator& comm, const Tensor& x, int64_t dim) {
  const int64_t n = x.size(dim) / comm.size();
  return x.narrow(dim, comm.rank() * n, n).contiguous();
}

Tensor all_reduced(Communicator& comm, const Tensor& x) {
  Tensor y = x.contiguous().clone();
  comm.all_reduce(y, ReduceOp::sum);
  return y;
}

Tensor reduce_scattered(Communicator& comm, const Tensor& x) {
  const Tensor xc = x.contiguous();
  Shape shape = xc.shape();
  shape[0] /= comm.size();
  Tensor y = empty(shape, xc.dtype(), xc.device());
  comm.reduce_scatter(xc, y, ReduceOp::sum);
  return y;
}

Tensor exchanged(Communicator& comm, const Tensor& x, const std::vector<int64_t>& send,
                 const std::vector<int64_t>& recv) {
  const Tensor xc = x.contiguous();
  Shape shape = xc.shape();
  if (!shape.empty()) shape[0] = std::accumulate(recv.begin(), recv.end(), int64_t(0));
  Tensor y = empty(shape, xc.dtype(), xc.device());
  comm.all_to_all_v(xc, y, send, recv);
  return y;
}

// Base of the collective ops: none reads its inputs in backward, only the group (and dims).
class CollectiveOp : public Op {
 public:
  explicit CollectiveOp(Group group) : group_(std::move(group)) {}
  bool saves_inputs() const override { return false; }

 protected:
  Group group_;
};

class CopyTo final : public CollectiveOp {
 public:
  using CollectiveOp::CollectiveOp;
  const char* name() const override { return "CopyTo"; }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override { return {in[0]}; }
  std::vector<Tensor> backward(const SavedContext&, const std::vector<Tensor>& g) override {
    return {all_reduced(*group_, g[0])};
  }
};

class ReduceFrom final : public CollectiveOp {
 public:
  using CollectiveOp::CollectiveOp;
  const char* name() const override { return "ReduceFrom"; }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    return {all_reduced(*group_, in[0])};
  }
  std::vector<Tensor> backward(const SavedContext&, const std::vector<Tensor>& g) override {
    return {g[0]};
  }
};

class ScatterTo final : public CollectiveOp {
 public:
  ScatterTo(Group group, int64_t dim) : CollectiveOp(std::move(group)), dim_(dim) {}
  const char* name() const override { return "ScatterTo"; }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    return {chunk_of(*group_, in[0], dim_)};
  }
  std::vector<Tensor> backward(const SavedContext&, const std::vector<Tensor>& g) override {
    return {gather_along(*group_, g[0], dim_)};
  }

 private:
  int64_t dim_;
};

class GatherFrom final : public CollectiveOp {
 public:
  GatherFrom(Group group, int64_t dim) : CollectiveOp(std::move(group)), dim_(dim) {}
  const char* name() const override { return "GatherFrom"; }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    return {gather_along(*group_, in[0], dim_)};
  }
  std::vector<Tensor> backward(const SavedContext&, const std::vector<Tensor>& g) override {
    return {chunk_of(*group_, g[0], dim_)};
  }

 private:
  int64_t dim_;
};

class ReduceScatterTo final : public CollectiveOp {
 public:
  using CollectiveOp::CollectiveOp;
  const char* name() const override { return "ReduceScatterTo"; }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    return {reduce_scattered(*group_, in[0])};
  }
  std::vector<Tensor> backward(const SavedContext&, const std::vector<Tensor>& g) override {
    return {gather_along(*group_, g[0], 0)};
  }
};

class AllGatherFrom final : public CollectiveOp {
 public:
  using CollectiveOp::CollectiveOp;
  const char* name() const override { return "AllGatherFrom"; }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    return {gather_along(*group_, in[0], 0)};
  }
  std::vector<Tensor> backward(const SavedContext&, const std::vector<Tensor>& g) override {
    return {reduce_scattered(*group_, g[0])};
  }
};

class AllToAll final : public CollectiveOp {
 public:
  AllToAll(Group group, std::vector<int64_t> send, std::vector<int64_t> recv)
      : CollectiveOp(std::move(group)), send_(std::move(send)), recv_(std::move(recv)) {}
  const char* name() const override { return "AllToAll"; }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    return {exchanged(*group_, in[0], send_, recv_)};
  }
  std::vector<Tensor> backward(const SavedContext&, const std::vector<Tensor>& g) override {
    return {exchanged(*group_, g[0], recv_, send_)};
  }

 private:
  std::vector<int64_t> send_, recv_;
};

}  // namespace

Tensor copy_to(const Tensor& x, const Group& group) {
  return apply<CopyTo>({x}, check_group("copy_to", group, x))[0];
}

Tensor reduce_from(const Tensor& x, const Group& group) {
  return apply<ReduceFrom>({x}, check_group("reduce_from", group, x))[0];
}

Tensor scatter_to(const Tensor& x, const Group& group, int64_t dim) {
  check_group("scatter_to", group, x);
  return apply<ScatterTo>({x}, group, check_split_dim("scatter_to", group, x, dim))[0];
}

Tensor gather_from(const Tensor& x, const Group& group, int64_t dim) {
  check_group("gather_from", group, x);
  return apply<GatherFrom>({x}, group, check_dim("gather_from", group, x, dim))[0];
}

Tensor reduce_scatter_to(const Tensor& x, const Group& group) {
  check_group("reduce_scatter_to", group, x);
  check_split_dim("reduce_scatter_to", group, x, 0);
  return apply<ReduceScatterTo>({x}, group)[0];
}

Tensor all_gather_from(const Tensor& x, const Group& group) {
  check_group("all_gather_from", group, x);
  check_dim("all_gather_from", group, x, 0);
  return apply<AllGatherFrom>({x}, group)[0];
}

Tensor all_to_all(const Tensor& x, const Group& group, std::vector<int64_t> send_counts,
                  std::vector<int64_t> recv_counts) {
  check_group("all_to_all", group, x);
  check_dim("all_to_all", group, x, 0);
  return apply<AllToAll>({x}, group, std::move(send_counts), std::move(recv_counts))[0];
}

}  // namespace loom::parallel
