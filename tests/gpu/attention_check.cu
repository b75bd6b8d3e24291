// Standalone GPU check of loom's flash attention (kernels/cuda/attention.h) and of cuDNN's fused
// attention behind the same interface (kernels/cuda/attention_cudnn.h): correctness of the forward
// and backward against an f64 reference computed on the GPU from the same rounded inputs, for
// several shapes, layouts, dtypes and both mask modes; then timings of both.
//
// Built by CMake as the target attention_check (linked with the loom library; CTest runs it as
// gpu/attention_check --no-bench).
// Options: --no-bench (correctness only), --bench-only. The D <= 64 cases and the main timing row
// are repeated under LOOM_ATTENTION_VARIANT=1 and 2 (alternative tile shapes, a tuning aid).
// Every case runs again through cuDNN: those cuDNN must serve on Hopper (bf16/f16, head_dim a
// multiple of 8 up to 256, strides multiples of 8) fail when it declines; the others must decline.
//
// Each case poisons every output buffer (0xff bytes: NaN in all float types) and pads the rows of
// strided layouts, then checks that every logical element was written and no padding byte or
// guard tail was touched. Errors are ||out - ref|| / ||ref|| over the whole tensor; limits: 1e-2
// for bf16/f16, 1e-5 for f32 (the fallback kernel). Exit status 1 on any failure.
// FLOPs (FlashAttention's count): forward 4*B*H*Nq*Nk*D, backward 2.5x that (10*B*H*Nq*Nk*D),
// halved when causal (Nq == Nk).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cuda/attention.h"
#include "kernels/cuda/attention_cudnn.h"
#include "kernels/cuda/context.h"

using loom::DType;
using namespace loom::kernels::cuda;

#define CK(call)                                                                                  \
  do {                                                                                            \
    const cudaError_t e_ = (call);                                                                \
    if (e_ != cudaSuccess) {                                                                      \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
      std::exit(2);                                                                               \
    }                                                                                             \
  } while (0)

namespace {

cudaStream_t st() {
  return compute_stream();
}

// Which implementation the checks and timings call: loom's kernels or cuDNN's (declining calls
// return false and leave the outputs alone).
enum class Path { loom, cudnn };
Path g_path = Path::loom;
const char* path_name() {
  return g_path == Path::loom ? "loom" : "cudnn";
}

bool forward(const AttentionArgs& a, const void* q, const void* k, const void* v, void* o,
             float* lse, DType dt) {
  if (g_path == Path::cudnn) return cudnn_attention_forward(a, q, k, v, o, lse, dt);
  flash_attention_forward(a, q, k, v, o, lse, dt);
  return true;
}
// ws: loom's workspace (flash_attention_backward_workspace_bytes), unused by cuDNN.
bool backward(const AttentionArgs& a, const void* q, const void* k, const void* v, const void* o,
              const void* dout, const float* lse, void* dq, void* dk, void* dv, DType dt,
              void* ws) {
  if (g_path == Path::cudnn)
    return cudnn_attention_backward(a, q, k, v, o, dout, lse, dq, dk, dv, dt);
  flash_attention_backward(a, q, k, v, o, dout, lse, dq, dk, dv, dt, static_cast<float*>(ws));
  return true;
}

// -- host element conversion ----------------------------------------------------------------------
size_t dsize(DType t) {
  return t == DType::f32 ? 4 : 2;
}
const char* dname(DType t) {
  return t == DType::f32 ? "f32" : t == DType::bf16 ? "bf16" : "f16";
}
float round_to(DType t, float x) {
  if (t == DType::bf16) return __bfloat162float(__float2bfloat16(x));
  if (t == DType::f16) return __half2float(__float2half(x));
  return x;
}
void put(DType t, unsigned char* p, int64_t i, float x) {
  if (t == DType::f32) {
    std::memcpy(p + 4 * i, &x, 4);
  } else if (t == DType::bf16) {
    const __nv_bfloat16 v = __float2bfloat16(x);
    std::memcpy(p + 2 * i, &v, 2);
  } else {
    const __half v = __float2half(x);
    std::memcpy(p + 2 * i, &v, 2);
  }
}
double get(DType t, const unsigned char* p, int64_t i) {
  if (t == DType::f32) {
    float x;
    std::memcpy(&x, p + 4 * i, 4);
    return x;
  }
  if (t == DType::bf16) {
    __nv_bfloat16 v;
    std::memcpy(&v, p + 2 * i, 2);
    return __bfloat162float(v);
  }
  __half v;
  std::memcpy(&v, p + 2 * i, 2);
  return __half2float(v);
}

// -- a [B, H, N, D] operand in a strided device buffer
// ---------------------------------------------
struct DevTensor {
  DType dt;
  int64_t B, H, N, D;
  AttentionStrides s;
  size_t elems = 0;
  unsigned char* d = nullptr;
  // bnhd: [B, N, H, D] storage, else [B, H, N, D]; `pad` extra elements after each token row
  // (bhnd) or after each token's H*D block (bnhd); 256 guard elements after the end.
  DevTensor(DType dt_, int64_t B_, int64_t H_, int64_t N_, int64_t D_, bool bnhd, int pad)
      : dt(dt_), B(B_), H(H_), N(N_), D(D_) {
    s = bnhd ? AttentionStrides{N * (H * D + pad), D, H * D + pad}
             : AttentionStrides{H * N * (D + pad), N * (D + pad), D + pad};
    elems = size_t(B * s.batch) + 256;
    CK(cudaMalloc(&d, bytes()));
  }
  DevTensor(const DevTensor&) = delete;
  ~DevTensor() { cudaFree(d); }
  size_t bytes() const { return elems * dsize(dt); }
  int64_t at(int64_t b, int64_t h, int64_t n, int64_t k) const {
    return b * s.batch + h * s.head + n * s.token + k;
  }
  void poison() { CK(cudaMemsetAsync(d, 0xff, bytes(), st())); }
  std::vector<unsigned char> download() const {
    std::vector<unsigned char> h(bytes());
    CK(cudaMemcpyAsync(h.data(), d, bytes(), cudaMemcpyDeviceToHost, st()));
    CK(cudaStreamSynchronize(st()));
    return h;
  }
  // Random N(0,1) values rounded to dt (padding poisoned); returns them as compact f64.
  std::vector<double> fill_random(std::mt19937& rng) {
    std::vector<unsigned char> h(bytes(), 0xff);
    std::normal_distribution<float> nd(0.f, 1.f);
    std::vector<double> out(size_t(B * H * N * D));
    size_t i = 0;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t hh = 0; hh < H; ++hh)
        for (int64_t n = 0; n < N; ++n)
          for (int64_t k = 0; k < D; ++k) {
            const float x = round_to(dt, nd(rng));
            put(dt, h.data(), at(b, hh, n, k), x);
            out[i++] = x;
          }
    CK(cudaMemcpyAsync(d, h.data(), bytes(), cudaMemcpyHostToDevice, st()));
    CK(cudaStreamSynchronize(st()));
    return out;
  }
};

template <class T>
struct DevVec {
  T* d = nullptr;
  size_t n = 0;
  explicit DevVec(size_t n_) : n(n_) { CK(cudaMalloc(&d, std::max<size_t>(n, 1) * sizeof(T))); }
  DevVec(const DevVec&) = delete;
  ~DevVec() { cudaFree(d); }
  void upload(const std::vector<T>& h) {
    CK(cudaMemcpyAsync(d, h.data(), n * sizeof(T), cudaMemcpyHostToDevice, st()));
  }
  std::vector<T> download() const {
    std::vector<T> h(n);
    CK(cudaMemcpyAsync(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost, st()));
    CK(cudaStreamSynchronize(st()));
    return h;
  }
};

// -- f64 reference kernels (naive, materialize the [Nq, Nk] matrices)
// -------------------------------
struct RefDims {
  int64_t BH, Nq, Nk, D;
  double scale;
  bool causal;
};
#define GRID_LOOP(i, n)                                                     \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += int64_t(gridDim.x) * blockDim.x)

__global__ void ref_scores(RefDims r, const double* q, const double* k, double* S) {
  GRID_LOOP(idx, r.BH * r.Nq * r.Nk) {
    const int64_t j = idx % r.Nk, i = (idx / r.Nk) % r.Nq, bh = idx / (r.Nk * r.Nq);
    double s = 0;
    for (int64_t d = 0; d < r.D; ++d)
      s += q[(bh * r.Nq + i) * r.D + d] * k[(bh * r.Nk + j) * r.D + d];
    S[idx] = (r.causal && j > i) ? -INFINITY : s * r.scale;
  }
}
__global__ void ref_softmax(RefDims r, double* S, double* lse) {
  GRID_LOOP(row, r.BH * r.Nq) {
    double* x = S + row * r.Nk;
    double mx = -INFINITY, sum = 0;
    for (int64_t j = 0; j < r.Nk; ++j) mx = fmax(mx, x[j]);
    for (int64_t j = 0; j < r.Nk; ++j) sum += x[j] == -INFINITY ? 0.0 : exp(x[j] - mx);
    for (int64_t j = 0; j < r.Nk; ++j) x[j] = x[j] == -INFINITY ? 0.0 : exp(x[j] - mx) / sum;
    lse[row] = r.Nk > 0 ? mx + log(sum) : -INFINITY;
  }
}
// out[bh, i, d] = sum_j A[bh, i, j] * X[bh, j, d] (A [BH, I, J], X [BH, J, D]), times mul.
__global__ void ref_mm(int64_t BH, int64_t I, int64_t J, int64_t D, const double* A, bool trans_a,
                       const double* X, double* out, double mul) {
  GRID_LOOP(idx, BH * I * D) {
    const int64_t d = idx % D, i = (idx / D) % I, bh = idx / (D * I);
    double s = 0;
    for (int64_t j = 0; j < J; ++j) {
      const double a = trans_a ? A[(bh * J + j) * I + i] : A[(bh * I + i) * J + j];
      s += a * X[(bh * J + j) * D + d];
    }
    out[idx] = s * mul;
  }
}
// dS = P * (dO V^T - rowsum(P * dO V^T)), in place of dP (one thread per row).
__global__ void ref_ds(RefDims r, const double* P, const double* dout, const double* v,
                       double* dS) {
  GRID_LOOP(row, r.BH * r.Nq) {
    const int64_t bh = row / r.Nq;
    double di = 0;
    for (int64_t j = 0; j < r.Nk; ++j) {
      double s = 0;
      for (int64_t d = 0; d < r.D; ++d) s += dout[row * r.D + d] * v[(bh * r.Nk + j) * r.D + d];
      dS[row * r.Nk + j] = s;
      di += P[row * r.Nk + j] * s;
    }
    for (int64_t j = 0; j < r.Nk; ++j)
      dS[row * r.Nk + j] = P[row * r.Nk + j] * (dS[row * r.Nk + j] - di);
  }
}
unsigned grid_for(int64_t n) {
  return unsigned(std::min<int64_t>((n + 255) / 256, 65536));
}

struct Reference {
  std::vector<double> o, lse, dq, dk, dv;
};
Reference reference(const RefDims& r, const std::vector<double>& q, const std::vector<double>& k,
                    const std::vector<double>& v, const std::vector<double>& dout) {
  DevVec<double> Q(q.size()), K(k.size()), V(v.size()), DO(dout.size());
  Q.upload(q), K.upload(k), V.upload(v), DO.upload(dout);
  DevVec<double> P(size_t(r.BH * r.Nq * r.Nk)), dS(size_t(r.BH * r.Nq * r.Nk));
  DevVec<double> O(q.size()), L(size_t(r.BH * r.Nq)), dQ(q.size()), dK(k.size()), dV(v.size());
  ref_scores<<<grid_for(r.BH * r.Nq * r.Nk), 256, 0, st()>>>(r, Q.d, K.d, P.d);
  ref_softmax<<<grid_for(r.BH * r.Nq), 256, 0, st()>>>(r, P.d, L.d);
  ref_mm<<<grid_for(r.BH * r.Nq * r.D), 256, 0, st()>>>(r.BH, r.Nq, r.Nk, r.D, P.d, false, V.d, O.d,
                                                        1.0);
  ref_ds<<<grid_for(r.BH * r.Nq), 256, 0, st()>>>(r, P.d, DO.d, V.d, dS.d);
  ref_mm<<<grid_for(r.BH * r.Nq * r.D), 256, 0, st()>>>(r.BH, r.Nq, r.Nk, r.D, dS.d, false, K.d,
                                                        dQ.d, r.scale);
  ref_mm<<<grid_for(r.BH * r.Nk * r.D), 256, 0, st()>>>(r.BH, r.Nk, r.Nq, r.D, dS.d, true, Q.d,
                                                        dK.d, r.scale);
  ref_mm<<<grid_for(r.BH * r.Nk * r.D), 256, 0, st()>>>(r.BH, r.Nk, r.Nq, r.D, P.d, true, DO.d,
                                                        dV.d, 1.0);
  CK(cudaGetLastError());
  return {O.download(), L.download(), dQ.download(), dK.download(), dV.download()};
}

// -- comparison
// --------------------------------------------------------------------------------------
int g_failures = 0;
std::string g_notes;

void fail_note(const std::string& s) {
  g_notes += "    FAIL " + s + "\n";
  ++g_failures;
}

// Relative error over the logical elements; counts unwritten (NaN) elements and touched padding.
double compare(const DevTensor& t, const std::vector<double>& ref, const char* name) {
  const std::vector<unsigned char> h = t.download();
  std::vector<char> logical(t.elems, 0);
  double num = 0, den = 0;
  size_t i = 0, nan = 0;
  for (int64_t b = 0; b < t.B; ++b)
    for (int64_t hh = 0; hh < t.H; ++hh)
      for (int64_t n = 0; n < t.N; ++n)
        for (int64_t k = 0; k < t.D; ++k) {
          const int64_t e = t.at(b, hh, n, k);
          logical[size_t(e)] = 1;
          const double x = get(t.dt, h.data(), e);
          if (!std::isfinite(x)) ++nan;
          num += (x - ref[i]) * (x - ref[i]);
          den += ref[i] * ref[i];
          ++i;
        }
  size_t touched = 0;
  const size_t es = dsize(t.dt);
  for (size_t e = 0; e < t.elems; ++e)
    if (!logical[e])
      for (size_t k = 0; k < es; ++k) touched += h[e * es + k] != 0xff;
  if (nan)
    fail_note(std::string(name) + ": " + std::to_string(nan) +
              " elements not written / not finite");
  if (touched)
    fail_note(std::string(name) + ": " + std::to_string(touched) +
              " padding/guard bytes overwritten");
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

struct Case {
  DType dt;
  int64_t B, H, Nq, Nk, D;
  bool causal, bnhd;
  int pad;
};

void run_case(const Case& c) {
  g_notes.clear();
  const int before = g_failures;
  std::mt19937 rng(uint32_t(1000 + c.D * 7 + c.Nq * 131 + c.Nk * 17 + c.causal * 3 + int(c.dt)));
  const float scale = 1.f / std::sqrt(float(c.D));
  // Mixed layouts: o, dk in the other layout than q, k, v, dout, dq, dv.
  DevTensor q(c.dt, c.B, c.H, c.Nq, c.D, c.bnhd, c.pad),
      k(c.dt, c.B, c.H, c.Nk, c.D, c.bnhd, c.pad), v(c.dt, c.B, c.H, c.Nk, c.D, c.bnhd, c.pad),
      o(c.dt, c.B, c.H, c.Nq, c.D, !c.bnhd, c.pad), dout(c.dt, c.B, c.H, c.Nq, c.D, c.bnhd, c.pad),
      dq(c.dt, c.B, c.H, c.Nq, c.D, c.bnhd, c.pad), dk(c.dt, c.B, c.H, c.Nk, c.D, !c.bnhd, c.pad),
      dv(c.dt, c.B, c.H, c.Nk, c.D, c.bnhd, c.pad);
  const std::vector<double> Q = q.fill_random(rng), K = k.fill_random(rng), V = v.fill_random(rng),
                            DO = dout.fill_random(rng);
  const size_t lse_n = size_t(c.B * c.H * c.Nq);
  DevVec<float> lse(lse_n + 64);
  CK(cudaMemsetAsync(lse.d, 0xff, (lse_n + 64) * 4, st()));
  o.poison(), dq.poison(), dk.poison(), dv.poison();

  AttentionArgs a;
  a.batch = c.B, a.heads = c.H, a.q_len = c.Nq, a.kv_len = c.Nk, a.head_dim = c.D;
  a.scale = scale, a.causal = c.causal;
  a.q = q.s, a.k = k.s, a.v = v.s, a.o = o.s, a.dout = dout.s, a.dq = dq.s, a.dk = dk.s,
  a.dv = dv.s;

  const size_t wsb = flash_attention_backward_workspace_bytes(a);
  DevVec<unsigned char> ws(wsb + 16);
  CK(cudaMemsetAsync(ws.d, 0xff, wsb + 16, st()));  // the backward must not need a zeroed workspace
  const bool served_f = forward(a, q.d, k.d, v.d, o.d, lse.d, c.dt);
  const bool served_b =
      served_f && backward(a, q.d, k.d, v.d, o.d, dout.d, lse.d, dq.d, dk.d, dv.d, c.dt, ws.d);
  CK(cudaStreamSynchronize(st()));
  CK(cudaGetLastError());
  const bool cudnn_must_serve = c.dt != DType::f32 && c.D % 8 == 0 && c.D <= 256 && c.pad % 8 == 0;
  if (g_path == Path::cudnn && !served_f) {
    if (cudnn_must_serve) fail_note("cuDNN declined a forward it serves");
    std::printf("%-5s %-4s B%lld H%lld q%-5lld kv%-5lld D%-4lld %-6s | declined  %s\n", path_name(),
                dname(c.dt), (long long)c.B, (long long)c.H, (long long)c.Nq, (long long)c.Nk,
                (long long)c.D, c.causal ? "causal" : "full", g_failures == before ? "ok" : "FAIL");
    std::fputs(g_notes.c_str(), stdout);
    return;
  }
  if (g_path == Path::cudnn && !served_b) fail_note("cuDNN declined a backward it serves");
  if (g_path == Path::cudnn && !cudnn_must_serve)
    fail_note("cuDNN served a call it should decline");

  const Reference ref =
      reference({c.B * c.H, c.Nq, c.Nk, c.D, double(scale), c.causal}, Q, K, V, DO);
  const double eo = compare(o, ref.o, "o"), eq = compare(dq, ref.dq, "dq"),
               ek = compare(dk, ref.dk, "dk"), ev = compare(dv, ref.dv, "dv");
  const std::vector<float> l = lse.download();
  double el = 0;
  size_t lbad = 0;
  for (size_t i = 0; i < lse_n; ++i) {
    if (!std::isfinite(l[i])) ++lbad;
    el = std::max(el, std::abs(double(l[i]) - ref.lse[i]));
  }
  for (size_t i = lse_n; i < lse_n + 64; ++i) {
    uint32_t w;
    std::memcpy(&w, &l[i], 4);
    lbad += w != 0xffffffffu;
  }
  if (lbad) fail_note("lse: " + std::to_string(lbad) + " entries unwritten or guard touched");
  const double tol = c.dt == DType::f32 ? 1e-5 : 1e-2, ltol = c.dt == DType::f32 ? 1e-5 : 2e-3;
  if (!(eo < tol && eq < tol && ek < tol && ev < tol))
    fail_note("relative error above " + std::to_string(tol));
  if (!(el < ltol)) fail_note("lse error above " + std::to_string(ltol));
  std::printf(
      "%-5s %-4s B%lld H%lld q%-5lld kv%-5lld D%-4lld %-6s %s pad%d | o %.2e dq %.2e dk %.2e dv "
      "%.2e lse %.1e  %s\n",
      path_name(), dname(c.dt), (long long)c.B, (long long)c.H, (long long)c.Nq, (long long)c.Nk,
      (long long)c.D, c.causal ? "causal" : "full", c.bnhd ? "bnhd" : "bhnd", c.pad, eo, eq, ek, ev,
      el, g_failures == before ? "ok" : "FAIL");
  std::fputs(g_notes.c_str(), stdout);
  std::fflush(stdout);
}

// kv_len == 0 gives o = 0, lse = -inf, dq = 0; q_len == 0 gives dk = dv = 0.
void run_empty_cases() {
  const int64_t B = 2, H = 3, N = 40, D = 64;
  for (int which = 0; which < 2; ++which) {
    const int64_t Nq = which == 0 ? N : 0, Nk = which == 0 ? 0 : N;
    DevTensor q(DType::bf16, B, H, Nq, D, false, 0), k(DType::bf16, B, H, Nk, D, false, 0),
        v(DType::bf16, B, H, Nk, D, false, 0), o(DType::bf16, B, H, Nq, D, false, 0),
        dout(DType::bf16, B, H, Nq, D, false, 0), dq(DType::bf16, B, H, Nq, D, false, 0),
        dk(DType::bf16, B, H, Nk, D, false, 0), dv(DType::bf16, B, H, Nk, D, false, 0);
    std::mt19937 rng(7);
    q.fill_random(rng), k.fill_random(rng), v.fill_random(rng), dout.fill_random(rng);
    o.poison(), dq.poison(), dk.poison(), dv.poison();
    DevVec<float> lse(size_t(B * H * std::max<int64_t>(Nq, 1)));
    AttentionArgs a;
    a.batch = B, a.heads = H, a.q_len = Nq, a.kv_len = Nk, a.head_dim = D, a.scale = 0.125f;
    a.q = q.s, a.k = k.s, a.v = v.s, a.o = o.s, a.dout = dout.s, a.dq = dq.s, a.dk = dk.s,
    a.dv = dv.s;
    if (Nq > 0) flash_attention_forward(a, q.d, k.d, v.d, o.d, lse.d, DType::bf16);
    DevVec<unsigned char> ws(flash_attention_backward_workspace_bytes(a) + 16);
    flash_attention_backward(a, q.d, k.d, v.d, o.d, dout.d, lse.d, dq.d, dk.d, dv.d, DType::bf16,
                             reinterpret_cast<float*>(ws.d));
    CK(cudaStreamSynchronize(st()));
    g_notes.clear();
    const int before = g_failures;
    const std::vector<double> zq(size_t(B * H * Nq * D), 0.0), zk(size_t(B * H * Nk * D), 0.0);
    auto zero = [&](const DevTensor& t, const std::vector<double>& z, const char* name) {
      if (compare(t, z, name) != 0.0) fail_note(std::string(name) + " should be 0");
    };
    if (Nq > 0) {
      zero(o, zq, "o"), zero(dq, zq, "dq");
      for (float x : lse.download())
        if (!(std::isinf(x) && x < 0)) {
          fail_note("lse should be -inf");
          break;
        }
    } else {
      zero(dk, zk, "dk"), zero(dv, zk, "dv");
    }
    std::printf("bf16 empty %s: %s\n",
                which == 0 ? "kv_len=0 (o=0, lse=-inf, dq=0)" : "q_len=0 (dk=dv=0)",
                g_failures == before ? "ok" : "FAIL");
    std::fputs(g_notes.c_str(), stdout);
  }
}

// -- timing
// ---------------------------------------------------------------------------------------------
__global__ void init_uniform(__nv_bfloat16* p, size_t n, uint32_t seed) {
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    uint32_t x = uint32_t(i) * 2654435761u ^ seed;
    x ^= x >> 16, x *= 0x7feb352du, x ^= x >> 15, x *= 0x846ca68bu, x ^= x >> 16;
    p[i] = __float2bfloat16((float(x) * 2.3283064e-10f - 0.5f) * 3.4f);  // uniform, variance ~1
  }
}

template <class F>
double median_ms(F&& f, int warmup = 3, int reps = 20) {
  for (int i = 0; i < warmup; ++i) f();
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  std::vector<float> t;
  for (int i = 0; i < reps; ++i) {
    CK(cudaEventRecord(e0, st()));
    f();
    CK(cudaEventRecord(e1, st()));
    CK(cudaEventSynchronize(e1));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    t.push_back(ms);
  }
  CK(cudaEventDestroy(e0));
  CK(cudaEventDestroy(e1));
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

void bench(const char* label, int64_t B, int64_t H, int64_t N, int64_t D, bool causal, bool bnhd) {
  DevTensor q(DType::bf16, B, H, N, D, bnhd, 0), k(DType::bf16, B, H, N, D, bnhd, 0),
      v(DType::bf16, B, H, N, D, bnhd, 0), o(DType::bf16, B, H, N, D, bnhd, 0),
      dout(DType::bf16, B, H, N, D, bnhd, 0), dq(DType::bf16, B, H, N, D, bnhd, 0),
      dk(DType::bf16, B, H, N, D, bnhd, 0), dv(DType::bf16, B, H, N, D, bnhd, 0);
  uint32_t seed = 1;
  for (DevTensor* t : {&q, &k, &v, &dout})
    init_uniform<<<1024, 256, 0, st()>>>(reinterpret_cast<__nv_bfloat16*>(t->d), t->elems, seed++);
  CK(cudaGetLastError());
  DevVec<float> lse(size_t(B * H * N));
  AttentionArgs a;
  a.batch = B, a.heads = H, a.q_len = N, a.kv_len = N, a.head_dim = D;
  a.scale = 1.f / std::sqrt(float(D)), a.causal = causal;
  a.q = q.s, a.k = k.s, a.v = v.s, a.o = o.s, a.dout = dout.s, a.dq = dq.s, a.dk = dk.s,
  a.dv = dv.s;
  DevVec<unsigned char> ws(flash_attention_backward_workspace_bytes(a));
  bool served = true;
  auto fwd = [&] { served &= forward(a, q.d, k.d, v.d, o.d, lse.d, DType::bf16); };
  auto bwd = [&] {
    served &= backward(a, q.d, k.d, v.d, o.d, dout.d, lse.d, dq.d, dk.d, dv.d, DType::bf16, ws.d);
  };
  fwd(), bwd();
  if (!served) {
    std::printf("%-5s %-34s declined\n", path_name(), label);
    return;
  }
  const double t_f = median_ms(fwd);
  const double t_b = median_ms(bwd);
  const double t_fb = median_ms([&] { fwd(), bwd(); });
  const double flop_f =
      4.0 * double(B * H) * double(N) * double(N) * double(D) * (causal ? 0.5 : 1.0);
  const double flop_b = 2.5 * flop_f;
  std::printf(
      "%-5s %-34s fwd %7.3f ms %6.1f TF/s | bwd %7.3f ms %6.1f TF/s | fwd+bwd %7.3f ms %6.1f "
      "TF/s\n",
      path_name(), label, t_f, flop_f / t_f * 1e-9, t_b, flop_b / t_b * 1e-9, t_fb,
      (flop_f + flop_b) / t_fb * 1e-9);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  bool do_check = true, do_bench = true;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--no-bench")) do_bench = false;
    if (!std::strcmp(argv[i], "--bench-only")) do_check = false;
  }
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no CUDA device: skipped\n");
    return 77;  // CTest's SKIP_RETURN_CODE
  }
  try {
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, current_device()));
    std::printf("device: %s (sm_%d%d, %d SMs)\n", prop.name, prop.major, prop.minor,
                prop.multiProcessorCount);
    if (do_check) {
      std::vector<Case> cases;
      int idx = 0;
      for (int64_t D : {64, 72, 128})
        for (int64_t N : {77, 256, 1000})
          for (bool causal : {false, true}) {
            const bool bnhd = idx % 2 == 1;
            cases.push_back({DType::bf16, 2, 3, N, N, D, causal, bnhd, bnhd ? 8 : 0});
            ++idx;
          }
      // f16, cross attention (Nq != Nk, causal top-left), head dims padded inside the kernel.
      cases.push_back({DType::f16, 2, 3, 256, 256, 64, false, true, 8});
      cases.push_back({DType::f16, 2, 3, 1000, 1000, 128, true, false, 0});
      cases.push_back({DType::f16, 2, 3, 77, 77, 72, true, true, 0});
      cases.push_back({DType::bf16, 2, 3, 100, 333, 64, true, true, 0});
      cases.push_back({DType::bf16, 2, 3, 333, 100, 64, true, false, 8});
      cases.push_back({DType::bf16, 2, 3, 1000, 77, 128, false, true, 0});
      // The same shape and layout without and with the mask (cuDNN's plans must differ).
      cases.push_back({DType::bf16, 2, 3, 128, 128, 64, false, false, 0});
      cases.push_back({DType::bf16, 2, 3, 128, 128, 64, true, false, 0});
      cases.push_back({DType::bf16, 2, 3, 300, 300, 40, true, false, 0});  // D 40 -> 64 kernel
      cases.push_back({DType::bf16, 2, 3, 300, 300, 96, false, true, 8});  // D 96 -> 128 kernel
      // Fallback kernels: f32, and bf16 shapes the tensor-core path refuses.
      cases.push_back({DType::f32, 2, 3, 77, 77, 64, true, false, 0});
      cases.push_back({DType::f32, 2, 3, 256, 256, 72, false, true, 8});
      cases.push_back({DType::f32, 2, 3, 1000, 1000, 128, true, true, 0});
      cases.push_back({DType::f32, 2, 3, 100, 333, 40, true, false, 4});
      cases.push_back({DType::bf16, 2, 3, 256, 256, 48, true, true, 4});   // strides % 8 != 0
      cases.push_back({DType::bf16, 2, 3, 77, 120, 36, false, false, 0});  // head_dim % 8 != 0
      cases.push_back({DType::bf16, 2, 3, 64, 64, 160, true, false, 0});   // head_dim > 128
      for (const Case& c : cases) run_case(c);
      run_empty_cases();
      // The alternative tile shapes of head_dim <= 64 (LOOM_ATTENTION_VARIANT, a tuning aid).
      for (const char* var : {"1", "2"}) {
        setenv("LOOM_ATTENTION_VARIANT", var, 1);
        std::printf("LOOM_ATTENTION_VARIANT=%s\n", var);
        for (const Case& c : cases)
          if (c.D <= 64 && c.D % 8 == 0 && c.pad % 8 == 0 && c.dt != DType::f32) run_case(c);
      }
      unsetenv("LOOM_ATTENTION_VARIANT");
      g_path = Path::cudnn;
      set_attention_backend(AttentionBackend::cudnn);
      std::printf("cuDNN's fused attention\n");
      for (const Case& c : cases) run_case(c);
      g_path = Path::loom;
      std::printf(g_failures ? "correctness: %d FAILURES\n" : "correctness: all passed\n",
                  g_failures);
    }
    if (do_bench) {
      std::printf(
          "\ntimings: bf16, median of 20 after 3 warm-up runs; FLOPs fwd 4*B*H*N^2*D, bwd 2.5x "
          "fwd (halved when causal)\n");
      bench("B32 H12 N1024 D64 [B,H,N,D]", 32, 12, 1024, 64, false, false);
      for (const char* var : {"1", "2"}) {
        setenv("LOOM_ATTENTION_VARIANT", var, 1);
        bench((std::string("  same, LOOM_ATTENTION_VARIANT=") + var).c_str(), 32, 12, 1024, 64,
              false, false);
      }
      unsetenv("LOOM_ATTENTION_VARIANT");
      set_attention_backend(AttentionBackend::cudnn);
      for (Path path : {Path::loom, Path::cudnn}) {
        g_path = path;
        if (path == Path::cudnn)
          bench("B32 H12 N1024 D64 [B,H,N,D]", 32, 12, 1024, 64, false, false);
        bench("B32 H12 N1024 D64 [B,N,H,D]", 32, 12, 1024, 64, false, true);
        bench("B32 H12 N1024 D64 causal", 32, 12, 1024, 64, true, false);
        bench("B32 H12 N1024 D128", 32, 12, 1024, 128, false, false);
        bench("DiT-B/2 B256 H12 N256 D64 [B,N,H,D]", 256, 12, 256, 64, false, true);
        bench("DiT-XL/2 B256 H16 N256 D72 [B,N,H,D]", 256, 16, 256, 72, false, true);
      }
    }
  } catch (const std::exception& e) {
    std::printf("exception: %s\n", e.what());
    return 1;
  }
  return g_failures ? 1 : 0;
}
