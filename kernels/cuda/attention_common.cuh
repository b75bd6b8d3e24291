#pragma once
// Internal to attention_fwd.cu and attention_bwd.cu: the warp-level building blocks of the flash
// attention kernels (cp.async, ldmatrix, mma.sync m16n8k16) and the launch helper.
//
// Fragment layouts (PTX ISA, "Matrix fragments for mma.m16n8k16", f16/bf16 inputs, f32 accum).
// lane = 0..31, g = lane / 4 (group), t = lane % 4 (thread in group). A 32-bit register holds two
// 16-bit elements; the lower column (or k) index sits in the low half.
//   A (16 x 16, row major): a0 = (row g,   k 2t..2t+1)   a1 = (row g+8, k 2t..2t+1)
//                           a2 = (row g,   k 2t+8..+9)   a3 = (row g+8, k 2t+8..+9)
//   B (16 x 8, "col"):      b0 = (k 2t..2t+1, col g)     b1 = (k 2t+8..+9, col g)
//   C/D (16 x 8, f32):      c0, c1 = (row g, col 2t, 2t+1)   c2, c3 = (row g+8, col 2t, 2t+1)
// ldmatrix.m8n8.x4: lanes 8i..8i+7 give the row addresses of 8x8 matrix i (16 contiguous bytes
// each); register ri of a lane receives M_i[g][2t..2t+1], or with .trans M_i[2t..2t+1][g].
// Consequences used throughout (tiles in shared memory are row major, row stride LDS elements):
//   * A from a row-major [m][k] tile:               lane address (row lane%16, col (lane/16)*8),
//     matrices (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15).
//   * B from a tile stored [n][k] (K in S = Q K^T): lane address (row (lane%8) + (lane/16)*8,
//     col ((lane/8)%2)*8); registers r0,r1 = b0,b1 of n-tile 0, r2,r3 = b0,b1 of n-tile 1.
//   * B from a tile stored [k][n] (V in O = P V), .trans: lane address (row lane%16,
//     col (lane/16)*8); r0,r1 = b0,b1 of n-tile 0, r2,r3 = b0,b1 of n-tile 1.
//   * A from a tile stored [k][m] (dS^T read as dS), .trans: lane address
//     (row (lane%8) + (lane/16)*8, col ((lane/8)%2)*8); r0..r3 = a0..a3.
//   * An accumulator pair of n8-tiles (2j, 2j+1) is directly the A fragment of k-step j:
//     a0 = pack(c[2j][0], c[2j][1]), a1 = pack(c[2j][2], c[2j][3]), a2/a3 likewise from 2j+1.
//
// Building with LOOM_ATTENTION_EMULATE (and a header that emulates these primitives force-included,
// see tests/gpu/attention_emu.h) compiles the same kernels for the host, to check the indexing.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "kernels/cuda/attention.h"

#ifndef LOOM_ATTENTION_EMULATE
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>

#include "kernels/cuda/context.h"
#endif

namespace loom::kernels::cuda::attn {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

__host__ __device__ __forceinline__ int imin(int a, int b) {
  return a < b ? a : b;
}

// Two floats rounded (to nearest even) into one register of two 16-bit elements, lo in the low
// half.
template <class T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi);
template <>
__device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  uint32_t u;
  memcpy(&u, &v, 4);
  return u;
}
template <>
__device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
  const __half2 v = __floats2half2_rn(lo, hi);
  uint32_t u;
  memcpy(&u, &v, 4);
  return u;
}

// Eight elements as one 16-byte load or store.
template <class T>
struct alignas(16) Pack8 {
  T e[8];
};

__device__ __forceinline__ float to_f(float v) {
  return v;
}
__device__ __forceinline__ float to_f(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
__device__ __forceinline__ float to_f(__half v) {
  return __half2float(v);
}
template <class T>
__device__ __forceinline__ T from_f(float v);
template <>
__device__ __forceinline__ float from_f<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) {
  return __float2bfloat16(v);
}
template <>
__device__ __forceinline__ __half from_f<__half>(float v) {
  return __float2half(v);
}

#ifndef LOOM_ATTENTION_EMULATE

__device__ __forceinline__ unsigned char* dynamic_smem() {
  extern __shared__ __align__(16) unsigned char attn_smem[];
  return attn_smem;
}
__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, asynchronously; !valid writes 16 zero bytes and reads nothing.
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::);
}
// Waits until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
// Two matrices: lanes 0-7 address matrix 0, lanes 8-15 matrix 1 (lanes 16-31 are ignored).
__device__ __forceinline__ void ldsm_x2_t(uint32_t& r0, uint32_t& r1, uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n"
               : "=r"(r0), "=r"(r1)
               : "r"(addr));
}

// d += A B for one m16n8k16 tile (layouts above).
template <class T>
__device__ __forceinline__ void mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1);
template <>
__device__ __forceinline__ void mma16816<__nv_bfloat16>(float (&d)[4], const uint32_t (&a)[4],
                                                        uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma16816<__half>(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                                 uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// 2^x with MUFU.EX2 (ex2.approx, relative error ~2^-22); 2^-inf = 0.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ float shfl_xor(float v, int mask) {
  return __shfl_xor_sync(0xffffffffu, v, mask);
}
// p[0] += a, p[1] += b as one 8-byte reduction without return value (sm_90; two 4-byte ones
// before); p global and 8-byte aligned.
__device__ __forceinline__ void atomic_add2(float* p, float a, float b) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("red.global.add.v2.f32 [%0], {%1, %2};\n" ::"l"(p), "f"(a), "f"(b));
#else
  atomicAdd(p, a);
  atomicAdd(p + 1, b);
#endif
}

// Launches Kernel<<<grid, block, smem>>> on the compute stream, raising the kernel's dynamic
// shared memory limit first when it needs more than the default 48 KiB (once per device).
template <auto Kernel, class Params>
void launch_kernel(dim3 grid, dim3 block, size_t smem, const Params& p, const char* what) {
  if (smem > 48 * 1024) {
    static std::atomic<uint64_t> configured{0};  // bit d: done on device d
    const int dev = current_device();
    if (dev >= 64 || !(configured.load() >> dev & 1)) {
      const cudaError_t e = cudaFuncSetAttribute(
          Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
      if (e != cudaSuccess)
        throw std::runtime_error(std::string("[cuda] ") + what +
                                 ": cudaFuncSetAttribute: " + cudaGetErrorString(e));
      if (dev < 64) configured.fetch_or(uint64_t(1) << dev);
    }
  }
  Kernel<<<grid, block, smem, compute_stream()>>>(p);
  check_launch(what);
}

// Fills n bytes of device memory with zeros on the compute stream.
inline void zero_async(void* p, size_t n, const char* what) {
  const cudaError_t e = cudaMemsetAsync(p, 0, n, compute_stream());
  if (e != cudaSuccess)
    throw std::runtime_error(std::string("[cuda] ") + what +
                             ": cudaMemsetAsync: " + cudaGetErrorString(e));
}

#endif  // LOOM_ATTENTION_EMULATE

// -- host-side checks shared by forward and backward ---------------------------------------------

[[noreturn]] inline void fail(const char* what, const std::string& msg) {
  throw std::runtime_error(std::string("[cuda] ") + what + ": " + msg);
}
inline void check_args(const AttentionArgs& a, const char* what) {
  if (a.batch < 0 || a.heads < 0 || a.q_len < 0 || a.kv_len < 0 || a.head_dim < 1)
    fail(what, "bad sizes: batch " + std::to_string(a.batch) + ", heads " +
                   std::to_string(a.heads) + ", q_len " + std::to_string(a.q_len) + ", kv_len " +
                   std::to_string(a.kv_len) + ", head_dim " + std::to_string(a.head_dim));
  if (a.head_dim > 256) fail(what, "head_dim " + std::to_string(a.head_dim) + " > 256");
  if (a.q_len > (int64_t(1) << 30) || a.kv_len > (int64_t(1) << 30))
    fail(what, "sequence longer than 2^30");
}
// Tuning aid: LOOM_ATTENTION_VARIANT=1 or 2 selects alternative tile shapes for head_dim <= 64
// (see fwd_fast / bwd_fast); unset or 0 is the default. Read at every call.
inline int tuning_variant() {
  const char* s = std::getenv("LOOM_ATTENTION_VARIANT");
  return s ? std::atoi(s) : 0;
}
// The tensor-core kernels' preconditions (the fallback takes the rest).
inline bool fast_path_ok(const AttentionArgs& a, DType dtype) {
  return (dtype == DType::bf16 || dtype == DType::f16) && a.head_dim % 8 == 0 &&
         a.head_dim <= 128 && a.scale > 0 && a.q_len > 0 && a.kv_len > 0 && a.heads <= 65535 &&
         a.batch <= 65535 && strides_ok(a.q) && strides_ok(a.k) && strides_ok(a.v) &&
         strides_ok(a.o);
}

// Copies rows [0, ROWS) x chunks [0, D/8) of a [len, head_dim] tile (rows token_stride apart,
// 16-byte chunks of 8 elements) into a shared [ROWS][LDS] tile with cp.async; rows >= rows_valid
// and chunks >= chunks_valid are zero-filled. `any` is a valid global address (never read).
template <class T, int ROWS, int D, int LDS, int NT>
__device__ __forceinline__ void load_tile(T* s, const T* g, int64_t token_stride, int rows_valid,
                                          int chunks_valid, const T* any, int tid) {
  constexpr int kChunks = D / 8;
  constexpr int kTotal = ROWS * kChunks;
#pragma unroll
  for (int i = 0; i < (kTotal + NT - 1) / NT; ++i) {
    const int c = tid + i * NT;
    if (kTotal % NT == 0 || c < kTotal) {
      const int r = c / kChunks, ch = c % kChunks;
      const bool ok = r < rows_valid && ch < chunks_valid;
      const T* src = ok ? g + r * token_stride + ch * 8 : any;
      cp_async16(smem_u32(s + r * LDS + ch * 8), src, ok);
    }
  }
}

}  // namespace loom::kernels::cuda::attn
