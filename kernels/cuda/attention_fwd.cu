// Flash attention forward (attention.h). Tensor-core path: one block per (BM query rows, head,
// batch); each warp owns 16*MT query rows whose Q fragments stay in registers, K/V tiles of BN
// keys stream through double-buffered shared memory (cp.async), S = Q K^T and O += P V run on
// mma.sync m16n8k16 with f32 accumulators, the softmax is online in the log2 domain (exp2 of
// scale*log2e*s - running max). Shared tiles have a row stride of D + 8 elements so the 8 rows an
// ldmatrix reads fall in 8 different 16-byte bank groups. Fallback: one warp per query row in f32.
#include <cmath>
#include <cstdint>

#include "kernels/cuda/attention.h"
#include "kernels/cuda/attention_common.cuh"

namespace loom::kernels::cuda {

namespace attn {

struct FwdParams {
  const void* q;
  const void* k;
  const void* v;
  void* o;
  float* lse;
  AttentionStrides sq, sk, sv, so;
  int64_t batch, heads;
  int q_len, kv_len, head_dim;
  float scale, scale_log2;
  bool causal;  // fallback only (the tensor-core kernel takes it as a template argument)
};

// MT m16-tiles per warp, NW warps (BM = 16 * MT * NW query rows), BN keys per K/V tile, D the
// padded head dim (head_dim <= D, chunks past head_dim are zero-filled).
template <class T, int D, int MT, int NW, int BN, bool CAUSAL>
__global__ void __launch_bounds__(NW * 32) fwd_kernel(const FwdParams p) {
  constexpr int NT = NW * 32, BM = NW * 16 * MT, LDS = D + 8;
  constexpr int KD = D / 16;  // k16 steps over the head dim
  constexpr int NN = BN / 8;  // n8 tiles of S
  constexpr int ND = D / 8;   // n8 tiles of O
  static_assert(D % 16 == 0 && BN % 16 == 0, "tile shape");

  T* sQ = reinterpret_cast<T*>(dynamic_smem());  // [BM][LDS], later the O staging area
  T* sK = sQ + BM * LDS;                         // [2][BN][LDS]
  T* sV = sK + 2 * BN * LDS;                     // [2][BN][LDS]

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int g = lane / 4, t = lane % 4;
  const int m_block = CAUSAL ? int(gridDim.x) - 1 - int(blockIdx.x) : int(blockIdx.x);
  const int m0 = m_block * BM;
  const int64_t h = blockIdx.y, b = blockIdx.z;
  const T* q = static_cast<const T*>(p.q) + b * p.sq.batch + h * p.sq.head;
  const T* k = static_cast<const T*>(p.k) + b * p.sk.batch + h * p.sk.head;
  const T* v = static_cast<const T*>(p.v) + b * p.sv.batch + h * p.sv.head;
  const int chunks = p.head_dim / 8;
  const int n_end = CAUSAL ? imin(p.kv_len, m0 + BM) : p.kv_len;  // keys any row here may see
  const int n_blocks = (n_end + BN - 1) / BN;
  const int wrow = warp * 16 * MT;  // first row of this warp inside the block

  load_tile<T, BM, D, LDS, NT>(sQ, q + int64_t(m0) * p.sq.token, p.sq.token, p.q_len - m0, chunks,
                               q, tid);
  load_tile<T, BN, D, LDS, NT>(sK, k, p.sk.token, p.kv_len, chunks, k, tid);
  cp_async_commit();
  load_tile<T, BN, D, LDS, NT>(sV, v, p.sv.token, p.kv_len, chunks, v, tid);
  cp_async_commit();

  float acc[MT][ND][4];
  float row_max[MT][2], row_sum[MT][2];  // running max (log2 domain) and this thread's partial sum
  uint32_t qf[MT][KD][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int j = 0; j < ND; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[mt][j][r] = 0.f;
    row_max[mt][0] = row_max[mt][1] = -INFINITY;
    row_sum[mt][0] = row_sum[mt][1] = 0.f;
  }
  const float c = p.scale_log2;

  for (int j = 0; j < n_blocks; ++j) {
    const int st = j & 1, n0 = j * BN;
    cp_async_wait<1>();  // K[j] (and Q) landed; V[j] may be in flight
    __syncthreads();     // ... for every thread; everyone is done with iteration j-1
    if (j == 0) {
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int ks = 0; ks < KD; ++ks)
          ldsm_x4(qf[mt][ks],
                  smem_u32(sQ + (wrow + mt * 16 + lane % 16) * LDS + ks * 16 + (lane / 16) * 8));
    }
    if (j + 1 < n_blocks)
      load_tile<T, BN, D, LDS, NT>(sK + (st ^ 1) * BN * LDS, k + int64_t(n0 + BN) * p.sk.token,
                                   p.sk.token, p.kv_len - n0 - BN, chunks, k, tid);
    cp_async_commit();

    // S = Q K^T for this warp's rows and the BN keys of the tile.
    float s[MT][NN][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int nt = 0; nt < NN; ++nt)
#pragma unroll
        for (int r = 0; r < 4; ++r) s[mt][nt][r] = 0.f;
    const T* sKs = sK + st * BN * LDS;
#pragma unroll
    for (int ks = 0; ks < KD; ++ks) {
#pragma unroll
      for (int np = 0; np < NN / 2; ++np) {
        uint32_t bf[4];
        ldsm_x4(bf, smem_u32(sKs + (np * 16 + lane % 8 + (lane / 16) * 8) * LDS + ks * 16 +
                             ((lane / 8) % 2) * 8));
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          mma16816<T>(s[mt][2 * np], qf[mt][ks], bf[0], bf[1]);
          mma16816<T>(s[mt][2 * np + 1], qf[mt][ks], bf[2], bf[3]);
        }
      }
    }

    // Mask keys past kv_len and, when causal, keys after the query.
    if (n0 + BN > p.kv_len || (CAUSAL && n0 + BN - 1 > m0)) {
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < NN; ++nt)
#pragma unroll
          for (int r = 0; r < 4; ++r) {
            const int col = n0 + nt * 8 + 2 * t + (r & 1);
            const int row = m0 + wrow + mt * 16 + g + (r >> 1) * 8;
            if (col >= p.kv_len || (CAUSAL && col > row)) s[mt][nt][r] = -INFINITY;
          }
    }

    // Online softmax. A row's 8*NN values of the tile sit in the 4 threads of a group (t = 0..3),
    // so the max is reduced over xor 1, 2; sums stay per thread until the end.
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        float mx = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < NN; ++nt)
          mx = fmaxf(mx, fmaxf(s[mt][nt][2 * hh], s[mt][nt][2 * hh + 1]));
        mx = fmaxf(mx, shfl_xor(mx, 1));
        mx = fmaxf(mx, shfl_xor(mx, 2));
        const float m_new = fmaxf(row_max[mt][hh], mx * c);    // c > 0: max commutes with scaling
        const float m_use = m_new == -INFINITY ? 0.f : m_new;  // no (-inf) - (-inf)
        const float corr = fast_exp2(row_max[mt][hh] - m_use);
        row_max[mt][hh] = m_new;
        float sum = 0.f;
#pragma unroll
        for (int nt = 0; nt < NN; ++nt)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const float pv = fast_exp2(fmaf(s[mt][nt][2 * hh + e], c, -m_use));
            s[mt][nt][2 * hh + e] = pv;
            sum += pv;
          }
        row_sum[mt][hh] = row_sum[mt][hh] * corr + sum;
#pragma unroll
        for (int dt = 0; dt < ND; ++dt) {
          acc[mt][dt][2 * hh] *= corr;
          acc[mt][dt][2 * hh + 1] *= corr;
        }
      }

    cp_async_wait<1>();  // V[j] landed (K[j+1] may be in flight)
    __syncthreads();
    if (j + 1 < n_blocks)
      load_tile<T, BN, D, LDS, NT>(sV + (st ^ 1) * BN * LDS, v + int64_t(n0 + BN) * p.sv.token,
                                   p.sv.token, p.kv_len - n0 - BN, chunks, v, tid);
    cp_async_commit();

    // O += P V: the S accumulators of n8-tiles (2kk, 2kk+1) are the A fragment of key step kk.
    const T* sVs = sV + st * BN * LDS;
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
      uint32_t pa[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        pa[mt][0] = pack2<T>(s[mt][2 * kk][0], s[mt][2 * kk][1]);
        pa[mt][1] = pack2<T>(s[mt][2 * kk][2], s[mt][2 * kk][3]);
        pa[mt][2] = pack2<T>(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
        pa[mt][3] = pack2<T>(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
      }
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        uint32_t bf[4];
        ldsm_x4_t(bf, smem_u32(sVs + (kk * 16 + lane % 16) * LDS + dp * 16 + (lane / 16) * 8));
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          mma16816<T>(acc[mt][2 * dp], pa[mt], bf[0], bf[1]);
          mma16816<T>(acc[mt][2 * dp + 1], pa[mt], bf[2], bf[3]);
        }
      }
    }
  }
  cp_async_wait<0>();  // nothing useful is in flight, but leave no copy behind

  // Normalize, write lse, stage O (this warp's rows of sQ, read only by this warp before) and
  // store it in 16-byte chunks.
  float* lse = p.lse + (b * p.heads + h) * p.q_len;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      float l = row_sum[mt][hh];
      l += shfl_xor(l, 1);
      l += shfl_xor(l, 2);
      const float inv = l > 0.f ? 1.f / l : 0.f;
      const int lrow = wrow + mt * 16 + g + 8 * hh;
      if (t == 0 && m0 + lrow < p.q_len)
        lse[m0 + lrow] = l > 0.f ? row_max[mt][hh] * kLn2 + logf(l) : -INFINITY;
#pragma unroll
      for (int dt = 0; dt < ND; ++dt)
        *reinterpret_cast<uint32_t*>(sQ + lrow * LDS + dt * 8 + 2 * t) =
            pack2<T>(acc[mt][dt][2 * hh] * inv, acc[mt][dt][2 * hh + 1] * inv);
    }
  __syncwarp();
  T* o = static_cast<T*>(p.o) + b * p.so.batch + h * p.so.head;
#pragma unroll
  for (int i = 0; i < (16 * MT * ND + 31) / 32; ++i) {
    const int c2 = lane + i * 32;
    const int r = c2 / ND, ch = c2 % ND;
    const int row = m0 + wrow + r;
    if (c2 < 16 * MT * ND && row < p.q_len && ch < chunks)
      *reinterpret_cast<uint4*>(o + int64_t(row) * p.so.token + ch * 8) =
          *reinterpret_cast<const uint4*>(sQ + (wrow + r) * LDS + ch * 8);
  }
}

// Fallback: one warp per query row, f32 arithmetic, head_dim <= 32 * PL.
template <class T, int PL>
__global__ void __launch_bounds__(128) fwd_fallback_kernel(const FwdParams p) {
  const int lane = threadIdx.x % 32;
  const int64_t row = int64_t(blockIdx.x) * 4 + threadIdx.x / 32;
  const int64_t bh = row / p.q_len;
  if (bh >= p.batch * p.heads) return;  // whole warps leave together
  const int m = int(row % p.q_len);
  const int64_t b = bh / p.heads, h = bh % p.heads;
  const T* q = static_cast<const T*>(p.q) + b * p.sq.batch + h * p.sq.head + m * p.sq.token;
  const T* k = static_cast<const T*>(p.k) + b * p.sk.batch + h * p.sk.head;
  const T* v = static_cast<const T*>(p.v) + b * p.sv.batch + h * p.sv.head;
  float qv[PL], ov[PL];
#pragma unroll
  for (int i = 0; i < PL; ++i) {
    const int d = lane + 32 * i;
    qv[i] = d < p.head_dim ? to_f(q[d]) : 0.f;
    ov[i] = 0.f;
  }
  const int n_end = p.causal ? imin(p.kv_len, m + 1) : p.kv_len;
  float mx = -INFINITY, l = 0.f;
  for (int j = 0; j < n_end; ++j) {
    const T* kj = k + j * p.sk.token;
    const T* vj = v + j * p.sv.token;
    float dot = 0.f;
#pragma unroll
    for (int i = 0; i < PL; ++i) {
      const int d = lane + 32 * i;
      if (d < p.head_dim) dot += qv[i] * to_f(kj[d]);
    }
#pragma unroll
    for (int o = 16; o > 0; o /= 2) dot += shfl_xor(dot, o);
    const float s = dot * p.scale;
    const float m_new = fmaxf(mx, s);
    const float corr = expf(mx - m_new);  // mx = -inf the first time: 0
    const float pv = expf(s - m_new);
    l = l * corr + pv;
#pragma unroll
    for (int i = 0; i < PL; ++i) {
      const int d = lane + 32 * i;
      ov[i] = ov[i] * corr + (d < p.head_dim ? pv * to_f(vj[d]) : 0.f);
    }
    mx = m_new;
  }
  const float inv = l > 0.f ? 1.f / l : 0.f;
  T* o = static_cast<T*>(p.o) + b * p.so.batch + h * p.so.head + m * p.so.token;
#pragma unroll
  for (int i = 0; i < PL; ++i) {
    const int d = lane + 32 * i;
    if (d < p.head_dim) o[d] = from_f<T>(ov[i] * inv);
  }
  if (lane == 0) p.lse[bh * p.q_len + m] = l > 0.f ? mx + logf(l) : -INFINITY;
}

constexpr const char* kFwd = "flash_attention_forward";

template <class T, int D, int MT, int NW, int BN>
void launch_fwd(const FwdParams& p) {
  constexpr int BM = NW * 16 * MT;
  constexpr size_t smem = size_t(BM + 4 * BN) * (D + 8) * sizeof(T);
  const dim3 grid(unsigned((p.q_len + BM - 1) / BM), unsigned(p.heads), unsigned(p.batch));
  if (p.causal)
    launch_kernel<fwd_kernel<T, D, MT, NW, BN, true>>(grid, dim3(NW * 32), smem, p, kFwd);
  else
    launch_kernel<fwd_kernel<T, D, MT, NW, BN, false>>(grid, dim3(NW * 32), smem, p, kFwd);
}

template <class T>
void fwd_fast(const FwdParams& p) {
  if (p.head_dim <= 64) {
    switch (tuning_variant()) {
      case 1:
        launch_fwd<T, 64, 1, 8, 64>(p);
        break;  // 8 warps x 16 rows, ~128 registers
      case 2:
        launch_fwd<T, 64, 2, 4, 32>(p);
        break;  // shorter K/V tiles
      default:
        launch_fwd<T, 64, 2, 4, 64>(p);
        break;  // 4 warps x 32 rows
    }
  } else if (p.head_dim <= 80)
    launch_fwd<T, 80, 1, 8, 64>(p);
  else
    launch_fwd<T, 128, 1, 8, 64>(p);
}

template <class T>
void fwd_fallback(const FwdParams& p) {
  const dim3 grid(unsigned((p.batch * p.heads * p.q_len + 3) / 4));
  if (p.head_dim <= 32)
    launch_kernel<fwd_fallback_kernel<T, 1>>(grid, dim3(128), 0, p, kFwd);
  else if (p.head_dim <= 64)
    launch_kernel<fwd_fallback_kernel<T, 2>>(grid, dim3(128), 0, p, kFwd);
  else if (p.head_dim <= 128)
    launch_kernel<fwd_fallback_kernel<T, 4>>(grid, dim3(128), 0, p, kFwd);
  else
    launch_kernel<fwd_fallback_kernel<T, 8>>(grid, dim3(128), 0, p, kFwd);
}

}  // namespace attn

void flash_attention_forward(const AttentionArgs& a, const void* q, const void* k, const void* v,
                             void* o, float* lse, DType dtype) {
  using namespace attn;
  check_args(a, kFwd);
  if (a.batch == 0 || a.heads == 0 || a.q_len == 0) return;
  if (!q || !o || !lse || (a.kv_len > 0 && (!k || !v))) fail(kFwd, "null pointer");
  const FwdParams p{q,
                    k,
                    v,
                    o,
                    lse,
                    a.q,
                    a.k,
                    a.v,
                    a.o,
                    a.batch,
                    a.heads,
                    int(a.q_len),
                    int(a.kv_len),
                    int(a.head_dim),
                    a.scale,
                    a.scale * kLog2e,
                    a.causal};
  const bool fast =
      fast_path_ok(a, dtype) && aligned16(q) && aligned16(k) && aligned16(v) && aligned16(o);
  switch (dtype) {
    case DType::f32:
      fwd_fallback<float>(p);
      break;
    case DType::bf16:
      fast ? fwd_fast<__nv_bfloat16>(p) : fwd_fallback<__nv_bfloat16>(p);
      break;
    case DType::f16:
      fast ? fwd_fast<__half>(p) : fwd_fallback<__half>(p);
      break;
    default:
      fail(kFwd, "dtype #" + std::to_string(int(dtype)) + " is not supported");
  }
}

}  // namespace loom::kernels::cuda
