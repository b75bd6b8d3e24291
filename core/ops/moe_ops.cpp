#include "core/ops/moe_ops.h"

#include <algorithm>

#include "core/autocast.h"
#include "core/autograd.h"
#include "core/ops/cuda_util.h"
#include "core/ops/linalg.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/cuda/moe.h"

namespace loom {

namespace {

using kernels::cuda::GemmProblem;
using kernels::cuda::GroupedGemm;

// ---- expert sort --------------------------------------------------------------------------------

[[noreturn]] void fail_out_of_range(int64_t id, int64_t assignment, int64_t n_experts) {
  LOOM_FAIL("[sort_by_expert] expert id ", id, " at assignment ", assignment,
            " is out of range [0, ", n_experts, ")");
}

// counts and dropped from the routed counts and the capacity.
void cut_at_capacity(ExpertDispatch& d, const std::vector<int64_t>& routed, int64_t capacity) {
  d.counts = routed;
  d.dropped.assign(routed.size(), 0);
  if (capacity == 0) return;
  for (size_t e = 0; e < routed.size(); ++e) {
    d.counts[e] = std::min(routed[e], capacity);
    d.dropped[e] = routed[e] - d.counts[e];
  }
}

// The CPU twin of kernels::cuda::expert_sort: a sequential stable counting sort.
ExpertDispatch sort_on_host(const Tensor& topk_idx, int64_t n_experts, int64_t capacity) {
  const std::vector<int64_t> idx = topk_idx.to_vector<int64_t>();
  const int64_t k = topk_idx.size(1), m = int64_t(idx.size());
  std::vector<int64_t> routed(size_t(n_experts), 0);
  for (int64_t p = 0; p < m; ++p) {
    const int64_t e = idx[size_t(p)];
    if (e < 0 || e >= n_experts) fail_out_of_range(e, p, n_experts);
    ++routed[size_t(e)];
  }
  ExpertDispatch d;
  cut_at_capacity(d, routed, capacity);
  d.routed = from_vector(routed, {n_experts});
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
  d.position = empty({m}, DType::i64);
  int64_t* order = d.order.data<int64_t>();
  int64_t* token = d.token.data<int64_t>();
  int64_t* position = d.position.data<int64_t>();
  for (int64_t p = 0; p < m; ++p) {
    const size_t e = size_t(idx[size_t(p)]);
    if (next[e] == end[e]) {  // over capacity: dropped
      position[p] = -1;
      continue;
    }
    const int64_t pos = next[e]++;
    order[pos] = p;
    token[pos] = p / k;
    position[p] = pos;
  }
  return d;
}

ExpertDispatch sort_on_device(const Tensor& topk_idx, int64_t n_experts, int64_t capacity) {
  LOOM_CHECK(n_experts <= kernels::cuda::kMaxSortExperts, "[sort_by_expert] at most ",
             kernels::cuda::kMaxSortExperts, " experts on CUDA, got ", n_experts);
  const Tensor ids = topk_idx.contiguous();
  const int64_t n_assign = ids.numel();
  const Device device = ids.device();
  // Sized for every assignment; narrowed to the kept ones once the counts are known.
  Tensor order = empty({n_assign}, DType::i64, device),
         token = empty({n_assign}, DType::i64, device),
         position = empty({n_assign}, DType::i64, device);
  Tensor summary = empty({n_experts + 1}, DType::i64, device);
  kernels::cuda::expert_sort({.ids = ids.raw_data(),
                              .ids_dtype = ids.dtype(),
                              .n_assign = n_assign,
                              .top_k = ids.size(1),
                              .n_experts = n_experts,
                              .capacity = capacity,
                              .order = order.data<int64_t>(),
                              .token = token.data<int64_t>(),
                              .position = position.data<int64_t>(),
                              .routed = summary.data<int64_t>()});
  std::vector<int64_t> routed = summary.to_vector<int64_t>();  // the one synchronization
  const int64_t bad = routed.back();
  if (bad < n_assign)
    fail_out_of_range(int64_t(ids.reshape({-1}).narrow(0, bad, 1).item()), bad, n_experts);
  routed.pop_back();
  ExpertDispatch d;
  cut_at_capacity(d, routed, capacity);
  int64_t kept = 0;
  for (int64_t c : d.counts) kept += c;
  d.order = order.narrow(0, 0, kept);
  d.token = token.narrow(0, 0, kept);
  d.position = position;
  d.routed = summary.narrow(0, 0, n_experts);
  return d;
}

// ---- grouped matrix products ------------------------------------------------------------------

// The three per-expert products over expert-sorted rows (counts[l] rows of expert l). They are
// closed under differentiation, so each one's backward is two of them.
enum class Grouped {
  rows_wt,  // a [M, D], b [L, F, D] -> [M, F]:    rows of expert l times b[l]^T
  rows_w,   // a [M, F], b [L, F, D] -> [M, D]:    rows of expert l times b[l]
  rows_t,   // a [M, F], b [M, D]    -> [L, F, D]: a_l^T b_l per expert (a weight gradient)
};

Tensor grouped_matmul(Grouped form, const Tensor& a, const Tensor& b,
                      const std::vector<int64_t>& counts);

const void* element(const Tensor& t, int64_t offset) {
  return static_cast<const char*>(t.raw_data()) + offset * int64_t(dtype_size(t.dtype()));
}
void* element(Tensor& t, int64_t offset) {
  return static_cast<char*>(t.raw_data()) + offset * int64_t(dtype_size(t.dtype()));
}

// The CPU twin of kernels::cuda::grouped_gemm: one BLAS GEMM per problem.
void grouped_gemm_cpu(const GroupedGemm& g, const std::vector<GemmProblem>& problems, DType dtype) {
  LOOM_DISPATCH_FLOAT(dtype, "grouped_linear", [&] {
    for (const GemmProblem& p : problems) {
      if (p.m == 0 || p.n == 0) continue;
      scalar_t* c = static_cast<scalar_t*>(p.c);
      if (p.k == 0) {  // an empty sum (an expert without rows): C = 0
        std::fill(c, c + p.m * p.n, scalar_t(0));
        continue;
      }
      const kernels::cpu::GemmParams params{.trans_a = g.trans_a,
                                            .trans_b = g.trans_b,
                                            .m = p.m,
                                            .n = p.n,
                                            .k = p.k,
                                            .lda = g.lda,
                                            .ldb = g.ldb,
                                            .ldc = p.n};
      kernels::cpu::gemm(params, static_cast<const scalar_t*>(p.a),
                         static_cast<const scalar_t*>(p.b), c);
    }
  });
}

// One grouped product as GEMM problems: the layout they share and one problem per expert, writing
// into out. f and d are the F and D of the form's shapes.
struct GroupedCall {
  GroupedGemm layout;
  std::vector<GemmProblem> problems;
};
GroupedCall plan_grouped(Grouped form, const Tensor& a, const Tensor& b, Tensor& out,
                         const std::vector<int64_t>& counts, int64_t f, int64_t d) {
  GroupedCall call;
  switch (form) {
    case Grouped::rows_wt:
      call.layout = {.trans_a = false, .trans_b = true, .lda = d, .ldb = d};
      break;
    case Grouped::rows_w:
      call.layout = {.trans_a = false, .trans_b = false, .lda = f, .ldb = d};
      break;
    case Grouped::rows_t:
      call.layout = {.trans_a = true, .trans_b = false, .lda = f, .ldb = d};
      break;
  }
  int64_t row = 0;  // first row of expert l
  for (size_t l = 0; l < counts.size(); ++l) {
    const int64_t rows = counts[l], weight = int64_t(l) * f * d;
    switch (form) {
      case Grouped::rows_wt:  // [rows, D] x [F, D]^T
        call.problems.push_back(
            {rows, f, d, element(a, row * d), element(b, weight), element(out, row * f)});
        break;
      case Grouped::rows_w:  // [rows, F] x [F, D]
        call.problems.push_back(
            {rows, d, f, element(a, row * f), element(b, weight), element(out, row * d)});
        break;
      case Grouped::rows_t:  // [rows, F]^T x [rows, D]
        call.problems.push_back(
            {f, d, rows, element(a, row * f), element(b, row * d), element(out, weight)});
        break;
    }
    row += rows;
  }
  return call;
}

class GroupedMatmulOp final : public Op {
 public:
  GroupedMatmulOp(Grouped form, std::vector<int64_t> counts)
      : form_(form), counts_(std::move(counts)) {}
  const char* name() const override { return "grouped_linear"; }

  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    const Tensor a = in[0].contiguous(), b = in[1].contiguous();
    const int64_t f = form_ == Grouped::rows_wt ? b.size(1) : a.size(1);
    const int64_t d = form_ == Grouped::rows_wt ? a.size(1) : b.size(b.dim() - 1);
    const Shape shape = form_ == Grouped::rows_t
                            ? Shape{int64_t(counts_.size()), f, d}
                            : Shape{a.size(0), form_ == Grouped::rows_wt ? f : d};
    Tensor out = empty(shape, a.dtype(), a.device());
    const GroupedCall call = plan_grouped(form_, a, b, out, counts_, f, d);
    if (a.device().is_cuda()) {
      kernels::cuda::grouped_gemm(call.layout, call.problems.data(), int64_t(call.problems.size()),
                                  a.dtype(), matmul_allow_tf32());
    } else {
      grouped_gemm_cpu(call.layout, call.problems, a.dtype());
    }
    return {out};
  }

  std::vector<Tensor> backward(const SavedContext& ctx, const std::vector<Tensor>& grads) override {
    const Tensor &a = ctx.inputs[0], &b = ctx.inputs[1];
    const Tensor g = grads[0].to(a.dtype());
    const bool need_a = ctx.needs_grad[0], need_b = ctx.needs_grad[1];
    auto product = [&](bool needed, Grouped form, const Tensor& x, const Tensor& y) {
      return needed ? grouped_matmul(form, x, y, counts_) : Tensor();
    };
    switch (form_) {
      case Grouped::rows_wt:
        return {product(need_a, Grouped::rows_w, g, b), product(need_b, Grouped::rows_t, g, a)};
      case Grouped::rows_w:
        return {product(need_a, Grouped::rows_wt, g, b), product(need_b, Grouped::rows_t, a, g)};
      case Grouped::rows_t:
        return {product(need_a, Grouped::rows_wt, b, g), product(need_b, Grouped::rows_w, a, g)};
    }
    LOOM_ASSERT(false, "unknown grouped product");
    return {};
  }

 private:
  Grouped form_;
  std::vector<int64_t> counts_;
};

Tensor grouped_matmul(Grouped form, const Tensor& a, const Tensor& b,
                      const std::vector<int64_t>& counts) {
  return apply<GroupedMatmulOp>({a, b}, form, counts)[0];
}

// ---- SwiGLU -------------------------------------------------------------------------------------

constexpr int64_t kSwiGluGrain = 1 << 15;

// Fused backward of swiglu: {da, db} from a, b and the output gradient g (one pass).
class SwiGluGradOp final : public Op {
 public:
  const char* name() const override { return "swiglu_grad"; }
  bool saves_inputs() const override { return false; }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    const Tensor a = in[0].contiguous(), b = in[1].contiguous();
    const Tensor g = in[2].to(a.dtype()).contiguous();
    Tensor da = empty(a.shape(), a.dtype(), a.device()),
           db = empty(a.shape(), a.dtype(), a.device());
    const int64_t n = a.numel();
    if (a.device().is_cuda()) {
      kernels::cuda::swiglu_backward(a.raw_data(), b.raw_data(), g.raw_data(), da.raw_data(),
                                     db.raw_data(), a.dtype(), n);
      return {da, db};
    }
    LOOM_DISPATCH_FLOAT(a.dtype(), "swiglu", [&] {
      const scalar_t *pa = a.data<scalar_t>(), *pb = b.data<scalar_t>(), *pg = g.data<scalar_t>();
      scalar_t *pda = da.data<scalar_t>(), *pdb = db.data<scalar_t>();
      kernels::cpu::parallel_for(0, n, kSwiGluGrain, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i)
          kernels::fn::SwiGluGrad::f(pa[i], pb[i], pg[i], pda[i], pdb[i]);
      });
    });
    return {da, db};
  }
  std::vector<Tensor> backward(const SavedContext&, const std::vector<Tensor>&) override {
    LOOM_FAIL("[swiglu_grad] second derivatives of swiglu are not supported");
  }
};

class SwiGluOp final : public Op {
 public:
  const char* name() const override { return "swiglu"; }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    const Tensor a = in[0].contiguous(), b = in[1].contiguous();
    Tensor y = empty(a.shape(), a.dtype(), a.device());
    const int64_t n = a.numel();
    if (a.device().is_cuda()) {
      kernels::cuda::swiglu_forward(a.raw_data(), b.raw_data(), y.raw_data(), a.dtype(), n);
      return {y};
    }
    LOOM_DISPATCH_FLOAT(a.dtype(), "swiglu", [&] {
      const scalar_t *pa = a.data<scalar_t>(), *pb = b.data<scalar_t>();
      scalar_t* py = y.data<scalar_t>();
      kernels::cpu::parallel_for(0, n, kSwiGluGrain, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) py[i] = kernels::fn::SwiGlu::f(pa[i], pb[i]);
      });
    });
    return {y};
  }
  std::vector<Tensor> backward(const SavedContext& ctx, const std::vector<Tensor>& g) override {
    const std::vector<Tensor> d = apply<SwiGluGradOp>({ctx.inputs[0], ctx.inputs[1], g[0]});
    return {ctx.needs_grad[0] ? d[0] : Tensor(), ctx.needs_grad[1] ? d[1] : Tensor()};
  }
};

}  // namespace

ExpertDispatch sort_by_expert(const Tensor& topk_idx, int64_t n_experts, int64_t capacity) {
  LOOM_CHECK(topk_idx.defined() && topk_idx.dim() == 2,
             "[sort_by_expert] top-k indices must be [N, k]");
  LOOM_CHECK(topk_idx.dtype() == DType::i64 || topk_idx.dtype() == DType::i32,
             "[sort_by_expert] top-k indices must be i64 or i32, got ",
             dtype_name(topk_idx.dtype()));
  LOOM_CHECK(n_experts >= 1, "[sort_by_expert] n_experts must be positive, got ", n_experts);
  LOOM_CHECK(capacity >= 0, "[sort_by_expert] expert capacity must be >= 0 (0 = no limit), got ",
             capacity);
  return topk_idx.device().is_cuda() ? sort_on_device(topk_idx, n_experts, capacity)
                                     : sort_on_host(topk_idx, n_experts, capacity);
}

Tensor grouped_linear(const Tensor& x_in, const Tensor& w_in, const std::vector<int64_t>& counts) {
  LOOM_CHECK(x_in.defined() && w_in.defined(), "[grouped_linear] undefined operand");
  const Tensor x = autocast(x_in), w = autocast(w_in);
  LOOM_CHECK(x.dim() == 2 && w.dim() == 3 && x.size(1) == w.size(2), "[grouped_linear] expected x ",
             "[M, D] and w [L, F, D], got ", shape_str(x.shape()), " and ", shape_str(w.shape()));
  LOOM_CHECK(int64_t(counts.size()) == w.size(0), "[grouped_linear] expected ", w.size(0),
             " row counts (one per expert of w ", shape_str(w.shape()), "), got ", counts.size());
  int64_t rows = 0;
  for (int64_t c : counts) {
    LOOM_CHECK(c >= 0, "[grouped_linear] negative row count ", c);
    rows += c;
  }
  LOOM_CHECK(rows == x.size(0), "[grouped_linear] the row counts sum to ", rows, " but x has ",
             x.size(0), " rows ", shape_str(x.shape()));
  ops::common_device({&x, &w}, "grouped_linear");
  LOOM_CHECK(x.dtype() == w.dtype() && is_floating(x.dtype()), "[grouped_linear] dtypes ",
             dtype_name(x.dtype()), " and ", dtype_name(w.dtype()), " must be one floating dtype");
  return grouped_matmul(Grouped::rows_wt, x, w, counts);
}

Tensor swiglu(const Tensor& a, const Tensor& b) {
  LOOM_CHECK(a.defined() && b.defined(), "[swiglu] undefined operand");
  LOOM_CHECK(a.shape() == b.shape(), "[swiglu] shapes differ: ", shape_str(a.shape()), " and ",
             shape_str(b.shape()));
  LOOM_CHECK(a.dtype() == b.dtype() && is_floating(a.dtype()), "[swiglu] dtypes ",
             dtype_name(a.dtype()), " and ", dtype_name(b.dtype()), " must be one floating dtype");
  ops::common_device({&a, &b}, "swiglu");
  return apply<SwiGluOp>({a, b})[0];
}

}  // namespace loom
