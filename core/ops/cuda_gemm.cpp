#include "core/ops/cuda_gemm.h"

#include "core/ops/linalg.h"
#include "core/ops/reduce.h"

namespace loom::ops {

GemmOperand as_gemm_operand(const Tensor& x) {
  const int64_t nd = x.dim();
  const int64_t rows = x.shape()[nd - 2], cols = x.shape()[nd - 1];
  const int64_t sr = x.strides()[nd - 2], sc = x.strides()[nd - 1];
  if ((sc == 1 || cols == 1) && sr >= std::max<int64_t>(cols, 1)) return {x, false, sr};
  if ((sr == 1 || rows == 1) && sc >= std::max<int64_t>(rows, 1)) return {x, true, sc};
  const Tensor c = x.contiguous();
  return {c, false, std::max<int64_t>(cols, 1)};
}

kernels::cuda::Gemm cuda_gemm_of(const GemmOperand& ga, const GemmOperand& gb, int64_t m,
                                 int64_t n, int64_t k) {
  return {.trans_a = ga.trans,
          .trans_b = gb.trans,
          .m = m,
          .n = n,
          .k = k,
          .lda = ga.ld,
          .ldb = gb.ld,
          .ldc = std::max<int64_t>(n, 1)};
}

Tensor cuda_product(const Tensor& a, const Tensor& b, const kernels::cuda::Gemm& epilogue) {
  const int64_t m = a.size(0), k = a.size(1), n = b.size(1);
  const GemmOperand ga = as_gemm_operand(a), gb = as_gemm_operand(b);
  Tensor out = empty({m, n}, a.dtype(), a.device());
  kernels::cuda::Gemm g = cuda_gemm_of(ga, gb, m, n, k);
  g.bias = epilogue.bias;
  g.gelu_input = epilogue.gelu_input;
  g.a_row_sums = epilogue.a_row_sums;
  kernels::cuda::gemm(g, ga.t.raw_data(), gb.t.raw_data(), out.raw_data(), out.dtype(),
                      matmul_allow_tf32());
  return out;
}

std::pair<Tensor, Tensor> weight_and_bias_grad(const Tensor& dy, const Tensor& x) {
  const DType t = dy.dtype();
  const bool epilogue = dy.device().is_cuda() && (t == DType::bf16 || t == DType::f16) &&
                        x.dtype() == t && dy.is_contiguous() && dy.size(1) % 8 == 0 &&
                        x.size(1) % 8 == 0;
  if (!epilogue) return {matmul(dy.t(), x), sum(dy, {0})};
  Tensor db = empty({dy.size(1)}, t, dy.device());
  Tensor dw = cuda_product(dy.t(), x, {.a_row_sums = db.raw_data()});
  return {dw, db};
}

}  // namespace loom::ops
