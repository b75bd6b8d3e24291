// Flash attention backward (attention.h), FlashAttention-2 style, in three launches:
//   1. pre:  D_i = rowsum(dO * O) and lse*log2e per query row, into the workspace (rows padded to
//            a multiple of 128: D = 0 and lse = +inf there, so padded rows get P = 0); dq_acc = 0.
//   2. main: one block per BN = 16*NW keys. Each warp owns 16 keys and keeps their dK, dV rows in
//            f32 registers while the block walks over query tiles of BM rows (Q, dO, lse, D
//            double-buffered by cp.async). Per tile, with the warp's keys as the M dimension:
//              S^T = K Q^T,  P^T = exp2(S^T*scale*log2e - lse2),  dP^T = V dO^T,
//              dV += P^T dO,  dS^T = P^T (dP^T - D),  dK += dS^T Q,
//            then dS^T goes to shared memory and the block computes dQ_tile = dS K, split over
//            the warps by (m16 tile, head-dim range), added to dq_acc with 8-byte f32 atomics.
//   3. post: dq = scale * dq_acc, converted.
// Fallback (f32, odd shapes): warp-per-row kernels, one over query rows for dq and one over key
// rows for dk/dv, f32 arithmetic.
#include <cmath>
#include <cstdint>

#include "kernels/cuda/attention.h"
#include "kernels/cuda/attention_common.cuh"

namespace loom::kernels::cuda {

namespace attn {

constexpr int kRowPad = 128;  // query rows of the workspace vectors are padded to this

struct BwdParams {
  const void* q;
  const void* k;
  const void* v;
  const void* o;
  const void* dout;
  const float* lse;  // [B*H, q_len], natural log
  void* dq;
  void* dk;
  void* dv;
  float* dq_acc;  // [B*H, q_len, head_dim]
  float* di;      // [B*H, q_pad]
  float* lse2;    // [B*H, q_pad], lse * log2e, +inf on padded rows
  AttentionStrides sq, sk, sv, so, sdo, sdq, sdk, sdv;
  int64_t batch, heads;
  int q_len, kv_len, head_dim, q_pad;
  float scale, scale_log2;
  bool causal;
};

struct Workspace {
  size_t dq_acc = 0, di = 0, lse2 = 0, total = 0;  // byte offsets and size
};
inline size_t align256(size_t n) {
  return (n + 255) / 256 * 256;
}
inline Workspace workspace_layout(const AttentionArgs& a) {
  Workspace w;
  const size_t bh = size_t(a.batch) * size_t(a.heads);
  const size_t q_pad = (size_t(a.q_len) + kRowPad - 1) / kRowPad * kRowPad;
  w.dq_acc = 0;
  w.di = align256(bh * size_t(a.q_len) * size_t(a.head_dim) * sizeof(float));
  w.lse2 = w.di + align256(bh * q_pad * sizeof(float));
  w.total = w.lse2 + align256(bh * q_pad * sizeof(float));
  return w;
}

// -- 1. pre-processing: 16 threads per padded query row, 8 elements (16 bytes) each --------------
template <class T>
__global__ void __launch_bounds__(256) bwd_pre_kernel(const BwdParams p) {
  const int64_t gid = int64_t(blockIdx.x) * 256 + threadIdx.x;
  const int64_t r = gid / 16;  // padded row: bh * q_pad + m
  const int c = int(gid % 16);
  const bool in = r < p.batch * p.heads * p.q_pad;
  const int64_t bh = r / p.q_pad;
  const int m = int(r % p.q_pad);
  const int64_t b = bh / p.heads, h = bh % p.heads;
  float acc = 0.f;
  if (in && m < p.q_len && c < p.head_dim / 8) {
    const Pack8<T> ov = *reinterpret_cast<const Pack8<T>*>(
        static_cast<const T*>(p.o) + b * p.so.batch + h * p.so.head + m * p.so.token + c * 8);
    const Pack8<T> dv = *reinterpret_cast<const Pack8<T>*>(
        static_cast<const T*>(p.dout) + b * p.sdo.batch + h * p.sdo.head + m * p.sdo.token + c * 8);
#pragma unroll
    for (int i = 0; i < 8; ++i) acc += to_f(ov.e[i]) * to_f(dv.e[i]);
  }
  // All 32 lanes are here (no early exit), the 16-lane groups reduce separately.
#pragma unroll
  for (int o = 8; o > 0; o /= 2) acc += shfl_xor(acc, o);
  if (in && c == 0) {
    p.di[r] = m < p.q_len ? acc : 0.f;
    p.lse2[r] = m < p.q_len ? p.lse[bh * p.q_len + m] * kLog2e : INFINITY;
  }
}

// -- 3. post-processing: dq = scale * dq_acc, 8 elements per thread ------------------------------
template <class T>
__global__ void __launch_bounds__(256) bwd_post_kernel(const BwdParams p) {
  const int chunks = p.head_dim / 8;
  const int64_t gid = int64_t(blockIdx.x) * 256 + threadIdx.x;
  const int64_t r = gid / chunks;  // bh * q_len + m
  const int c = int(gid % chunks);
  if (r >= p.batch * p.heads * p.q_len) return;
  const int64_t bh = r / p.q_len, b = bh / p.heads, h = bh % p.heads;
  const int m = int(r % p.q_len);
  const float4* src = reinterpret_cast<const float4*>(p.dq_acc + r * p.head_dim + c * 8);
  const float4 x = src[0], y = src[1];
  uint4 out;
  out.x = pack2<T>(x.x * p.scale, x.y * p.scale);
  out.y = pack2<T>(x.z * p.scale, x.w * p.scale);
  out.z = pack2<T>(y.x * p.scale, y.y * p.scale);
  out.w = pack2<T>(y.z * p.scale, y.w * p.scale);
  *reinterpret_cast<uint4*>(static_cast<T*>(p.dq) + b * p.sdq.batch + h * p.sdq.head +
                            m * p.sdq.token + c * 8) = out;
}

// -- 2. main kernel
// -------------------------------------------------------------------------------- NW warps (BN =
// 16*NW keys), BM query rows per step, D the padded head dim; KV_REGS keeps the warp's K and V rows
// as A fragments in registers (else they are re-read from shared memory).
template <class T, int D, int NW, int BM, bool KV_REGS, bool CAUSAL>
__global__ void __launch_bounds__(NW * 32, 1) bwd_kernel(const BwdParams p) {
  constexpr int NT = NW * 32, BN = NW * 16, LDS = D + 8, LDSS = BM + 8;
  constexpr int KD = D / 16, ND = D / 8, NM = BM / 8;
  constexpr int MTQ = BM / 16, WD = NW / MTQ, NQ = ND / WD;  // dQ step: warp tiling
  static_assert(NW % MTQ == 0 && ND % WD == 0, "dQ tiling");
  static_assert(BM % 16 == 0 && kRowPad % BM == 0 && BM / 2 <= NT, "query tile");

  T* sK = reinterpret_cast<T*>(dynamic_smem());           // [BN][LDS]
  T* sV = sK + BN * LDS;                                  // [BN][LDS]
  T* sQ = sV + BN * LDS;                                  // [2][BM][LDS]
  T* sdO = sQ + 2 * BM * LDS;                             // [2][BM][LDS]
  T* sdS = sdO + 2 * BM * LDS;                            // [BN][LDSS]: dS^T of the current tile
  float* sL = reinterpret_cast<float*>(sdS + BN * LDSS);  // [2][BM] lse * log2e
  float* sD = sL + 2 * BM;                                // [2][BM] D_i

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int g = lane / 4, t = lane % 4;
  const int n0 = blockIdx.x * BN;
  const int64_t h = blockIdx.y, b = blockIdx.z, bh = b * p.heads + h;
  const T* q = static_cast<const T*>(p.q) + b * p.sq.batch + h * p.sq.head;
  const T* k = static_cast<const T*>(p.k) + b * p.sk.batch + h * p.sk.head;
  const T* v = static_cast<const T*>(p.v) + b * p.sv.batch + h * p.sv.head;
  const T* dout = static_cast<const T*>(p.dout) + b * p.sdo.batch + h * p.sdo.head;
  const float* lse2 = p.lse2 + bh * p.q_pad;
  const float* di = p.di + bh * p.q_pad;
  float* dq_acc = p.dq_acc + bh * p.q_len * p.head_dim;
  const int chunks = p.head_dim / 8;
  const int first_tile = CAUSAL ? n0 / BM : 0;  // earlier query rows see none of these keys
  const int n_iters = (p.q_len + BM - 1) / BM - first_tile;

  // Q tile i, dO tile i and their lse/D rows into buffer `st` (lse2/di are padded: no bounds).
  auto load_q_tile = [&](int st, int m0) {
    load_tile<T, BM, D, LDS, NT>(sQ + st * BM * LDS, q + int64_t(m0) * p.sq.token, p.sq.token,
                                 p.q_len - m0, chunks, q, tid);
    load_tile<T, BM, D, LDS, NT>(sdO + st * BM * LDS, dout + int64_t(m0) * p.sdo.token, p.sdo.token,
                                 p.q_len - m0, chunks, dout, tid);
    if (tid < BM / 4)
      cp_async16(smem_u32(sL + st * BM + tid * 4), lse2 + m0 + tid * 4, true);
    else if (tid < BM / 2)
      cp_async16(smem_u32(sD + st * BM + (tid - BM / 4) * 4), di + m0 + (tid - BM / 4) * 4, true);
  };

  load_tile<T, BN, D, LDS, NT>(sK, k + int64_t(n0) * p.sk.token, p.sk.token, p.kv_len - n0, chunks,
                               k, tid);
  load_tile<T, BN, D, LDS, NT>(sV, v + int64_t(n0) * p.sv.token, p.sv.token, p.kv_len - n0, chunks,
                               v, tid);
  if (n_iters > 0) load_q_tile(0, first_tile * BM);
  cp_async_commit();

  float dk[ND][4], dv[ND][4];
#pragma unroll
  for (int j = 0; j < ND; ++j)
#pragma unroll
    for (int r = 0; r < 4; ++r) dk[j][r] = dv[j][r] = 0.f;
  uint32_t kf[KV_REGS ? KD : 1][4], vf[KV_REGS ? KD : 1][4];
  const int nrow0 = warp * 16;  // this warp's first key inside the block
  const float c = p.scale_log2;

  for (int it = 0; it < n_iters; ++it) {
    const int st = it & 1, m0 = (first_tile + it) * BM;
    cp_async_wait<0>();  // tile `it` landed
    __syncthreads();     // ... for everyone; iteration it-1 is finished by all warps
    if (KV_REGS && it == 0) {
#pragma unroll
      for (int ks = 0; ks < (KV_REGS ? KD : 0); ++ks) {
        const int off = (nrow0 + lane % 16) * LDS + ks * 16 + (lane / 16) * 8;
        ldsm_x4(kf[ks], smem_u32(sK + off));
        ldsm_x4(vf[ks], smem_u32(sV + off));
      }
    }
    if (it + 1 < n_iters) load_q_tile(st ^ 1, m0 + BM);
    cp_async_commit();

    const T* sQs = sQ + st * BM * LDS;
    const T* sdOs = sdO + st * BM * LDS;
    const float* sLs = sL + st * BM;
    const float* sDs = sD + st * BM;

    // S^T = K Q^T and dP^T = V dO^T for the warp's 16 keys x BM queries.
    float sT[NM][4], dpT[NM][4];
#pragma unroll
    for (int j = 0; j < NM; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) sT[j][r] = dpT[j][r] = 0.f;
#pragma unroll
    for (int ks = 0; ks < KD; ++ks) {
      uint32_t ka[4], va[4];
      if constexpr (KV_REGS) {
#pragma unroll
        for (int r = 0; r < 4; ++r) ka[r] = kf[ks][r], va[r] = vf[ks][r];
      } else {
        const int off = (nrow0 + lane % 16) * LDS + ks * 16 + (lane / 16) * 8;
        ldsm_x4(ka, smem_u32(sK + off));
        ldsm_x4(va, smem_u32(sV + off));
      }
#pragma unroll
      for (int mp = 0; mp < BM / 16; ++mp) {
        const int off =
            (mp * 16 + lane % 8 + (lane / 16) * 8) * LDS + ks * 16 + ((lane / 8) % 2) * 8;
        uint32_t bq[4], bo[4];
        ldsm_x4(bq, smem_u32(sQs + off));
        ldsm_x4(bo, smem_u32(sdOs + off));
        mma16816<T>(sT[2 * mp], ka, bq[0], bq[1]);
        mma16816<T>(sT[2 * mp + 1], ka, bq[2], bq[3]);
        mma16816<T>(dpT[2 * mp], va, bo[0], bo[1]);
        mma16816<T>(dpT[2 * mp + 1], va, bo[2], bo[3]);
      }
    }

    // P^T, then dS^T = P^T (dP^T - D) in place of dP^T. Element r of n8-tile j: key
    // n0 + nrow0 + g + 8*(r/2), query m0 + 8j + 2t + r%2.
    const bool need_mask = n0 + BN > p.kv_len || (CAUSAL && n0 + BN - 1 > m0);
#pragma unroll
    for (int j = 0; j < NM; ++j) {
      const float2 l2 = *reinterpret_cast<const float2*>(sLs + j * 8 + 2 * t);
      const float2 d2 = *reinterpret_cast<const float2*>(sDs + j * 8 + 2 * t);
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        float pv = fast_exp2(fmaf(sT[j][r], c, -((r & 1) ? l2.y : l2.x)));
        if (need_mask) {
          const int n = n0 + nrow0 + g + 8 * (r >> 1), m = m0 + j * 8 + 2 * t + (r & 1);
          if (n >= p.kv_len || (CAUSAL && n > m)) pv = 0.f;
        }
        sT[j][r] = pv;
        dpT[j][r] = pv * (dpT[j][r] - ((r & 1) ? d2.y : d2.x));
      }
    }

    // dV += P^T dO and dK += dS^T Q (A fragments straight from the accumulators); dS^T -> sdS.
#pragma unroll
    for (int kk = 0; kk < BM / 16; ++kk) {
      uint32_t pa[4], da[4];
      pa[0] = pack2<T>(sT[2 * kk][0], sT[2 * kk][1]);
      pa[1] = pack2<T>(sT[2 * kk][2], sT[2 * kk][3]);
      pa[2] = pack2<T>(sT[2 * kk + 1][0], sT[2 * kk + 1][1]);
      pa[3] = pack2<T>(sT[2 * kk + 1][2], sT[2 * kk + 1][3]);
      da[0] = pack2<T>(dpT[2 * kk][0], dpT[2 * kk][1]);
      da[1] = pack2<T>(dpT[2 * kk][2], dpT[2 * kk][3]);
      da[2] = pack2<T>(dpT[2 * kk + 1][0], dpT[2 * kk + 1][1]);
      da[3] = pack2<T>(dpT[2 * kk + 1][2], dpT[2 * kk + 1][3]);
      uint32_t* ds_row0 = reinterpret_cast<uint32_t*>(sdS + (nrow0 + g) * LDSS + kk * 16 + 2 * t);
      uint32_t* ds_row8 =
          reinterpret_cast<uint32_t*>(sdS + (nrow0 + g + 8) * LDSS + kk * 16 + 2 * t);
      ds_row0[0] = da[0];
      ds_row8[0] = da[1];
      ds_row0[4] = da[2];  // +8 elements
      ds_row8[4] = da[3];
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        const int off = (kk * 16 + lane % 16) * LDS + dp * 16 + (lane / 16) * 8;
        uint32_t bo[4], bq[4];
        ldsm_x4_t(bo, smem_u32(sdOs + off));
        ldsm_x4_t(bq, smem_u32(sQs + off));
        mma16816<T>(dv[2 * dp], pa, bo[0], bo[1]);
        mma16816<T>(dv[2 * dp + 1], pa, bo[2], bo[3]);
        mma16816<T>(dk[2 * dp], da, bq[0], bq[1]);
        mma16816<T>(dk[2 * dp + 1], da, bq[2], bq[3]);
      }
    }
    __syncthreads();  // dS^T of all warps is in sdS

    // dQ tile (BM x D) = dS K over the block's keys: warp -> (m16 tile mq, n8 tiles d0..d0+NQ).
    {
      const int mq = warp % MTQ, d0 = (warp / MTQ) * NQ;
      float dq[NQ][4];
#pragma unroll
      for (int j = 0; j < NQ; ++j)
#pragma unroll
        for (int r = 0; r < 4; ++r) dq[j][r] = 0.f;
#pragma unroll
      for (int ks = 0; ks < BN / 16; ++ks) {
        uint32_t a[4];
        ldsm_x4_t(a, smem_u32(sdS + (ks * 16 + lane % 8 + (lane / 16) * 8) * LDSS + mq * 16 +
                              ((lane / 8) % 2) * 8));
#pragma unroll
        for (int jp = 0; jp < NQ / 2; ++jp) {
          uint32_t bk[4];
          ldsm_x4_t(
              bk, smem_u32(sK + (ks * 16 + lane % 16) * LDS + (d0 + 2 * jp) * 8 + (lane / 16) * 8));
          mma16816<T>(dq[2 * jp], a, bk[0], bk[1]);
          mma16816<T>(dq[2 * jp + 1], a, bk[2], bk[3]);
        }
        if constexpr (NQ % 2 == 1) {
          uint32_t b0, b1;
          ldsm_x2_t(b0, b1, smem_u32(sK + (ks * 16 + lane % 16) * LDS + (d0 + NQ - 1) * 8));
          mma16816<T>(dq[NQ - 1], a, b0, b1);
        }
      }
#pragma unroll
      for (int j = 0; j < NQ; ++j)
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
          const int m = m0 + mq * 16 + g + 8 * hh, col = (d0 + j) * 8 + 2 * t;
          if (m < p.q_len && col < p.head_dim)
            atomic_add2(dq_acc + int64_t(m) * p.head_dim + col, dq[j][2 * hh], dq[j][2 * hh + 1]);
        }
    }
  }

  // dK (times scale) and dV: stage each warp's 16 rows in its own rows of sK / sV, then store
  // 16-byte chunks.
  cp_async_wait<0>();
  __syncthreads();  // every warp is done reading sK / sV
#pragma unroll
  for (int j = 0; j < ND; ++j)
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const int off = (nrow0 + g + 8 * hh) * LDS + j * 8 + 2 * t;
      *reinterpret_cast<uint32_t*>(sK + off) =
          pack2<T>(dk[j][2 * hh] * p.scale, dk[j][2 * hh + 1] * p.scale);
      *reinterpret_cast<uint32_t*>(sV + off) = pack2<T>(dv[j][2 * hh], dv[j][2 * hh + 1]);
    }
  __syncwarp();
  T* dkp = static_cast<T*>(p.dk) + b * p.sdk.batch + h * p.sdk.head;
  T* dvp = static_cast<T*>(p.dv) + b * p.sdv.batch + h * p.sdv.head;
#pragma unroll
  for (int i = 0; i < (16 * ND + 31) / 32; ++i) {
    const int c2 = lane + i * 32;
    const int r = c2 / ND, ch = c2 % ND;
    const int n = n0 + nrow0 + r;
    if (c2 < 16 * ND && n < p.kv_len && ch < chunks) {
      const int off = (nrow0 + r) * LDS + ch * 8;
      *reinterpret_cast<uint4*>(dkp + int64_t(n) * p.sdk.token + ch * 8) =
          *reinterpret_cast<const uint4*>(sK + off);
      *reinterpret_cast<uint4*>(dvp + int64_t(n) * p.sdv.token + ch * 8) =
          *reinterpret_cast<const uint4*>(sV + off);
    }
  }
}

// -- fallback ------------------------------------------------------------------------------------

// di[bh * q_pad + m] = rowsum(dO * O), one warp per query row.
template <class T>
__global__ void __launch_bounds__(128) bwd_pre_fallback_kernel(const BwdParams p) {
  const int lane = threadIdx.x % 32;
  const int64_t row = int64_t(blockIdx.x) * 4 + threadIdx.x / 32;
  const int64_t bh = row / p.q_len;
  if (bh >= p.batch * p.heads) return;
  const int m = int(row % p.q_len);
  const int64_t b = bh / p.heads, h = bh % p.heads;
  const T* o = static_cast<const T*>(p.o) + b * p.so.batch + h * p.so.head + m * p.so.token;
  const T* d = static_cast<const T*>(p.dout) + b * p.sdo.batch + h * p.sdo.head + m * p.sdo.token;
  float acc = 0.f;
  for (int i = lane; i < p.head_dim; i += 32) acc += to_f(o[i]) * to_f(d[i]);
#pragma unroll
  for (int s = 16; s > 0; s /= 2) acc += shfl_xor(acc, s);
  if (lane == 0) p.di[bh * p.q_pad + m] = acc;
}

template <int PL>
__device__ __forceinline__ float warp_dot(const float (&x)[PL], const float (&y)[PL]) {
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < PL; ++i) s += x[i] * y[i];
#pragma unroll
  for (int o = 16; o > 0; o /= 2) s += shfl_xor(s, o);
  return s;
}
template <class T, int PL>
__device__ __forceinline__ void load_row(float (&x)[PL], const T* row, int n, int lane) {
#pragma unroll
  for (int i = 0; i < PL; ++i) x[i] = lane + 32 * i < n ? to_f(row[lane + 32 * i]) : 0.f;
}
template <class T, int PL>
__device__ __forceinline__ void store_row(T* row, const float (&x)[PL], float mul, int n,
                                          int lane) {
#pragma unroll
  for (int i = 0; i < PL; ++i)
    if (lane + 32 * i < n) row[lane + 32 * i] = from_f<T>(x[i] * mul);
}

// dq for one query row per warp: sum over its keys of dS_ij k_j, times scale.
template <class T, int PL>
__global__ void __launch_bounds__(128) bwd_dq_fallback_kernel(const BwdParams p) {
  const int lane = threadIdx.x % 32;
  const int64_t row = int64_t(blockIdx.x) * 4 + threadIdx.x / 32;
  const int64_t bh = row / p.q_len;
  if (bh >= p.batch * p.heads) return;
  const int m = int(row % p.q_len);
  const int64_t b = bh / p.heads, h = bh % p.heads;
  const T* k = static_cast<const T*>(p.k) + b * p.sk.batch + h * p.sk.head;
  const T* v = static_cast<const T*>(p.v) + b * p.sv.batch + h * p.sv.head;
  float qv[PL], dov[PL], acc[PL], kv[PL], vv[PL];
  load_row(qv, static_cast<const T*>(p.q) + b * p.sq.batch + h * p.sq.head + m * p.sq.token,
           p.head_dim, lane);
  load_row(dov, static_cast<const T*>(p.dout) + b * p.sdo.batch + h * p.sdo.head + m * p.sdo.token,
           p.head_dim, lane);
#pragma unroll
  for (int i = 0; i < PL; ++i) acc[i] = 0.f;
  const float lse = p.lse[bh * p.q_len + m], dd = p.di[bh * p.q_pad + m];
  const int n_end = p.causal ? imin(p.kv_len, m + 1) : p.kv_len;
  for (int j = 0; j < n_end; ++j) {
    load_row(kv, k + j * p.sk.token, p.head_dim, lane);
    load_row(vv, v + j * p.sv.token, p.head_dim, lane);
    const float pv = expf(warp_dot(qv, kv) * p.scale - lse);
    const float ds = pv * (warp_dot(dov, vv) - dd);
#pragma unroll
    for (int i = 0; i < PL; ++i) acc[i] += ds * kv[i];
  }
  store_row(static_cast<T*>(p.dq) + b * p.sdq.batch + h * p.sdq.head + m * p.sdq.token, acc,
            p.scale, p.head_dim, lane);
}

// dk, dv for one key row per warp: sums over the queries that see it.
template <class T, int PL>
__global__ void __launch_bounds__(128) bwd_dkv_fallback_kernel(const BwdParams p) {
  const int lane = threadIdx.x % 32;
  const int64_t row = int64_t(blockIdx.x) * 4 + threadIdx.x / 32;
  const int64_t bh = row / p.kv_len;
  if (bh >= p.batch * p.heads) return;
  const int n = int(row % p.kv_len);
  const int64_t b = bh / p.heads, h = bh % p.heads;
  const T* q = static_cast<const T*>(p.q) + b * p.sq.batch + h * p.sq.head;
  const T* dout = static_cast<const T*>(p.dout) + b * p.sdo.batch + h * p.sdo.head;
  float kv[PL], vv[PL], dk[PL], dv[PL], qv[PL], dov[PL];
  load_row(kv, static_cast<const T*>(p.k) + b * p.sk.batch + h * p.sk.head + n * p.sk.token,
           p.head_dim, lane);
  load_row(vv, static_cast<const T*>(p.v) + b * p.sv.batch + h * p.sv.head + n * p.sv.token,
           p.head_dim, lane);
#pragma unroll
  for (int i = 0; i < PL; ++i) dk[i] = dv[i] = 0.f;
  for (int m = p.causal ? n : 0; m < p.q_len; ++m) {
    load_row(qv, q + m * p.sq.token, p.head_dim, lane);
    load_row(dov, dout + m * p.sdo.token, p.head_dim, lane);
    const float pv = expf(warp_dot(qv, kv) * p.scale - p.lse[bh * p.q_len + m]);
    const float ds = pv * (warp_dot(dov, vv) - p.di[bh * p.q_pad + m]);
#pragma unroll
    for (int i = 0; i < PL; ++i) {
      dv[i] += pv * dov[i];
      dk[i] += ds * qv[i];
    }
  }
  store_row(static_cast<T*>(p.dk) + b * p.sdk.batch + h * p.sdk.head + n * p.sdk.token, dk, p.scale,
            p.head_dim, lane);
  store_row(static_cast<T*>(p.dv) + b * p.sdv.batch + h * p.sdv.head + n * p.sdv.token, dv, 1.f,
            p.head_dim, lane);
}

// -- launchers -----------------------------------------------------------------------------------

constexpr const char* kBwd = "flash_attention_backward";

template <class T, int D, int NW, int BM, bool KV_REGS>
void launch_bwd(const BwdParams& p) {
  constexpr int BN = NW * 16;
  constexpr size_t smem = size_t(2 * BN + 4 * BM) * (D + 8) * sizeof(T) +
                          size_t(BN) * (BM + 8) * sizeof(T) + 4 * BM * sizeof(float);
  const dim3 grid(unsigned((p.kv_len + BN - 1) / BN), unsigned(p.heads), unsigned(p.batch));
  if (p.causal)
    launch_kernel<bwd_kernel<T, D, NW, BM, KV_REGS, true>>(grid, dim3(NW * 32), smem, p, kBwd);
  else
    launch_kernel<bwd_kernel<T, D, NW, BM, KV_REGS, false>>(grid, dim3(NW * 32), smem, p, kBwd);
}

template <class T>
void bwd_fast(const BwdParams& p, size_t dq_acc_bytes) {
  const int64_t pad_rows = p.batch * p.heads * p.q_pad;
  launch_kernel<bwd_pre_kernel<T>>(dim3(unsigned((pad_rows * 16 + 255) / 256)), dim3(256), 0, p,
                                   kBwd);
  zero_async(p.dq_acc, dq_acc_bytes, kBwd);
  if (p.head_dim <= 64) {
    switch (tuning_variant()) {
      case 1:
        launch_bwd<T, 64, 4, 64, true>(p);
        break;  // 64 keys per block, 4 warps
      case 2:
        launch_bwd<T, 64, 8, 32, true>(p);
        break;  // 32-row query tiles
      default:
        launch_bwd<T, 64, 8, 64, true>(p);
        break;  // 128 keys, 64-row query tiles
    }
  } else if (p.head_dim <= 80)
    launch_bwd<T, 80, 8, 64, false>(p);
  else
    launch_bwd<T, 128, 8, 32, false>(p);
  const int64_t items = p.batch * p.heads * p.q_len * (p.head_dim / 8);
  launch_kernel<bwd_post_kernel<T>>(dim3(unsigned((items + 255) / 256)), dim3(256), 0, p, kBwd);
}

template <class T, int PL>
void bwd_fallback_pl(const BwdParams& p) {
  if (p.q_len > 0) {
    const dim3 grid(unsigned((p.batch * p.heads * p.q_len + 3) / 4));
    launch_kernel<bwd_pre_fallback_kernel<T>>(grid, dim3(128), 0, p, kBwd);
    launch_kernel<bwd_dq_fallback_kernel<T, PL>>(grid, dim3(128), 0, p, kBwd);
  }
  if (p.kv_len > 0) {
    const dim3 grid(unsigned((p.batch * p.heads * p.kv_len + 3) / 4));
    launch_kernel<bwd_dkv_fallback_kernel<T, PL>>(grid, dim3(128), 0, p, kBwd);
  }
}
template <class T>
void bwd_fallback(const BwdParams& p) {
  if (p.head_dim <= 32)
    bwd_fallback_pl<T, 1>(p);
  else if (p.head_dim <= 64)
    bwd_fallback_pl<T, 2>(p);
  else if (p.head_dim <= 128)
    bwd_fallback_pl<T, 4>(p);
  else
    bwd_fallback_pl<T, 8>(p);
}

}  // namespace attn

size_t flash_attention_backward_workspace_bytes(const AttentionArgs& a) {
  attn::check_args(a, attn::kBwd);
  if (a.batch == 0 || a.heads == 0 || (a.q_len == 0 && a.kv_len == 0)) return 0;
  return attn::workspace_layout(a).total;
}

void flash_attention_backward(const AttentionArgs& a, const void* q, const void* k, const void* v,
                              const void* o, const void* dout, const float* lse, void* dq, void* dk,
                              void* dv, DType dtype, float* workspace) {
  using namespace attn;
  check_args(a, kBwd);
  if (a.batch == 0 || a.heads == 0 || (a.q_len == 0 && a.kv_len == 0)) return;
  if (dtype != DType::f32 && dtype != DType::bf16 && dtype != DType::f16)
    fail(kBwd, "dtype #" + std::to_string(int(dtype)) + " is not supported");
  if (!workspace || (a.q_len > 0 && (!q || !o || !dout || !lse || !dq)) ||
      (a.kv_len > 0 && (!k || !v || !dk || !dv)))
    fail(kBwd, "null pointer");
  const Workspace w = workspace_layout(a);
  char* ws = reinterpret_cast<char*>(workspace);
  const BwdParams p{q,
                    k,
                    v,
                    o,
                    dout,
                    lse,
                    dq,
                    dk,
                    dv,
                    reinterpret_cast<float*>(ws + w.dq_acc),
                    reinterpret_cast<float*>(ws + w.di),
                    reinterpret_cast<float*>(ws + w.lse2),
                    a.q,
                    a.k,
                    a.v,
                    a.o,
                    a.dout,
                    a.dq,
                    a.dk,
                    a.dv,
                    a.batch,
                    a.heads,
                    int(a.q_len),
                    int(a.kv_len),
                    int(a.head_dim),
                    int((a.q_len + kRowPad - 1) / kRowPad * kRowPad),
                    a.scale,
                    a.scale * kLog2e,
                    a.causal};
  const bool fast = fast_path_ok(a, dtype) && strides_ok(a.dout) && strides_ok(a.dq) &&
                    strides_ok(a.dk) && strides_ok(a.dv) && aligned16(q) && aligned16(k) &&
                    aligned16(v) && aligned16(o) && aligned16(dout) && aligned16(dq) &&
                    aligned16(dk) && aligned16(dv) && aligned16(workspace);
  switch (dtype) {
    case DType::f32:
      bwd_fallback<float>(p);
      break;
    case DType::bf16:
      fast ? bwd_fast<__nv_bfloat16>(p, w.di) : bwd_fallback<__nv_bfloat16>(p);
      break;
    default:
      fast ? bwd_fast<__half>(p, w.di) : bwd_fallback<__half>(p);
      break;
  }
}

}  // namespace loom::kernels::cuda
