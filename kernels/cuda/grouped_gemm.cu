// CUDA builds: moe.h's grouped_gemm, one cuBLASLt GEMM per problem or (LOOM_GROUPED_GEMM=grouped)
// one cublasGemmGroupedBatchedEx call.
//
// Layout: as gemm.cpp, row-major C = op(A) op(B) is the column-major Cᵀ = op(B)ᵀ op(A)ᵀ, so
// cuBLAS's first operand is our B and its m and n are our n and m. Every problem is a group of
// one (the experts' row counts differ). The call takes host arrays of sizes, scalars and
// transposes, but device arrays of the matrix pointers: a one-block kernel writes those from its
// by-value arguments into stream-ordered scratch, so no host-device copy (and no synchronization)
// precedes the GEMMs. Calls are cut into batches of kMaxProblems to keep those arguments small.
#include <cublas_v2.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cuda/context.h"
#include "kernels/cuda/kernels.h"
#include "kernels/cuda/moe.h"
#include "kernels/cuda/runtime.h"

namespace loom::kernels::cuda {

namespace {

constexpr int kMaxProblems = 128;  // 3 KiB of pointers per launch, under the 4 KiB argument limit

struct PointerArgs {
  const void* a[kMaxProblems];
  const void* b[kMaxProblems];
  void* c[kMaxProblems];
  int count;
};

// tables = [a pointers | b pointers | c pointers], count entries each.
__global__ void write_pointer_tables(PointerArgs args, void** tables) {
  const int i = threadIdx.x;
  if (i >= args.count) return;
  tables[i] = const_cast<void*>(args.a[i]);
  tables[args.count + i] = const_cast<void*>(args.b[i]);
  tables[2 * args.count + i] = args.c[i];
}

void blas_check(cublasStatus_t st, const char* what) {
  if (st != CUBLAS_STATUS_SUCCESS)
    throw std::runtime_error(std::string("[cuda] grouped_gemm: ") + what +
                             " failed: " + cublasGetStatusString(st));
}

// One handle per device, bound to the device's compute stream (which never changes) and then given
// its own workspace (in that order: binding a stream resets the workspace), so cuBLAS never
// allocates behind the caching allocator's back.
constexpr size_t kWorkspaceBytes = size_t(32) << 20;

cublasHandle_t handle(int device) {
  static std::mutex mutex;
  static std::map<int, cublasHandle_t> handles;
  std::lock_guard<std::mutex> lock(mutex);
  cublasHandle_t& h = handles[device];
  if (!h) {
    blas_check(cublasCreate(&h), "cublasCreate");
    blas_check(cublasSetStream(h, compute_stream()), "cublasSetStream");
    blas_check(cublasSetWorkspace(h, device_malloc(kWorkspaceBytes, device), kWorkspaceBytes),
               "cublasSetWorkspace");
  }
  return h;
}

bool grouped_requested() {
  static const bool grouped = [] {
    const char* v = std::getenv("LOOM_GROUPED_GEMM");
    return v && std::strcmp(v, "grouped") == 0;
  }();
  return grouped;
}

cudaDataType_t data_type(DType t) {
  switch (t) {
    case DType::f32:
      return CUDA_R_32F;
    case DType::bf16:
      return CUDA_R_16BF;
    case DType::f16:
      return CUDA_R_16F;
    default:
      throw std::runtime_error("[cuda] grouped_gemm: dtype must be f32, bf16 or f16");
  }
}

// Whether every matrix of the call starts and steps its rows on 16-byte boundaries. The grouped
// call cannot see the pointers it reads from device memory, so it is kept to operands every kernel
// accepts; others (odd row widths in tests) take the per-problem path.
bool aligned(const GroupedGemm& g, const GemmProblem* problems, int64_t count, DType dtype) {
  const int64_t es = dtype_bytes(dtype);
  if ((g.lda * es) % 16 != 0 || (g.ldb * es) % 16 != 0) return false;
  for (int64_t i = 0; i < count; ++i) {
    const GemmProblem& p = problems[i];
    if (!aligned16(p.a) || !aligned16(p.b) || !aligned16(p.c) || (p.n * es) % 16 != 0)
      return false;
  }
  return true;
}

void run_loop(const GroupedGemm& g, const GemmProblem* problems, int64_t count, DType dtype,
              bool allow_tf32) {
  for (int64_t i = 0; i < count; ++i) {
    const GemmProblem& p = problems[i];
    const Gemm one{.trans_a = g.trans_a,
                   .trans_b = g.trans_b,
                   .m = p.m,
                   .n = p.n,
                   .k = p.k,
                   .lda = g.lda,
                   .ldb = g.ldb,
                   .ldc = p.n};
    gemm(one, p.a, p.b, p.c, dtype, allow_tf32);
  }
}

// One cuBLAS call over problems that all have m, n, k > 0 (at most kMaxProblems).
void run_grouped(const GroupedGemm& g, const std::vector<const GemmProblem*>& batch, DType dtype,
                 bool allow_tf32) {
  const size_t count = batch.size();
  const int device = current_device();
  cudaStream_t stream = compute_stream();
  PointerArgs args{};
  args.count = int(count);
  std::vector<int64_t> m(count), n(count), k(count), lda(count, g.lda), ldb(count, g.ldb),
      ldc(count), group_size(count, 1);
  for (size_t i = 0; i < count; ++i) {
    const GemmProblem& p = *batch[i];
    // Column-major view: cuBLAS's A is our B, its B our A; its m is our n.
    args.a[i] = p.b;
    args.b[i] = p.a;
    args.c[i] = p.c;
    m[i] = p.n;
    n[i] = p.m;
    k[i] = p.k;
    ldc[i] = p.n;
  }
  void** tables = static_cast<void**>(device_malloc(3 * count * sizeof(void*), device));
  write_pointer_tables<<<1, kMaxProblems, 0, stream>>>(args, tables);
  check_launch("grouped_gemm pointer tables");

  const cublasOperation_t op_a = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const std::vector<cublasOperation_t> trans_a(count, op_a), trans_b(count, op_b);
  const std::vector<float> alpha(count, 1.0f), beta(count, 0.0f);
  const cudaDataType_t type = data_type(dtype);
  const cublasComputeType_t compute =
      dtype == DType::f32 && allow_tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  blas_check(cublasGemmGroupedBatchedEx_64(handle(device), trans_a.data(), trans_b.data(), m.data(),
                                           n.data(), k.data(), alpha.data(), tables, type,
                                           ldb.data(), tables + count, type, lda.data(),
                                           beta.data(), tables + 2 * count, type, ldc.data(),
                                           int64_t(count), group_size.data(), compute),
             "cublasGemmGroupedBatchedEx (unset LOOM_GROUPED_GEMM=grouped to avoid it)");
  device_free(tables, device);
}

}  // namespace

void grouped_gemm(const GroupedGemm& g, const GemmProblem* problems, int64_t count, DType dtype,
                  bool allow_tf32) {
  if (dtype == DType::f64 || !grouped_requested() || !aligned(g, problems, count, dtype)) {
    run_loop(g, problems, count, dtype, allow_tf32);
    return;
  }
  std::vector<const GemmProblem*> batch;
  for (int64_t i = 0; i < count; ++i) {
    const GemmProblem& p = problems[i];
    if (p.m == 0 || p.n == 0) continue;
    if (p.k == 0) {  // an empty sum: C = 0
      fill(p.c, dtype, p.m * p.n, 0);
      continue;
    }
    batch.push_back(&p);
    if (batch.size() == size_t(kMaxProblems)) {
      run_grouped(g, batch, dtype, allow_tf32);
      batch.clear();
    }
  }
  if (!batch.empty()) run_grouped(g, batch, dtype, allow_tf32);
}

}  // namespace loom::kernels::cuda
