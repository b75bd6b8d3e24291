// CUDA builds: kernels.h's gemm over cuBLASLt.
//
// Row-major to column-major: cuBLASLt is column-major, and a row-major [r, c] array with leading
// dimension ld is the column-major [c, r] array with the same ld. So C = op(A) op(B) in row-major
// is computed as the column-major Cᵀ = op(B)ᵀ op(A)ᵀ: cuBLASLt's first operand is B (rows n), its
// second is A (columns m), and the transposes carry over unchanged.
//
// Plans: the matmul descriptor, the three layouts and the chosen algorithm are cached per
// (shape, strides, dtype, TF32, operand alignment, epilogue), so a training step's repeated
// GEMMs skip the heuristic query; unbatched GEMMs are keyed by size classes of m and k, so the
// MoE experts' varying row counts reuse plans too (the heuristic query costs about as much host
// time as a small GEMM's run). The epilogue's vector and side-matrix pointers are set on the
// cached descriptor at each call (calls are serialized on the compute stream). One 32 MiB
// workspace per device serves every call (all run on the compute stream, so they never overlap).

#include <cublasLt.h>

#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/cuda/check.h"
#include "kernels/cuda/context.h"
#include "kernels/cuda/kernels.h"
#include "kernels/cuda/runtime.h"

namespace loom::kernels::cuda {

namespace {

void lt_check(cublasStatus_t st, const char* what) {
  if (st != CUBLAS_STATUS_SUCCESS)
    throw std::runtime_error(std::string("[cuda] gemm: ") + what + " failed: " +
                             cublasLtGetStatusString(st));
}

template <class T>
void set_attribute(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr, const T& value,
                   const char* what) {
  lt_check(cublasLtMatmulDescSetAttribute(desc, attr, &value, sizeof(value)), what);
}

constexpr size_t kWorkspaceBytes = size_t(32) << 20;

int alignment_of(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  int align = 16;
  while (align > 1 && a % uintptr_t(align) != 0) align /= 2;
  return align;
}

// n rounded up to the next of four steps per power of two (at most 25% above n): the plan key's
// size class of an unbatched GEMM's m and k.
int64_t size_class(int64_t n) {
  if (n <= 64) return n;
  int64_t pow2 = 64;
  while (pow2 * 2 < n) pow2 *= 2;  // pow2 < n <= 2 * pow2
  const int64_t step = pow2 / 4;
  return (n + step - 1) / step * step;
}

// dtype, TF32, transposes, m (class), n, k (class), lda, ldb, ldc, batch, strides, alignments,
// device, epilogue.
using PlanKey = std::tuple<int, bool, bool, bool, int64_t, int64_t, int64_t, int64_t, int64_t,
                           int64_t, int64_t, int64_t, int64_t, int64_t, int, int, int, int, int>;

// The cuBLASLt epilogue the set pointers ask for (kernels.h), or DEFAULT.
cublasLtEpilogue_t epilogue_of(const Gemm& g) {
  if (g.bias) return g.gelu_input ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_BIAS;
  // cuBLASLt's B is our A, so our A's row sums over k are its B's bias gradient.
  if (g.a_row_sums) return CUBLASLT_EPILOGUE_BGRADB;
  return CUBLASLT_EPILOGUE_DEFAULT;
}

// Rejects pointer combinations kernels.h does not define.
void check_epilogue(const Gemm& g, DType dtype) {
  if (!g.bias && !g.gelu_input && !g.a_row_sums) return;
  if (dtype == DType::f64) throw std::runtime_error("[cuda] gemm: epilogues do not take f64");
  if ((g.gelu_input && !g.bias) || (g.bias && g.a_row_sums))
    throw std::runtime_error("[cuda] gemm: unsupported combination of epilogue pointers");
  if ((g.gelu_input || g.a_row_sums) && g.batch > 1)
    throw std::runtime_error("[cuda] gemm: this epilogue needs batch 1");
  if (g.gelu_input && g.ldc % 8 != 0)
    throw std::runtime_error("[cuda] gemm: the GELU epilogue needs ldc divisible by 8, got " +
                             std::to_string(g.ldc));
  if (g.a_row_sums && !g.trans_a)
    throw std::runtime_error("[cuda] gemm: a_row_sums needs a transposed A");
}

struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;  // cuBLASLt's A (= our B), B, C
  int64_t m = 0, k = 0;  // the exact sizes the layouts describe
  cublasLtMatmulAlgo_t algo{};
  void destroy_layouts() {
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    a = b = c = nullptr;
  }
  ~Plan() {
    destroy_layouts();
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};

struct DeviceState {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  std::map<PlanKey, std::unique_ptr<Plan>> plans;
};

DeviceState& state(int device) {
  static std::mutex mutex;
  static std::map<int, DeviceState> states;
  std::lock_guard<std::mutex> lock(mutex);
  DeviceState& s = states[device];
  if (!s.handle) {
    lt_check(cublasLtCreate(&s.handle), "cublasLtCreate");
    s.workspace = device_malloc(kWorkspaceBytes, device);
  }
  return s;
}

cudaDataType_t data_type(DType t) {
  switch (t) {
    case DType::f32: return CUDA_R_32F;
    case DType::f64: return CUDA_R_64F;
    case DType::bf16: return CUDA_R_16BF;
    case DType::f16: return CUDA_R_16F;
    default: throw std::runtime_error("[cuda] gemm: dtype must be f32, f64, bf16 or f16");
  }
}

cublasLtMatrixLayout_t make_layout(cudaDataType_t type, int64_t rows, int64_t cols, int64_t ld,
                                   int64_t batch, int64_t stride) {
  cublasLtMatrixLayout_t l = nullptr;
  lt_check(cublasLtMatrixLayoutCreate(&l, type, uint64_t(rows), uint64_t(cols), ld),
           "cublasLtMatrixLayoutCreate");
  if (batch > 1) {
    const int32_t count = int32_t(batch);
    lt_check(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count,
                                              sizeof(count)),
             "layout batch count");
    lt_check(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                                              &stride, sizeof(stride)),
             "layout batch stride");
  }
  return l;
}

// (Re)makes the plan's three layouts for g's exact sizes.
void set_layouts(Plan& plan, const Gemm& g, cudaDataType_t type) {
  plan.destroy_layouts();
  // Stored column-major shapes: our B is [k, n] row-major ([n, k] when transposed).
  plan.a = g.trans_b ? make_layout(type, g.k, g.n, g.ldb, g.batch, g.stride_b)
                     : make_layout(type, g.n, g.k, g.ldb, g.batch, g.stride_b);
  plan.b = g.trans_a ? make_layout(type, g.m, g.k, g.lda, g.batch, g.stride_a)
                     : make_layout(type, g.k, g.m, g.lda, g.batch, g.stride_a);
  plan.c = make_layout(type, g.n, g.m, g.ldc, g.batch, g.stride_c);
  plan.m = g.m;
  plan.k = g.k;
}

// Sets plan.algo to cuBLASLt's first heuristic choice for the plan's descriptor and layouts.
void choose_algo(cublasLtHandle_t handle, Plan& plan, const Gemm& g, const int (&align)[3]) {
  cublasLtMatmulPreference_t pref = nullptr;
  lt_check(cublasLtMatmulPreferenceCreate(&pref), "preference create");
  const uint64_t ws = kWorkspaceBytes;
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                       sizeof(ws));
  const uint32_t al[3] = {uint32_t(align[1]), uint32_t(align[0]), uint32_t(align[2])};
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al[0],
                                       sizeof(uint32_t));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al[1],
                                       sizeof(uint32_t));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al[2],
                                       sizeof(uint32_t));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al[2],
                                       sizeof(uint32_t));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(
      handle, plan.desc, plan.a, plan.b, plan.c, plan.c, pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (st != CUBLAS_STATUS_SUCCESS || found == 0)
    throw std::runtime_error("[cuda] gemm: no cuBLASLt algorithm for m=" + std::to_string(g.m) +
                             " n=" + std::to_string(g.n) + " k=" + std::to_string(g.k) +
                             " batch=" + std::to_string(g.batch));
  plan.algo = result.algo;
}

std::unique_ptr<Plan> make_plan(cublasLtHandle_t handle, const Gemm& g, DType dtype,
                                bool allow_tf32, const int (&align)[3]) {
  auto plan = std::make_unique<Plan>();
  const cudaDataType_t type = data_type(dtype);
  cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
  cudaDataType_t scale = CUDA_R_32F;
  if (dtype == DType::f64) {
    compute = CUBLAS_COMPUTE_64F;
    scale = CUDA_R_64F;
  } else if (dtype == DType::f32 && allow_tf32) {
    compute = CUBLAS_COMPUTE_32F_FAST_TF32;
  }
  lt_check(cublasLtMatmulDescCreate(&plan->desc, compute, scale), "cublasLtMatmulDescCreate");
  // cuBLASLt's A is our B, its B our A (see the file comment).
  const cublasOperation_t op_lt_a = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_lt_b = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  set_attribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, op_lt_a, "desc transa");
  set_attribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, op_lt_b, "desc transb");
  const cublasLtEpilogue_t epilogue = epilogue_of(g);
  if (epilogue != CUBLASLT_EPILOGUE_DEFAULT) {
    set_attribute(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, epilogue, "desc epilogue");
    set_attribute(plan->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, type, "desc bias type");
  }
  if (g.gelu_input) {  // the [m, n] side matrix: C's layout and dtype
    set_attribute(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, g.ldc, "desc aux ld");
    set_attribute(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_DATA_TYPE, type, "desc aux type");
  }
  set_layouts(*plan, g, type);
  choose_algo(handle, *plan, g, align);
  return plan;
}

void run_plan(DeviceState& s, const Plan& p, const void* a, const void* b, void* c, bool f64) {
  const float one_f = 1, zero_f = 0;
  const double one_d = 1, zero_d = 0;
  lt_check(cublasLtMatmul(s.handle, p.desc, f64 ? static_cast<const void*>(&one_d) : &one_f, b,
                          p.a, a, p.b, f64 ? static_cast<const void*>(&zero_d) : &zero_f, c, p.c,
                          c, p.c, &p.algo, s.workspace, kWorkspaceBytes, compute_stream()),
           "cublasLtMatmul");
}

}  // namespace

void gemm(const Gemm& g, const void* a, const void* b, void* c, DType dtype, bool allow_tf32) {
  if (g.m == 0 || g.n == 0 || g.batch == 0) return;
  if (g.k == 0) {  // empty sum: C = 0
    for (int64_t i = 0; i < g.batch; ++i)
      fill(static_cast<char*>(c) + i * g.stride_c * dtype_bytes(dtype), dtype, g.m * g.ldc, 0);
    return;
  }
  const int device = current_device();
  DeviceState& s = state(device);
  const int align[3] = {alignment_of(a), alignment_of(b), alignment_of(c)};
  check_epilogue(g, dtype);
  // Unbatched products share a plan across nearby m and k (the expert GEMMs' row counts change
  // every step): the key holds their size classes, and a plan met at new exact sizes gets new
  // layouts and keeps its algorithm if cuBLASLt accepts it for them, else asks the heuristic.
  const bool exact = g.batch > 1;
  const int64_t key_m = exact ? g.m : size_class(g.m), key_k = exact ? g.k : size_class(g.k);
  const PlanKey key{int(dtype), allow_tf32, g.trans_a, g.trans_b, key_m, g.n, key_k, g.lda, g.ldb,
                    g.ldc, g.batch, g.stride_a, g.stride_b, g.stride_c, align[0], align[1],
                    align[2], device, int(epilogue_of(g))};
  auto it = s.plans.find(key);
  if (it == s.plans.end())
    it = s.plans.emplace(key, make_plan(s.handle, g, dtype, allow_tf32, align)).first;
  Plan& p = *it->second;
  if (p.m != g.m || p.k != g.k) {
    set_layouts(p, g, data_type(dtype));
    cublasLtMatmulHeuristicResult_t check{};
    if (cublasLtMatmulAlgoCheck(s.handle, p.desc, p.a, p.b, p.c, p.c, &p.algo, &check) !=
            CUBLAS_STATUS_SUCCESS ||
        check.workspaceSize > kWorkspaceBytes)
      choose_algo(s.handle, p, g, align);
  }
  if (const void* vector = g.bias ? g.bias : g.a_row_sums)
    set_attribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, vector, "desc bias pointer");
  if (g.gelu_input)
    set_attribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, g.gelu_input,
                  "desc aux pointer");
  const bool f64 = dtype == DType::f64;
  run_plan(s, p, a, b, c, f64);
}

}  // namespace loom::kernels::cuda
