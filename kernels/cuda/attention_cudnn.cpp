// cuDNN's fused attention (attention_cudnn.h) as backend-API graphs (cudnn_graph.h), in the forms
// cuDNN's fused Hopper engines match (the ones cudnn-frontend builds for cuDNN 9.19):
//   forward, no mask: cuDNN's single SDPA forward operation, statistics written;
//   forward, causal:  the composite graph S = scale Q K^T, masked, then max, exp, sum; lse =
//                     max + log(sum); O = (exp / sum) V (the SDPA operation has no causal
//                     attribute before cuDNN 9.21);
//   backward:         the composite graph D_i = rowsum(dO * O); P = exp(scale Q K^T [masked] -
//                     lse); dV = P^T dO; dS = scale * P * (dO V^T - D_i); dK = dS^T Q; dQ = dS K.
//                     The row sums and an f32 dQ accumulator are graph tensors that live in the
//                     workspace, ahead of cuDNN's own (no zeroing needed from cuDNN 9.6 on).
// The causal mask (top-left: query i sees key j <= i) is row index >= column index, selecting the
// scores or -inf. Plans are cached per (direction, mask, shape, strides, dtype, device); a key
// cuDNN has no engine for is cached as declined. (The SDPA backward *operation* of cuDNN 9.17+
// offers no engine on Hopper in 9.19, hence the composite backward.)
#include "kernels/cuda/attention_cudnn.h"

#include <cudnn.h>

#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cuda/context.h"
#include "kernels/cuda/cudnn_graph.h"
#include "kernels/cuda/runtime.h"

namespace loom::kernels::cuda {

namespace {

using Tensor = CudnnGraph::Descriptor*;
using Spec = CudnnGraph::TensorSpec;

// Unique ids of the graphs' tensors: the caller's, the scalars, the workspace-resident ones, and
// the virtual intermediates.
enum Uid : int64_t {
  kQ = 1,
  kK,
  kV,
  kO,
  kStats,
  kScale,
  kDout,
  kDq,
  kDk,
  kDv,
  kOne,
  kNegInf,
  kRowSum,
  kDqAccum,
  kVirtual = 100,
};

// A graph tensor that lives in the workspace, ahead of cuDNN's own part.
struct Scratch {
  int64_t uid, bytes;
};

struct Entry {
  CudnnGraph graph;
  bool planned = false;  // false: cuDNN declines this key
  std::vector<Scratch> scratch;
  std::vector<int64_t> scalars;  // the by-value scalars the graph reads (kScale, kOne, kNegInf)
};

struct DeviceState {
  cudnnHandle_t handle = nullptr;
  std::map<std::vector<int64_t>, std::unique_ptr<Entry>> plans;
};

std::mutex& state_mutex() {
  static std::mutex m;
  return m;
}

DeviceState& state(int device) {  // called with state_mutex() held
  static std::map<int, DeviceState> states;
  DeviceState& s = states[device];
  if (!s.handle && cudnnCreate(&s.handle) != CUDNN_STATUS_SUCCESS)
    throw std::runtime_error("[cudnn] attention: cudnnCreate failed on device " +
                             std::to_string(device));
  return s;
}

int64_t round_up(int64_t bytes) {
  return (bytes + 255) / 256 * 256;
}

// Whether the call is cuDNN's to try at all (before looking for an engine).
bool eligible(const AttentionArgs& a, DType dtype) {
  return attention_backend() == AttentionBackend::cudnn &&
         (dtype == DType::bf16 || dtype == DType::f16) && a.batch > 0 && a.heads > 0 &&
         a.q_len > 0 && a.kv_len > 0 && a.head_dim % 8 == 0 && strides_ok(a.q) && strides_ok(a.k) &&
         strides_ok(a.v) && strides_ok(a.o);
}

std::vector<int64_t> plan_key(bool backward, const AttentionArgs& a, DType dtype) {
  std::vector<int64_t> key = {backward, a.causal, int64_t(dtype), a.batch,
                              a.heads,  a.q_len,  a.kv_len,       a.head_dim};
  std::vector<AttentionStrides> all = {a.q, a.k, a.v, a.o};
  if (backward) all.insert(all.end(), {a.dout, a.dq, a.dk, a.dv});
  for (const AttentionStrides& s : all) key.insert(key.end(), {s.batch, s.head, s.token});
  return key;
}

// The shapes of one call, as the graph builders name them.
struct Shapes {
  const AttentionArgs& a;
  cudnnDataType_t io;  // bf16 or f16

  // A [B, H, len, D] operand of the caller (element strides, D contiguous).
  Spec operand(Uid uid, int64_t len, const AttentionStrides& s) const {
    return {uid, io, {a.batch, a.heads, len, a.head_dim}, {s.batch, s.head, s.token, 1}};
  }
  // The same memory seen as [B, H, D, len] (the operand transposed, by strides).
  Spec transposed(Uid uid, int64_t len, const AttentionStrides& s) const {
    return {uid, io, {a.batch, a.heads, a.head_dim, len}, {s.batch, s.head, 1, s.token}};
  }
  // [B, H, q_len, 1] f32, packed: the statistics and the row sums.
  Spec rows(int64_t uid, bool is_virtual = false) const {
    return {uid,
            CUDNN_DATA_FLOAT,
            {a.batch, a.heads, a.q_len, 1},
            {a.heads * a.q_len, a.q_len, 1, 1},
            is_virtual};
  }
  // A virtual f32 [B, H, q_len, kv_len] score-shaped intermediate, packed.
  Spec scores(int64_t uid) const {
    const int64_t n = a.q_len * a.kv_len;
    return {uid,
            CUDNN_DATA_FLOAT,
            {a.batch, a.heads, a.q_len, a.kv_len},
            {a.heads * n, n, a.kv_len, 1},
            true};
  }
  // A virtual [B, H, kv_len, q_len] view of a scores-shaped tensor, in the io type.
  Spec scores_transposed(int64_t uid) const {
    const int64_t n = a.q_len * a.kv_len;
    return {uid, io, {a.batch, a.heads, a.kv_len, a.q_len}, {a.heads * n, n, 1, a.kv_len}, true};
  }
  static Spec scalar(Uid uid) {
    return {uid, CUDNN_DATA_FLOAT, {1, 1, 1, 1}, {1, 1, 1, 1}, false, true};
  }
};

// Adds tensors and operations to one entry's graph; virtual tensors get fresh ids.
struct Builder {
  Entry& e;
  const Shapes& s;
  int64_t next = kVirtual;

  CudnnGraph& g() { return e.graph; }
  Tensor caller(Uid uid, int64_t len, const AttentionStrides& st) {
    return g().tensor(s.operand(uid, len, st));
  }
  Tensor scalar(Uid uid) {
    e.scalars.push_back(uid);
    return g().tensor(Shapes::scalar(uid));
  }
  // A virtual scores-shaped tensor, f32 unless `type` says otherwise.
  Tensor scores(cudnnDataType_t type = CUDNN_DATA_FLOAT) {
    Spec spec = s.scores(next++);
    spec.type = type;
    return g().tensor(spec);
  }
  Tensor rows() { return g().tensor(s.rows(next++, true)); }
  // A virtual f32 tensor shaped and strided like a [B, H, len, D] operand.
  Tensor operand_f32(int64_t len, const AttentionStrides& st) {
    Spec spec = s.operand(Uid(next++), len, st);
    spec.type = CUDNN_DATA_FLOAT;
    spec.is_virtual = true;
    return g().tensor(spec);
  }

  // Masked entries of `x` (key after query, top-left) become -inf.
  Tensor causal_mask(Tensor x) {
    const Tensor row = scores(CUDNN_DATA_INT32), col = scores(CUDNN_DATA_INT32),
                 keep = scores(CUDNN_DATA_BOOLEAN), y = scores();
    g().pointwise(CUDNN_POINTWISE_GEN_INDEX, x, nullptr, row, {.axis = 2});
    g().pointwise(CUDNN_POINTWISE_GEN_INDEX, x, nullptr, col, {.axis = 3});
    g().pointwise(CUDNN_POINTWISE_CMP_GE, row, col, keep, {.precision = CUDNN_DATA_BOOLEAN});
    g().pointwise(CUDNN_POINTWISE_BINARY_SELECT, x, scalar(kNegInf), y, {.select = keep});
    return y;
  }
  // scale * Q K^T (K given as its [B, H, D, kv_len] view), masked when causal.
  Tensor scaled_scores(Tensor q, Tensor k_t, Tensor scale) {
    const Tensor qk = scores(), scaled = scores();
    g().matmul(q, k_t, qk);
    g().pointwise(CUDNN_POINTWISE_MUL, qk, scale, scaled);
    return scaled;
  }
};

void build_forward(Entry& e, const Shapes& s) {
  const AttentionArgs& a = s.a;
  Builder b{e, s};
  CudnnGraph& g = e.graph;
  const Tensor q = b.caller(kQ, a.q_len, a.q), v = b.caller(kV, a.kv_len, a.v),
               o = b.caller(kO, a.q_len, a.o), stats = g.tensor(s.rows(kStats)),
               scale = b.scalar(kScale);
  if (!a.causal) {
    g.operation(CUDNN_BACKEND_OPERATION_SDPA_FWD_DESCRIPTOR,
                {{CUDNN_ATTR_OPERATION_SDPA_FWD_QDESC, q},
                 {CUDNN_ATTR_OPERATION_SDPA_FWD_KDESC, b.caller(kK, a.kv_len, a.k)},
                 {CUDNN_ATTR_OPERATION_SDPA_FWD_VDESC, v},
                 {CUDNN_ATTR_OPERATION_SDPA_FWD_ODESC, o},
                 {CUDNN_ATTR_OPERATION_SDPA_FWD_STATSDESC, stats},
                 {CUDNN_ATTR_OPERATION_SDPA_FWD_SCALEDESC, scale}});
    return;
  }
  const Tensor k_t = g.tensor(s.transposed(kK, a.kv_len, a.k));
  const Tensor x = b.causal_mask(b.scaled_scores(q, k_t, scale));
  // lse = max + log(sum(exp(x - max))); O = (exp(x - max) / sum) V.
  const Tensor max = b.rows(), shifted = b.scores(), e_x = b.scores(), sum = b.rows(),
               log_sum = b.rows(), p = b.scores(s.io);
  g.reduce(CUDNN_REDUCE_TENSOR_MAX, x, max);
  g.pointwise(CUDNN_POINTWISE_SUB, x, max, shifted);
  g.pointwise(CUDNN_POINTWISE_EXP, shifted, nullptr, e_x);
  g.reduce(CUDNN_REDUCE_TENSOR_ADD, e_x, sum);
  g.pointwise(CUDNN_POINTWISE_LOG, sum, nullptr, log_sum);
  g.pointwise(CUDNN_POINTWISE_ADD, max, log_sum, stats);
  g.pointwise(CUDNN_POINTWISE_DIV, e_x, sum, p);
  g.matmul(p, v, o);
}

void build_backward(Entry& e, const Shapes& s) {
  const AttentionArgs& a = s.a;
  Builder b{e, s};
  CudnnGraph& g = e.graph;
  const Tensor q = b.caller(kQ, a.q_len, a.q), k_t = g.tensor(s.transposed(kK, a.kv_len, a.k)),
               v_t = g.tensor(s.transposed(kV, a.kv_len, a.v)), o = b.caller(kO, a.q_len, a.o),
               dout = b.caller(kDout, a.q_len, a.dout), stats = g.tensor(s.rows(kStats)),
               scale = b.scalar(kScale), one = b.scalar(kOne), dq = b.caller(kDq, a.q_len, a.dq),
               dk = b.caller(kDk, a.kv_len, a.dk), dv = b.caller(kDv, a.kv_len, a.dv);
  // D_i = rowsum(dO * O), written to the workspace by the graph itself.
  const Tensor dout_o = b.operand_f32(a.q_len, a.dout), row_sum_virtual = b.rows(),
               row_sum = g.tensor(s.rows(kRowSum));
  g.pointwise(CUDNN_POINTWISE_MUL, dout, o, dout_o);
  g.reduce(CUDNN_REDUCE_TENSOR_ADD, dout_o, row_sum_virtual);
  g.pointwise(CUDNN_POINTWISE_MUL, row_sum_virtual, one, row_sum);
  // P = exp(scale * Q K^T - lse), masked entries 0; dV = P^T dO.
  Tensor shifted = b.scores();
  g.pointwise(CUDNN_POINTWISE_SUB, b.scaled_scores(q, k_t, scale), stats, shifted);
  if (a.causal) shifted = b.causal_mask(shifted);
  const Tensor p = b.scores();
  g.pointwise(CUDNN_POINTWISE_EXP, shifted, nullptr, p);
  const Tensor p_t = g.tensor(s.scores_transposed(b.next++));
  g.reshape(p, p_t);
  g.matmul(p_t, dout, dv);
  // dS = scale * P * (dO V^T - D_i); dK = dS^T Q; dQ = dS K (accumulated in f32, then cast).
  const Tensor dp = b.scores(), centered = b.scores(), ds_unscaled = b.scores(), ds = b.scores();
  g.matmul(dout, v_t, dp);
  g.pointwise(CUDNN_POINTWISE_SUB, dp, row_sum, centered);
  g.pointwise(CUDNN_POINTWISE_MUL, centered, p, ds_unscaled);
  g.pointwise(CUDNN_POINTWISE_MUL, ds_unscaled, scale, ds);
  const Tensor ds_t = g.tensor(s.scores_transposed(b.next++));
  g.reshape(ds, ds_t);
  g.matmul(ds_t, q, dk);
  const Tensor k = b.operand_f32(a.kv_len, a.k);
  g.reshape(k_t, k);
  const int64_t accum_elems = a.batch * a.heads * a.q_len * a.head_dim;
  const Tensor dq_accum =
      g.tensor({kDqAccum,
                CUDNN_DATA_FLOAT,
                {a.batch, a.heads, a.q_len, a.head_dim},
                {a.heads * a.q_len * a.head_dim, a.q_len * a.head_dim, a.head_dim, 1}});
  g.matmul(ds, k, dq_accum);
  g.pointwise(CUDNN_POINTWISE_IDENTITY, dq_accum, nullptr, dq);
  e.scratch = {{kDqAccum, 4 * accum_elems}, {kRowSum, 4 * a.batch * a.heads * a.q_len}};
}

// Runs the cached (or newly built) plan of `a` on the compute stream with the caller's tensors;
// false when cuDNN has no engine for it.
bool run(bool backward, const AttentionArgs& a, DType dtype, std::vector<int64_t> uids,
         std::vector<void*> pointers) {
  const int device = current_device();
  std::lock_guard<std::mutex> lock(state_mutex());
  DeviceState& s = state(device);
  std::unique_ptr<Entry>& e = s.plans[plan_key(backward, a, dtype)];
  if (!e) {
    e = std::make_unique<Entry>();
    const Shapes shapes{a, dtype == DType::bf16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_HALF};
    backward ? build_backward(*e, shapes) : build_forward(*e, shapes);
    e->planned = e->graph.ok() && e->graph.plan(s.handle);
  }
  if (!e->planned) return false;

  int64_t scratch_bytes = 0;
  for (const Scratch& t : e->scratch) scratch_bytes += round_up(t.bytes);
  const int64_t total = scratch_bytes + e->graph.workspace_bytes();
  char* workspace = total > 0 ? static_cast<char*>(device_malloc(size_t(total), device)) : nullptr;
  int64_t offset = 0;
  for (const Scratch& t : e->scratch) {
    uids.push_back(t.uid);
    pointers.push_back(workspace + offset);
    offset += round_up(t.bytes);
  }
  float scale = a.scale, one = 1.f, neg_inf = -std::numeric_limits<float>::infinity();
  for (const int64_t uid : e->scalars) {
    uids.push_back(uid);
    pointers.push_back(uid == kScale ? &scale : uid == kOne ? &one : &neg_inf);
  }
  cudnnStatus_t status = cudnnSetStream(s.handle, compute_stream());
  if (status == CUDNN_STATUS_SUCCESS)
    status = e->graph.execute(s.handle, uids, pointers,
                              e->graph.workspace_bytes() > 0 ? workspace + scratch_bytes : nullptr);
  // The allocator reuses blocks in compute-stream order, so the workspace may go back now.
  if (workspace) device_free(workspace, device);
  if (status != CUDNN_STATUS_SUCCESS)
    throw std::runtime_error(std::string("[cudnn] attention ") +
                             (backward ? "backward" : "forward") + ": " +
                             cudnnGetErrorString(status));
  return true;
}

}  // namespace

bool cudnn_attention_forward(const AttentionArgs& a, const void* q, const void* k, const void* v,
                             void* o, float* lse, DType dtype) {
  if (!eligible(a, dtype) || !aligned16(q) || !aligned16(k) || !aligned16(v) || !aligned16(o) ||
      !aligned16(lse))
    return false;
  return run(false, a, dtype, {kQ, kK, kV, kO, kStats},
             {const_cast<void*>(q), const_cast<void*>(k), const_cast<void*>(v), o, lse});
}

bool cudnn_attention_backward(const AttentionArgs& a, const void* q, const void* k, const void* v,
                              const void* o, const void* dout, const float* lse, void* dq, void* dk,
                              void* dv, DType dtype) {
  if (!eligible(a, dtype) || !strides_ok(a.dout) || !strides_ok(a.dq) || !strides_ok(a.dk) ||
      !strides_ok(a.dv))
    return false;
  const std::vector<void*> pointers = {const_cast<void*>(q),
                                       const_cast<void*>(k),
                                       const_cast<void*>(v),
                                       const_cast<void*>(o),
                                       const_cast<void*>(dout),
                                       const_cast<float*>(lse),
                                       dq,
                                       dk,
                                       dv};
  for (const void* p : pointers)
    if (!aligned16(p)) return false;
  return run(true, a, dtype, {kQ, kK, kV, kO, kDout, kStats, kDq, kDk, kDv}, pointers);
}

}  // namespace loom::kernels::cuda
