#pragma once
// loom's flash attention for CUDA: softmax(scale * Q K^T [+ causal mask]) V, forward and backward,
// without ever forming the [q_len, kv_len] score matrix in memory (FlashAttention-2 scheme: Q
// tiles stream over K/V tiles with an online softmax; the backward recomputes P from the saved
// log-sum-exp). Plain C++ (no CUDA headers), like kernels.h; attention_fwd.cu and
// attention_bwd.cu implement it, stub.cpp makes each entry throw in CPU-only builds.
//
// Layout: every tensor is [B, H, len, D] addressed through element strides over (batch, head,
// token) with the head dim contiguous (stride 1), so [B, N, H, D] and [B, H, N, D] both work
// without copies. Pointers are device pointers to element (0, 0, 0, 0).
//
// Paths: bf16/f16 with head_dim % 8 == 0, head_dim <= 128, every stride % 8 == 0 and 16-byte
// aligned pointers take the tensor-core kernels (mma.sync m16n8k16, f32 accumulation; head dims
// padded to 64, 80 or 128 inside the kernel). Everything else, f32 included, takes a simple
// warp-per-row kernel that computes in f32 (head_dim <= 256): slow, but exact enough to test the
// fast path and the CPU twin against. All work is enqueued on compute_stream(); launches are
// checked; errors throw std::runtime_error "[cuda] flash_attention_*: ...".
#include <cstddef>
#include <cstdint>

#include "kernels/dtype.h"

namespace loom::kernels::cuda {

// Element strides of one [B, H, len, D] operand over (batch, head, token); D has stride 1.
struct AttentionStrides {
  int64_t batch = 0, head = 0, token = 0;
};
// Strides of a contiguous [B, H, N, D] tensor, and of a contiguous [B, N, H, D] tensor.
inline AttentionStrides strides_bhnd(int64_t heads, int64_t len, int64_t head_dim) {
  return {heads * len * head_dim, len * head_dim, head_dim};
}
inline AttentionStrides strides_bnhd(int64_t heads, int64_t len, int64_t head_dim) {
  return {len * heads * head_dim, head_dim, heads * head_dim};
}

// Whole 16-byte chunks at every (batch, head, token) row start of a 16-bit operand: the
// tensor-core kernels' and cuDNN's layout requirement.
inline bool strides_ok(const AttentionStrides& s) {
  return s.batch % 8 == 0 && s.head % 8 == 0 && s.token % 8 == 0;
}

struct AttentionArgs {
  int64_t batch = 0, heads = 0, q_len = 0, kv_len = 0, head_dim = 0;
  float scale = 0;  // scores are scale * q.k (usually 1/sqrt(head_dim))
  // Query i attends key j iff j <= i (top-left aligned, as torch SDPA is_causal; with
  // q_len == kv_len this is the usual lower triangle).
  bool causal = false;
  AttentionStrides q, k, v, o;
  // Backward only: strides of dO (read) and of dq, dk, dv (written).
  AttentionStrides dout, dq, dk, dv;
};

// o = softmax(scale * q k^T) v, overwritten; lse [B, H, q_len] f32 contiguous, overwritten with
// the natural log-sum-exp of each query row's scaled scores (-inf when kv_len == 0, and o = 0).
// q, k, v, o share `dtype` (bf16, f16, f32). o must not alias q, k or v.
void flash_attention_forward(const AttentionArgs& a, const void* q, const void* k, const void* v,
                             void* o, float* lse, DType dtype);

// Bytes of scratch flash_attention_backward needs (0 when there is nothing to do); the caller
// allocates it on the current device, 16-byte aligned (no initialization needed).
size_t flash_attention_backward_workspace_bytes(const AttentionArgs& a);

// dq, dk, dv (overwritten, never accumulated) from dO = d loss / d o, given the forward's o and
// lse. All tensors share `dtype`; dq/dk/dv must not alias the inputs or each other. Numerics:
// D_i = rowsum(dO * O) in f32, P recomputed from lse, dS = P * (dP - D_i); dq is accumulated
// over K/V tiles in the f32 workspace with atomics (so its low bits vary run to run), then
// scaled and converted; dk and dv are deterministic.
void flash_attention_backward(const AttentionArgs& a, const void* q, const void* k, const void* v,
                              const void* o, const void* dout, const float* lse, void* dq, void* dk,
                              void* dv, DType dtype, float* workspace);

}  // namespace loom::kernels::cuda
