// Runs loom's flash attention kernels on the CPU through the warp-primitive emulation in
// attention_emu.h and compares them with an f64 reference: a check of the kernels' indexing,
// masking and pipelining that needs no GPU (it says nothing about speed or races the emulation
// cannot see). Small shapes only: every CUDA thread is a fiber.
//
// Build and run (from the repository root):
//   g++ -std=c++20 -O2 -fno-strict-aliasing -DLOOM_ATTENTION_EMULATE -include
//   tests/gpu/attention_emu.h -I. \
//     -I/usr/local/cuda/include -x c++ kernels/cuda/attention_fwd.cu \
//     -x c++ kernels/cuda/attention_bwd.cu -x none tests/gpu/attention_emu.cpp -o attention_emu
//   ./attention_emu          (./attention_emu big: the larger shapes, minutes)
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/attention.h"

using loom::DType;
using namespace loom::kernels::cuda;

namespace {

size_t dsize(DType t) {
  return t == DType::f32 ? 4 : 2;
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
    __nv_bfloat16 v = __float2bfloat16(x);
    std::memcpy(p + 2 * i, &v, 2);
  } else {
    __half v = __float2half(x);
    std::memcpy(p + 2 * i, &v, 2);
  }
}
float get(DType t, const unsigned char* p, int64_t i) {
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

// One [B, H, N, D] operand in a (possibly padded, possibly [B, N, H, D]) strided buffer.
struct Tensor {
  DType dt;
  int64_t B, H, N, D;
  AttentionStrides s;
  size_t elems;
  unsigned char* data;
  Tensor(DType dt_, int64_t B_, int64_t H_, int64_t N_, int64_t D_, bool bnhd, int pad)
      : dt(dt_), B(B_), H(H_), N(N_), D(D_) {
    if (bnhd)
      s = {N * (H * D + pad), D, H * D + pad};
    else
      s = {H * N * (D + pad), N * (D + pad), D + pad};
    elems = size_t(B * s.batch) + 64;  // + a guard tail
    data = static_cast<unsigned char*>(std::aligned_alloc(64, (elems * dsize(dt) + 63) / 64 * 64));
    std::memset(data, 0xff, elems * dsize(dt));
    emu::register_buffer(data, elems * dsize(dt));
  }
  ~Tensor() { std::free(data); }
  int64_t at(int64_t b, int64_t h, int64_t n, int64_t d) const {
    return b * s.batch + h * s.head + n * s.token + d;
  }
  std::vector<bool> logical() const {
    std::vector<bool> m(elems, false);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t n = 0; n < N; ++n)
          for (int64_t d = 0; d < D; ++d) m[at(b, h, n, d)] = true;
    return m;
  }
};

struct Case {
  DType dt;
  int64_t B, H, Nq, Nk, D;
  bool causal, bnhd;
  int pad;
  const char* expect;  // substring of a kernel name that must have run ("" = no check)
};

int failures = 0;

void check(bool ok, const std::string& what) {
  if (!ok) {
    std::printf("  FAIL %s\n", what.c_str());
    ++failures;
  }
}

// Fills t with N(0,1) rounded to its dtype; returns the rounded values as [B,H,N,D] doubles.
std::vector<double> fill_random(Tensor& t, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<double> out(size_t(t.B * t.H * t.N * t.D));
  size_t i = 0;
  for (int64_t b = 0; b < t.B; ++b)
    for (int64_t h = 0; h < t.H; ++h)
      for (int64_t n = 0; n < t.N; ++n)
        for (int64_t d = 0; d < t.D; ++d) {
          const float x = round_to(t.dt, nd(rng));
          put(t.dt, t.data, t.at(b, h, n, d), x);
          out[i++] = x;
        }
  return out;
}

// ||out - ref|| / ||ref|| over the logical elements; also checks that every logical element was
// written (no NaN from the poison) and that no padding byte changed.
double rel_err(const Tensor& t, const std::vector<double>& ref, const std::string& name) {
  double num = 0, den = 0;
  size_t i = 0, nan = 0;
  for (int64_t b = 0; b < t.B; ++b)
    for (int64_t h = 0; h < t.H; ++h)
      for (int64_t n = 0; n < t.N; ++n)
        for (int64_t d = 0; d < t.D; ++d) {
          const double x = get(t.dt, t.data, t.at(b, h, n, d));
          if (std::isnan(x)) ++nan;
          num += (x - ref[i]) * (x - ref[i]);
          den += ref[i] * ref[i];
          ++i;
        }
  check(nan == 0, name + ": " + std::to_string(nan) + " elements not written (NaN)");
  const std::vector<bool> m = t.logical();
  size_t touched = 0;
  const size_t es = dsize(t.dt);
  for (size_t e = 0; e < t.elems; ++e)
    if (!m[e])
      for (size_t k = 0; k < es; ++k) touched += t.data[e * es + k] != 0xff;
  check(touched == 0, name + ": " + std::to_string(touched) + " padding bytes overwritten");
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

void run(const Case& c) {
  std::mt19937 rng(1234 + c.D + c.Nq * 7 + c.Nk * 13 + c.causal);
  const float scale = 1.f / std::sqrt(float(c.D));
  Tensor q(c.dt, c.B, c.H, c.Nq, c.D, c.bnhd, c.pad), k(c.dt, c.B, c.H, c.Nk, c.D, c.bnhd, c.pad),
      v(c.dt, c.B, c.H, c.Nk, c.D, c.bnhd, c.pad), o(c.dt, c.B, c.H, c.Nq, c.D, !c.bnhd, c.pad),
      dout(c.dt, c.B, c.H, c.Nq, c.D, c.bnhd, c.pad), dq(c.dt, c.B, c.H, c.Nq, c.D, c.bnhd, c.pad),
      dk(c.dt, c.B, c.H, c.Nk, c.D, !c.bnhd, c.pad), dv(c.dt, c.B, c.H, c.Nk, c.D, c.bnhd, c.pad);
  const std::vector<double> Q = fill_random(q, rng), K = fill_random(k, rng),
                            V = fill_random(v, rng), DO = fill_random(dout, rng);
  std::vector<float> lse(size_t(c.B * c.H * c.Nq) + 16);
  std::memset(lse.data(), 0xff, lse.size() * 4);
  emu::register_buffer(lse.data(), lse.size() * 4);

  AttentionArgs a;
  a.batch = c.B, a.heads = c.H, a.q_len = c.Nq, a.kv_len = c.Nk, a.head_dim = c.D;
  a.scale = scale, a.causal = c.causal;
  a.q = q.s, a.k = k.s, a.v = v.s, a.o = o.s, a.dout = dout.s, a.dq = dq.s, a.dk = dk.s,
  a.dv = dv.s;

  emu::g_launch_log.clear();
  flash_attention_forward(a, q.data, k.data, v.data, o.data, lse.data(), c.dt);
  const size_t ws_bytes = flash_attention_backward_workspace_bytes(a);
  std::vector<float> ws(ws_bytes / 4 + 4);
  std::memset(ws.data(), 0xff, ws.size() * 4);
  emu::register_buffer(ws.data(), ws.size() * 4);
  flash_attention_backward(a, q.data, k.data, v.data, o.data, dout.data, lse.data(), dq.data,
                           dk.data, dv.data, c.dt, ws.data());

  // f64 reference.
  const int64_t Nq = c.Nq, Nk = c.Nk, D = c.D;
  std::vector<double> O(Q.size()), DQ(Q.size(), 0.0), DK(K.size(), 0.0), DV(V.size(), 0.0),
      LSE(size_t(c.B * c.H * Nq));
  std::vector<double> P(size_t(Nq * Nk)), dP(size_t(Nq * Nk));
  for (int64_t bh = 0; bh < c.B * c.H; ++bh) {
    const double* q_ = &Q[bh * Nq * D];
    const double* k_ = &K[bh * Nk * D];
    const double* v_ = &V[bh * Nk * D];
    const double* do_ = &DO[bh * Nq * D];
    for (int64_t i = 0; i < Nq; ++i) {
      double mx = -INFINITY;
      for (int64_t j = 0; j < Nk; ++j) {
        double s = 0;
        for (int64_t d = 0; d < D; ++d) s += q_[i * D + d] * k_[j * D + d];
        s *= scale;
        if (c.causal && j > i) s = -INFINITY;
        P[i * Nk + j] = s;
        mx = std::max(mx, s);
      }
      double sum = 0;
      for (int64_t j = 0; j < Nk; ++j)
        sum += P[i * Nk + j] == -INFINITY ? 0 : std::exp(P[i * Nk + j] - mx);
      for (int64_t j = 0; j < Nk; ++j)
        P[i * Nk + j] = P[i * Nk + j] == -INFINITY ? 0 : std::exp(P[i * Nk + j] - mx) / sum;
      LSE[bh * Nq + i] = mx + std::log(sum);
      for (int64_t d = 0; d < D; ++d) {
        double acc = 0;
        for (int64_t j = 0; j < Nk; ++j) acc += P[i * Nk + j] * v_[j * D + d];
        O[(bh * Nq + i) * D + d] = acc;
      }
      double di = 0;
      for (int64_t j = 0; j < Nk; ++j) {
        double s = 0;
        for (int64_t d = 0; d < D; ++d) s += do_[i * D + d] * v_[j * D + d];
        dP[i * Nk + j] = s;
        di += P[i * Nk + j] * s;
      }
      for (int64_t j = 0; j < Nk; ++j)
        dP[i * Nk + j] = P[i * Nk + j] * (dP[i * Nk + j] - di);  // dS
    }
    for (int64_t i = 0; i < Nq; ++i)
      for (int64_t j = 0; j < Nk; ++j) {
        const double ds = dP[i * Nk + j] * scale, p = P[i * Nk + j];
        for (int64_t d = 0; d < D; ++d) {
          DQ[(bh * Nq + i) * D + d] += ds * k_[j * D + d];
          DK[(bh * Nk + j) * D + d] += ds * q_[i * D + d];
          DV[(bh * Nk + j) * D + d] += p * do_[i * D + d];
        }
      }
  }

  const double tol = c.dt == DType::f32 ? 1e-5 : 1e-2;
  const double eo = rel_err(o, O, "o"), eq = rel_err(dq, DQ, "dq"), ek = rel_err(dk, DK, "dk"),
               ev = rel_err(dv, DV, "dv");
  double el = 0;
  size_t lnan = 0;
  for (size_t i = 0; i < LSE.size(); ++i) {
    if (std::isnan(lse[i])) ++lnan;
    el = std::max(el, std::abs(double(lse[i]) - LSE[i]));
  }
  uint32_t tail;
  std::memcpy(&tail, &lse[LSE.size()], 4);
  check(lnan == 0 && tail == 0xffffffffu, "lse written exactly");
  bool ran = c.expect[0] == 0;
  for (const std::string& s : emu::g_launch_log) ran |= s.find(c.expect) != std::string::npos;
  check(ran, std::string("expected kernel ") + c.expect + " to run");
  const char* dn = c.dt == DType::f32 ? "f32" : c.dt == DType::bf16 ? "bf16" : "f16";
  std::printf(
      "%-5s B%lld H%lld q%-4lld kv%-4lld D%-3lld %s %s | o %.2e dq %.2e dk %.2e dv %.2e lse %.1e\n",
      dn, (long long)c.B, (long long)c.H, (long long)c.Nq, (long long)c.Nk, (long long)c.D,
      c.causal ? "causal" : "full  ", c.bnhd ? "bnhd" : "bhnd", eo, eq, ek, ev, el);
  check(eo < tol && eq < tol && ek < tol && ev < tol, "error above tolerance");
  check(el < (c.dt == DType::f32 ? 1e-5 : 1e-3), "lse error");
  emu::g_buffers.clear();
}

// kv_len == 0: o = 0, lse = -inf, dq = 0. q_len == 0: dk = dv = 0.
void run_empty() {
  for (int which = 0; which < 2; ++which) {
    const int64_t Nq = which == 0 ? 40 : 0, Nk = which == 0 ? 0 : 40;
    Tensor q(DType::bf16, 2, 3, Nq, 64, false, 0), k(DType::bf16, 2, 3, Nk, 64, false, 0),
        v(DType::bf16, 2, 3, Nk, 64, false, 0), o(DType::bf16, 2, 3, Nq, 64, false, 0),
        dout(DType::bf16, 2, 3, Nq, 64, false, 0), dq(DType::bf16, 2, 3, Nq, 64, false, 0),
        dk(DType::bf16, 2, 3, Nk, 64, false, 0), dv(DType::bf16, 2, 3, Nk, 64, false, 0);
    std::mt19937 rng(3);
    fill_random(q, rng), fill_random(k, rng), fill_random(v, rng), fill_random(dout, rng);
    std::vector<float> lse(size_t(6 * 40), 0.f);
    emu::register_buffer(lse.data(), lse.size() * 4);
    AttentionArgs a;
    a.batch = 2, a.heads = 3, a.q_len = Nq, a.kv_len = Nk, a.head_dim = 64, a.scale = 0.125f;
    a.q = q.s, a.k = k.s, a.v = v.s, a.o = o.s, a.dout = dout.s, a.dq = dq.s, a.dk = dk.s,
    a.dv = dv.s;
    if (Nq > 0) flash_attention_forward(a, q.data, k.data, v.data, o.data, lse.data(), DType::bf16);
    std::vector<float> ws(flash_attention_backward_workspace_bytes(a) / 4 + 4);
    emu::register_buffer(ws.data(), ws.size() * 4);
    flash_attention_backward(a, q.data, k.data, v.data, o.data, dout.data, lse.data(), dq.data,
                             dk.data, dv.data, DType::bf16, ws.data());
    const std::vector<double> zq(size_t(6 * Nq * 64), 0.0), zk(size_t(6 * Nk * 64), 0.0);
    if (Nq > 0) {
      check(rel_err(o, zq, "o") == 0 && rel_err(dq, zq, "dq") == 0, "kv_len 0: o, dq zero");
      bool inf = true;
      for (float x : lse) inf &= std::isinf(x) && x < 0;
      check(inf, "kv_len 0: lse -inf");
    } else {
      check(rel_err(dk, zk, "dk") == 0 && rel_err(dv, zk, "dv") == 0, "q_len 0: dk, dv zero");
    }
    emu::g_buffers.clear();
  }
  std::printf("empty cases done\n");
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<Case> cases = {
      {DType::bf16, 1, 2, 77, 77, 64, false, true, 8, "fwd_kernel<__nv_bfloat16, 64"},
      {DType::bf16, 1, 1, 130, 200, 64, true, false, 0, "bwd_kernel<__nv_bfloat16, 64"},
      {DType::bf16, 1, 2, 77, 77, 72, true, true, 0, "bwd_kernel<__nv_bfloat16, 80"},
      {DType::f16, 1, 1, 100, 70, 128, false, true, 8, "bwd_kernel<__half, 128"},
      {DType::bf16, 1, 1, 77, 77, 128, true, false, 8, "fwd_kernel<__nv_bfloat16, 128"},
      {DType::bf16, 1, 1, 20, 300, 64, true, true, 0, "bwd_kernel<__nv_bfloat16, 64"},
      {DType::bf16, 1, 1, 150, 20, 72, false, false, 0, "fwd_kernel<__nv_bfloat16, 80"},
      {DType::f32, 1, 2, 33, 50, 40, true, true, 0, "fallback"},
      {DType::bf16, 1, 2, 33, 50, 36, false, true, 0, "fallback"},
      {DType::f16, 2, 1, 33, 17, 96, true, true, 0, "fwd_kernel<__half, 128"},
  };
  if (argc > 1 && std::string(argv[1]) == "big")  // slower: the GPU check's larger shapes
    cases = {{DType::bf16, 2, 3, 256, 256, 64, true, true, 8, "bwd_kernel<__nv_bfloat16, 64"},
             {DType::bf16, 1, 2, 1000, 1000, 64, false, false, 0, "bwd_kernel<__nv_bfloat16, 64"},
             {DType::bf16, 1, 2, 1000, 1000, 72, true, true, 0, "bwd_kernel<__nv_bfloat16, 80"},
             {DType::bf16, 2, 3, 256, 256, 128, true, false, 8, "bwd_kernel<__nv_bfloat16, 128"}};
  const int only = argc > 1 && std::string(argv[1]) != "big" ? std::atoi(argv[1]) : -1;
  for (int i = 0; i < int(cases.size()); ++i)
    if (only < 0 || only == i) run(cases[i]);
  // The alternative tile shapes of head_dim <= 64 (LOOM_ATTENTION_VARIANT).
  for (const char* var : {"1", "2"}) {
    setenv("LOOM_ATTENTION_VARIANT", var, 1);
    std::printf("LOOM_ATTENTION_VARIANT=%s\n", var);
    for (int i = 0; i < int(cases.size()); ++i)
      if ((only < 0 || only == i) && cases[i].D <= 64 && cases[i].dt != DType::f32) run(cases[i]);
  }
  unsetenv("LOOM_ATTENTION_VARIANT");
  if (only < 0) run_empty();
  std::printf(failures ? "FAILED (%d)\n" : "all passed\n", failures);
  return failures ? 1 : 0;
}
