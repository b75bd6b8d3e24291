// cuDNN's fused attention through the backend API (attention_cudnn.h): one SDPA forward or
// backward operation per graph, the heuristics' engine configs tried in order until one
// finalizes into an execution plan, plans cached per (direction, shape, strides, dtype, device).
#include "kernels/cuda/attention_cudnn.h"

#include <cudnn.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cuda/context.h"
#include "kernels/cuda/runtime.h"

namespace loom::kernels::cuda {

namespace {

// One backend descriptor, destroyed with its owner; made by make() below.
class Descriptor {
 public:
  explicit Descriptor(cudnnBackendDescriptor_t d) : d_(d) {}
  Descriptor(const Descriptor&) = delete;
  Descriptor& operator=(const Descriptor&) = delete;
  ~Descriptor() { cudnnBackendDestroyDescriptor(d_); }
  cudnnBackendDescriptor_t get() const { return d_; }

  // Both return whether cuDNN accepted the value / the descriptor.
  bool set(cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, int64_t count,
           const void* values) {
    return cudnnBackendSetAttribute(d_, name, type, count, values) == CUDNN_STATUS_SUCCESS;
  }
  bool set(cudnnBackendAttributeName_t name, const Descriptor& value) {
    const cudnnBackendDescriptor_t v = value.get();
    return set(name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &v);
  }
  bool finalize() { return cudnnBackendFinalize(d_) == CUDNN_STATUS_SUCCESS; }

 private:
  cudnnBackendDescriptor_t d_;
};
using DescriptorPtr = std::unique_ptr<Descriptor>;

// Null when the loaded cuDNN does not know the type (a library older than the headers).
DescriptorPtr make(cudnnBackendDescriptorType_t type) {
  cudnnBackendDescriptor_t d = nullptr;
  if (cudnnBackendCreateDescriptor(type, &d) != CUDNN_STATUS_SUCCESS) return nullptr;
  return std::make_unique<Descriptor>(d);
}

// The tensors of one graph, by unique id (the variant pack's order is the caller's).
enum Uid : int64_t { kQ = 1, kK, kV, kO, kStats, kScale, kDout, kDq, kDk, kDv };

// A [B, H, len, D] operand addressed with AttentionStrides (element strides, D contiguous), or
// the [B, H, q_len, 1] f32 statistics, or the by-value f32 scale.
DescriptorPtr tensor(Uid uid, cudnnDataType_t type, const std::vector<int64_t>& dims,
                     const std::vector<int64_t>& strides, bool by_value = false) {
  DescriptorPtr t = make(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
  if (!t) return nullptr;
  const int64_t id = uid, alignment = by_value ? 4 : 16;
  bool ok =
      t->set(CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type) &&
      t->set(CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, int64_t(dims.size()), dims.data()) &&
      t->set(CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, int64_t(strides.size()),
             strides.data()) &&
      t->set(CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &id) &&
      t->set(CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment);
  if (by_value) {
    const bool yes = true;
    ok = ok && t->set(CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &yes);
  }
  return ok && t->finalize() ? std::move(t) : nullptr;
}

DescriptorPtr operand(Uid uid, cudnnDataType_t type, const AttentionArgs& a, int64_t len,
                      const AttentionStrides& s) {
  return tensor(uid, type, {a.batch, a.heads, len, a.head_dim}, {s.batch, s.head, s.token, 1});
}

struct Plan {
  std::vector<DescriptorPtr> keep;  // everything the plan was built from
  DescriptorPtr plan;               // null: cuDNN has no engine for this key
  int64_t workspace_bytes = 0;
};

struct DeviceState {
  cudnnHandle_t handle = nullptr;
  std::map<std::vector<int64_t>, Plan> plans;
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

// The first engine config of the heuristics' list that finalizes into a plan, or none.
void build_plan(cudnnHandle_t handle, Plan& p, DescriptorPtr op) {
  DescriptorPtr graph = make(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
  const cudnnBackendDescriptor_t ops = op->get();
  if (!graph || !graph->set(CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle) ||
      !graph->set(CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &ops) ||
      !graph->finalize())
    return;
  p.keep.push_back(std::move(op));
  for (const cudnnBackendHeurMode_t mode : {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK}) {
    DescriptorPtr heuristics = make(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
    if (!heuristics || !heuristics->set(CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, *graph) ||
        !heuristics->set(CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode) ||
        !heuristics->finalize())
      continue;
    int64_t count = 0;
    if (cudnnBackendGetAttribute(heuristics->get(), CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                 CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count,
                                 nullptr) != CUDNN_STATUS_SUCCESS)
      continue;
    std::vector<DescriptorPtr> configs;
    std::vector<cudnnBackendDescriptor_t> raw;
    for (int64_t i = 0; i < count; ++i) {
      configs.push_back(make(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR));
      if (!configs.back()) return;
      raw.push_back(configs.back()->get());
    }
    if (count == 0 || cudnnBackendGetAttribute(heuristics->get(), CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                               CUDNN_TYPE_BACKEND_DESCRIPTOR, count, &count,
                                               raw.data()) != CUDNN_STATUS_SUCCESS)
      continue;
    for (int64_t i = 0; i < count; ++i) {
      DescriptorPtr plan = make(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
      if (!plan || !plan->set(CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle) ||
          !plan->set(CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, *configs[size_t(i)]) ||
          !plan->finalize())
        continue;
      int64_t got = 0;
      if (cudnnBackendGetAttribute(plan->get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                                   CUDNN_TYPE_INT64, 1, &got,
                                   &p.workspace_bytes) != CUDNN_STATUS_SUCCESS)
        continue;
      p.keep.push_back(std::move(graph));
      p.keep.push_back(std::move(configs[size_t(i)]));
      p.plan = std::move(plan);
      return;
    }
  }
}

cudnnDataType_t cudnn_type(DType t) {
  return t == DType::bf16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_HALF;
}

bool aligned(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}
bool aligned(const AttentionStrides& s) {
  return s.batch % 8 == 0 && s.head % 8 == 0 && s.token % 8 == 0;
}

// Whether the call is cuDNN's to try at all (before looking for an engine).
bool eligible(const AttentionArgs& a, DType dtype) {
  return attention_backend() == AttentionBackend::cudnn && !a.causal &&
         (dtype == DType::bf16 || dtype == DType::f16) && a.batch > 0 && a.heads > 0 &&
         a.q_len > 0 && a.kv_len > 0 && a.head_dim % 8 == 0 && aligned(a.q) && aligned(a.k) &&
         aligned(a.v) && aligned(a.o);
}

std::vector<int64_t> plan_key(bool backward, const AttentionArgs& a, DType dtype) {
  std::vector<int64_t> key = {backward, int64_t(dtype), a.batch,   a.heads,
                              a.q_len,  a.kv_len,       a.head_dim};
  std::vector<AttentionStrides> all = {a.q, a.k, a.v, a.o};
  if (backward) all.insert(all.end(), {a.dout, a.dq, a.dk, a.dv});
  for (const AttentionStrides& s : all) key.insert(key.end(), {s.batch, s.head, s.token});
  return key;
}

// Builds the forward (stats written) or backward SDPA operation of `a`.
DescriptorPtr sdpa_operation(bool backward, const AttentionArgs& a, DType dtype,
                             std::vector<DescriptorPtr>& keep) {
  const cudnnDataType_t t = cudnn_type(dtype);
  auto add = [&](DescriptorPtr d) {
    keep.push_back(std::move(d));
    return keep.back().get();
  };
  Descriptor* q = add(operand(kQ, t, a, a.q_len, a.q));
  Descriptor* k = add(operand(kK, t, a, a.kv_len, a.k));
  Descriptor* v = add(operand(kV, t, a, a.kv_len, a.v));
  Descriptor* o = add(operand(kO, t, a, a.q_len, a.o));
  Descriptor* stats = add(tensor(kStats, CUDNN_DATA_FLOAT, {a.batch, a.heads, a.q_len, 1},
                                 {a.heads * a.q_len, a.q_len, 1, 1}));
  Descriptor* scale = add(tensor(kScale, CUDNN_DATA_FLOAT, {1, 1, 1, 1}, {1, 1, 1, 1}, true));
  for (const DescriptorPtr& d : keep)
    if (!d) return nullptr;
  if (!backward) {
    DescriptorPtr op = make(CUDNN_BACKEND_OPERATION_SDPA_FWD_DESCRIPTOR);
    const bool ok = op && op->set(CUDNN_ATTR_OPERATION_SDPA_FWD_QDESC, *q) &&
                    op->set(CUDNN_ATTR_OPERATION_SDPA_FWD_KDESC, *k) &&
                    op->set(CUDNN_ATTR_OPERATION_SDPA_FWD_VDESC, *v) &&
                    op->set(CUDNN_ATTR_OPERATION_SDPA_FWD_ODESC, *o) &&
                    op->set(CUDNN_ATTR_OPERATION_SDPA_FWD_STATSDESC, *stats) &&
                    op->set(CUDNN_ATTR_OPERATION_SDPA_FWD_SCALEDESC, *scale) && op->finalize();
    return ok ? std::move(op) : nullptr;
  }
  Descriptor* dout = add(operand(kDout, t, a, a.q_len, a.dout));
  Descriptor* dq = add(operand(kDq, t, a, a.q_len, a.dq));
  Descriptor* dk = add(operand(kDk, t, a, a.kv_len, a.dk));
  Descriptor* dv = add(operand(kDv, t, a, a.kv_len, a.dv));
#if CUDNN_VERSION >= 91700
  if (!dout || !dq || !dk || !dv) return nullptr;
  DescriptorPtr op = make(CUDNN_BACKEND_OPERATION_SDPA_BWD_DESCRIPTOR);
  const bool ok = op && op->set(CUDNN_ATTR_OPERATION_SDPA_BWD_QDESC, *q) &&
                  op->set(CUDNN_ATTR_OPERATION_SDPA_BWD_KDESC, *k) &&
                  op->set(CUDNN_ATTR_OPERATION_SDPA_BWD_VDESC, *v) &&
                  op->set(CUDNN_ATTR_OPERATION_SDPA_BWD_ODESC, *o) &&
                  op->set(CUDNN_ATTR_OPERATION_SDPA_BWD_STATSDESC, *stats) &&
                  op->set(CUDNN_ATTR_OPERATION_SDPA_BWD_SCALEDESC, *scale) &&
                  op->set(CUDNN_ATTR_OPERATION_SDPA_BWD_DODDESC, *dout) &&
                  op->set(CUDNN_ATTR_OPERATION_SDPA_BWD_DQDESC, *dq) &&
                  op->set(CUDNN_ATTR_OPERATION_SDPA_BWD_DKDESC, *dk) &&
                  op->set(CUDNN_ATTR_OPERATION_SDPA_BWD_DVDESC, *dv) && op->finalize();
  return ok ? std::move(op) : nullptr;
#else
  return nullptr;  // the SDPA backward operation came with cuDNN 9.17
#endif
}

// Runs the cached (or newly built) plan of `a` on the compute stream with the given tensors;
// false when cuDNN has no engine for it.
bool run(bool backward, const AttentionArgs& a, DType dtype, const std::vector<int64_t>& uids,
         const std::vector<const void*>& pointers) {
  const int device = current_device();
  std::lock_guard<std::mutex> lock(state_mutex());
  DeviceState& s = state(device);
  const std::vector<int64_t> key = plan_key(backward, a, dtype);
  auto it = s.plans.find(key);
  if (it == s.plans.end()) {
    Plan p;
    if (DescriptorPtr op = sdpa_operation(backward, a, dtype, p.keep))
      build_plan(s.handle, p, std::move(op));
    it = s.plans.emplace(key, std::move(p)).first;
  }
  const Plan& p = it->second;
  if (!p.plan) return false;

  const float scale = a.scale;
  std::vector<void*> data;
  for (const void* ptr : pointers) data.push_back(const_cast<void*>(ptr));
  std::vector<int64_t> ids = uids;
  ids.push_back(kScale);
  data.push_back(const_cast<float*>(&scale));
  void* workspace =
      p.workspace_bytes > 0 ? device_malloc(size_t(p.workspace_bytes), device) : nullptr;
  DescriptorPtr pack = make(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
  cudnnStatus_t status = CUDNN_STATUS_BAD_PARAM;
  if (pack &&
      pack->set(CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, int64_t(ids.size()),
                ids.data()) &&
      pack->set(CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, int64_t(data.size()),
                data.data()) &&
      pack->set(CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &workspace) &&
      pack->finalize() && cudnnSetStream(s.handle, compute_stream()) == CUDNN_STATUS_SUCCESS)
    status = cudnnBackendExecute(s.handle, p.plan->get(), pack->get());
  // The allocator reuses blocks in compute-stream order, so the workspace may go back now.
  if (workspace) device_free(workspace, device);
  if (status != CUDNN_STATUS_SUCCESS)
    throw std::runtime_error(std::string("[cudnn] attention ") +
                             (backward ? "backward" : "forward") + ": " +
                             cudnnGetErrorString(status));
  return true;
}

}  // namespace

bool cudnn_attention_has_backward() {
  return CUDNN_VERSION >= 91700 && cudnnGetVersion() >= 91700;
}

bool cudnn_attention_forward(const AttentionArgs& a, const void* q, const void* k, const void* v,
                             void* o, float* lse, DType dtype) {
  if (!eligible(a, dtype) || !aligned(q) || !aligned(k) || !aligned(v) || !aligned(o) ||
      !aligned(lse))
    return false;
  return run(false, a, dtype, {kQ, kK, kV, kO, kStats}, {q, k, v, o, lse});
}

bool cudnn_attention_backward(const AttentionArgs& a, const void* q, const void* k, const void* v,
                              const void* o, const void* dout, const float* lse, void* dq, void* dk,
                              void* dv, DType dtype) {
  if (!eligible(a, dtype) || !aligned(a.dout) || !aligned(a.dq) || !aligned(a.dk) || !aligned(a.dv))
    return false;
  for (const void* p :
       {q, k, v, o, dout, static_cast<const void*>(lse), static_cast<const void*>(dq),
        static_cast<const void*>(dk), static_cast<const void*>(dv)})
    if (!aligned(p)) return false;
  return run(true, a, dtype, {kQ, kK, kV, kO, kDout, kStats, kDq, kDk, kDv},
             {q, k, v, o, dout, lse, dq, dk, dv});
}

}  // namespace loom::kernels::cuda
