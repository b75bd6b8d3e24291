#pragma once
// cuDNN's fused attention as the other implementation of kernels/cuda/attention.h's two entries:
// same arguments, same numerics contract (o = softmax(scale * q k^T) v; lse [B, H, q_len] f32, the
// natural log-sum-exp of each row's scaled scores), built as cuDNN backend-API graphs (the SDPA
// forward operation; the composite backward graph its fused engines match), no cudnn-frontend.
// Needs a cuDNN with the SDPA forward operation (9.1x); plain C++ like
// attention.h; attention_cudnn.cpp implements it when cuDNN is found at configure time,
// attention_cudnn_stub.cpp (every call declines) otherwise.
//
// Why both: on the H200 cuDNN's Hopper kernels (wgmma, TMA) run the bf16 forward and backward
// faster than loom's mma.sync kernels (docs/PERFORMANCE.md, "Attention"); loom's kernels serve
// everything cuDNN declines.
//
// Each entry returns false, having done nothing, when cuDNN does not serve the call: the backend
// is "loom" (attention_backend below), f32, an empty dimension, a stride that is
// not a multiple of 8 elements or a pointer not 16-byte aligned, or no cuDNN engine for the shape
// (probed once per direction, mask, shape, layout and dtype; the plan or the refusal is cached,
// so building it, which may compile cuDNN's kernel at runtime, happens once). It returns true
// when the work is enqueued on compute_stream(); a cuDNN failure after that point throws
// std::runtime_error "[cudnn] attention ...". The backward needs no workspace from the caller:
// cuDNN's comes from the caching allocator. Its dq, dk, dv are overwritten (never accumulated);
// cuDNN's dq is summed over key tiles with atomics, so its low bits vary run to run like loom's.
#include "kernels/cuda/attention.h"

namespace loom::kernels::cuda {

enum class AttentionBackend { cudnn, loom };
// Which implementation serves the calls both can: `cudnn` by default, or the value of the
// environment variable LOOM_ATTENTION ("cudnn" or "loom"; anything else throws
// std::invalid_argument naming the variable) read at first use; set_attention_backend overrides.
AttentionBackend attention_backend();
void set_attention_backend(AttentionBackend backend);

bool cudnn_attention_forward(const AttentionArgs& a, const void* q, const void* k, const void* v,
                             void* o, float* lse, DType dtype);
bool cudnn_attention_backward(const AttentionArgs& a, const void* q, const void* k, const void* v,
                              const void* o, const void* dout, const float* lse, void* dq, void* dk,
                              void* dv, DType dtype);

}  // namespace loom::kernels::cuda
