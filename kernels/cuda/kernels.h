#pragma once
// The CUDA kernels as core's ops call them: host functions that enqueue work on the current
// device's compute stream (context.h) and return without waiting. Pointers are device pointers to
// element 0 of each operand; sizes and strides count elements. Every launch is checked; errors
// throw std::runtime_error "[cuda] <kernel>: ...". Plain C++ (no CUDA headers), so core includes
// it; kernels/cuda/*.cu implement it in CUDA builds and stub.cpp makes every entry fail clearly in
// CPU-only builds.
//
// Arithmetic: floating kernels compute in f32 for f32/bf16/f16 operands and in f64 for f64 ones
// (reductions accumulate in f32 or f64 likewise), then round to the output dtype. Integer
// operands compute in int64.
#include <cstdint>

#include "kernels/dtype.h"
#include "kernels/scalar_fns.h"

namespace loom::kernels::cuda {

constexpr int kMaxDims = 8;

// The iteration space of a strided kernel: sizes of up to kMaxDims dims (ndim 0 = one element).
struct IterShape {
  int ndim = 0;
  int64_t sizes[kMaxDims] = {};
  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= sizes[i];
    return n;
  }
};

// One operand over an IterShape: device pointer to element 0, dtype, strides (0 = broadcast).
// A null `data` reads `scalar` for every element instead (a host scalar, e.g. `x * 2.0`).
struct Operand {
  void* data = nullptr;
  DType dtype = DType::f32;
  int64_t strides[kMaxDims] = {};
  double scalar = 0;
};

// -- elementwise (elementwise.cu) ---------------------------------------------------------------
// y = F::f(x) over n contiguous elements; x and y share `dtype`. F is one of LOOM_UNARY_FNS.
template <class F>
void unary(const void* x, void* y, DType dtype, int64_t n);
// out = F::f(a, b) over `shape`, operands broadcast by their strides; a, b and out may have
// different dtypes (a comparison writes bool). F is one of LOOM_BINARY_FNS.
template <class F>
void binary(const IterShape& shape, const Operand& a, const Operand& b, const Operand& out);
// out = cond ? a : b (cond bool).
void where(const IterShape& shape, const Operand& cond, const Operand& a, const Operand& b,
           const Operand& out);
// out = min(max(x, lo), hi) over n contiguous elements of one dtype.
void clamp(const void* x, void* y, DType dtype, int64_t n, double lo, double hi);
// dst = src converted to dst.dtype, both strided over `shape`.
void copy(const IterShape& shape, const Operand& src, const Operand& dst);
// n contiguous elements of dst = value.
void fill(void* dst, DType dtype, int64_t n, double value);

// -- reductions (reduce.cu) ---------------------------------------------------------------------
enum class RowReduce { sum, max, min };
// y[r] = reduce(x[r, 0..n)) for contiguous x [rows, n]; x and y share `dtype` (f32, f64, bf16,
// f16, i32, i64). n == 0 gives 0 for sum (max/min refuse n == 0 in core). NaN propagates.
void reduce_rows(const void* x, void* y, DType dtype, int64_t rows, int64_t n, RowReduce kind);
// y[o, c] = reduce(x[o, 0..rows), c]) for contiguous x [outer, rows, cols] (outer <= 65535): a
// reduction over a run of middle or leading dims (bias gradients, modulation gradients summed over
// tokens) without transposing x first. rows == 0 gives 0 for sum.
void reduce_cols(const void* x, void* y, DType dtype, int64_t outer, int64_t rows, int64_t cols,
                 RowReduce kind);
// idx[r] = first position of the max (or min) of row r; NaN counts as the max.
void arg_reduce_rows(const void* x, int64_t* idx, DType dtype, int64_t rows, int64_t n,
                     bool is_max);

// -- matrix products (gemm.cpp, cuBLASLt) --------------------------------------------------------
// C[i] = op(A[i]) op(B[i]) for i < batch, row-major: op(A) is [m, k], op(B) is [k, n], C is
// [m, n] contiguous; A is stored [m, k] (or [k, m] when trans_a) with leading dimension lda, and
// likewise B. Batch strides are in elements (0 broadcasts). A, B, C share `dtype` (f32, f64,
// bf16, f16); accumulation in f32 (f64 for f64). allow_tf32 lets f32 use TF32 tensor cores.
// Epilogues (16/32-bit dtypes, not f64), chosen by which pointers are set; vectors and the
// [m, n] side matrix (leading dimension ldc, a multiple of 8) are in C's dtype:
//   bias                 C = AB + bias, bias [n] added to every row
//   bias + gelu_input    C = gelu_tanh(AB + bias), and AB + bias written to gelu_input (batch 1)
//   a_row_sums           C = AB, and a_row_sums [m] = Σ_k op(A)[i, k]: the bias gradient of a
//                        linear layer when op(A) is its output gradient transposed (batch 1;
//                        op(A) must be a transposed operand, trans_a)
// cuBLASLt's DGELU_BGRAD epilogue (the backward twin of the GELU one) is not used: on the H200 it
// ran as a separate kernel 3x slower than loom's vectorized GELU gradient (2026-11-29,
// docs/PERFORMANCE.md). The algorithm is cuBLASLt's first heuristic choice (keeping the fastest
// of its first eight moved a DiT-B/2 step by 0.6%, 2026-11-29, docs/PERFORMANCE.md).
struct Gemm {
  bool trans_a = false, trans_b = false;
  int64_t m = 0, n = 0, k = 0;
  int64_t lda = 0, ldb = 0, ldc = 0;
  int64_t batch = 1, stride_a = 0, stride_b = 0, stride_c = 0;
  const void* bias = nullptr;
  void* gelu_input = nullptr;
  void* a_row_sums = nullptr;
};
void gemm(const Gemm& g, const void* a, const void* b, void* c, DType dtype, bool allow_tf32);

// -- GELU gradient with its column sums (gelu_grad_sums.cu) -----------------------------------
// dx = g * gelu_tanh'(x) over contiguous [rows, cols] x, g, dx of one 16-bit dtype (bf16, f16),
// and col_sums [cols] (same dtype) = the sum over rows of dx as stored, accumulated in f32 in a
// fixed order: the MLP's fc1 bias gradient, read from the pass that makes its input gradient
// instead of from a GEMM epilogue that reads dx again. cols % 8 == 0, pointers 16-byte aligned.
void gelu_tanh_grad_col_sums(const void* x, const void* g, void* dx, void* col_sums, DType dtype,
                             int64_t rows, int64_t cols);

// -- normalization and softmax (nn.cu) ----------------------------------------------------------
// Row-wise over contiguous x [rows, n] of one dtype; statistics are f32 (f64 for f64 x).
void softmax_rows(const void* x, void* y, DType dtype, int64_t rows, int64_t n, bool log);
// y = (x - mean) * rstd * w + b (w, b optional: null); mean/rstd [rows] in the stats dtype.
void layer_norm_forward(const void* x, const void* w, const void* b, void* y, void* mean,
                        void* rstd, DType dtype, int64_t rows, int64_t n, double eps);
void rms_norm_forward(const void* x, const void* w, void* y, void* rstd, DType dtype, int64_t rows,
                      int64_t n, double eps);

// dx for layer_norm (mean given) or rms_norm (mean null) from x, the optional weight, the forward's
// statistics (stats dtype) and dy, all contiguous [rows, n].
void norm_backward_input(const void* x, const void* w, const void* mean, const void* rstd,
                         const void* dy, void* dx, DType dtype, int64_t rows, int64_t n);

// -- indexing (index.cu) ------------------------------------------------------------------------
// For x viewed as contiguous [outer, n, inner] and out [outer, m, inner]; idx has m entries (i32
// or i64). Indices are checked on the device: one outside [0, n) (for gather/scatter_add: outside
// [0, bound), the indexed operand's extent along dim) skips its element and is raised as an error
// at the host's next synchronization (index_fault.h).
void index_select(const void* x, void* out, DType dtype, const void* idx, DType idx_dtype,
                  int64_t outer, int64_t n, int64_t m, int64_t inner);
// out[o, idx[j], :] += src[o, j, :] (atomic, so duplicates add; order-dependent rounding).
void index_add(void* out, const void* src, DType dtype, const void* idx, DType idx_dtype,
               int64_t outer, int64_t n, int64_t m, int64_t inner);
// gather/scatter_add along `dim` over index's shape (strided operands, see the CPU twins in
// kernels/cpu/index.h): out[..i..] = x[..idx[..i..]..]; out[..idx[..i..]..] += src[..i..].
void gather(const IterShape& index_shape, int dim, int64_t bound, const Operand& x,
            const Operand& index, const Operand& out);
void scatter_add(const IterShape& index_shape, int dim, int64_t bound, const Operand& out,
                 const Operand& index, const Operand& src);
// The k largest (smallest) of each contiguous row x [rows, n], in rank order, ties by lower
// position, NaN above every number: values [rows, k] (x's dtype), indices [rows, k] i64.
void topk_rows(const void* x, void* values, int64_t* indices, DType dtype, int64_t rows, int64_t n,
               int64_t k, bool largest);

// -- convolution helpers (conv.cu) ----------------------------------------------------------------
// The CPU twins' geometry (kernels/cpu/conv.h): per plane (one channel of one sample) of
// [D, H, W]; 2-D convolutions use D = kD = 1.
struct ConvGeometry {
  int64_t in[3] = {1, 1, 1}, out[3] = {1, 1, 1};
  int64_t kernel[3] = {1, 1, 1}, stride[3] = {1, 1, 1}, padding[3] = {0, 0, 0};
};
// cols [planes * kD*kH*kW, Do*Ho*Wo] from contiguous x [planes, D, H, W]; padded taps read 0.
void vol2col(const ConvGeometry& g, int64_t planes, const void* x, void* cols, DType dtype);
// dx [planes, D, H, W] = the adjoint of vol2col (every column entry summed into its source).
void col2vol(const ConvGeometry& g, int64_t planes, const void* cols, void* dx, DType dtype);

// -- random numbers (random.cu) -----------------------------------------------------------------
// Fills n contiguous f32 values from Philox4x32-10 keyed (seed, stream), counters first, first + 1,
// ... (four values per counter), exactly as core/rng.cpp does on the host: uniform [0, 1), or
// standard normal by Box-Muller on word pairs (computed in double, rounded to f32).
enum class Distribution { uniform, normal };
void philox_fill(float* out, int64_t n, uint64_t seed, uint64_t stream, uint64_t first,
                 Distribution dist);

// -- optimizer updates (optim.cu) ----------------------------------------------------------------
// One AdamW step over n contiguous f32 elements, the CPU loop of optim/adamw.cpp exactly:
// p *= decay; m += (1 - beta1) (g - m); v = beta2 v + (1 - beta2) g^2;
// p -= step_size * m / (sqrt(v) / bc2_sqrt + eps).
struct AdamWStep {
  float decay, step_size, bc2_sqrt, eps, beta2, one_minus_beta1, one_minus_beta2;
};
void adamw_step(float* p, const float* g, float* m, float* v, int64_t n, const AdamWStep& s);

}  // namespace loom::kernels::cuda
