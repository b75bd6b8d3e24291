#include "kernels/cuda/cudnn_graph.h"

namespace loom::kernels::cuda {

class CudnnGraph::Descriptor {
 public:
  explicit Descriptor(cudnnBackendDescriptor_t d) : d_(d) {}
  Descriptor(const Descriptor&) = delete;
  Descriptor& operator=(const Descriptor&) = delete;
  ~Descriptor() { cudnnBackendDestroyDescriptor(d_); }
  cudnnBackendDescriptor_t get() const { return d_; }
  bool set(cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, int64_t count,
           const void* values) {
    return cudnnBackendSetAttribute(d_, name, type, count, values) == CUDNN_STATUS_SUCCESS;
  }
  bool set(cudnnBackendAttributeName_t name, const Descriptor* value) {
    const cudnnBackendDescriptor_t v = value->get();
    return set(name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &v);
  }

 private:
  cudnnBackendDescriptor_t d_;
};

CudnnGraph::CudnnGraph() = default;
CudnnGraph::~CudnnGraph() = default;

CudnnGraph::Descriptor* CudnnGraph::make(cudnnBackendDescriptorType_t type) {
  cudnnBackendDescriptor_t d = nullptr;
  if (!ok_ || cudnnBackendCreateDescriptor(type, &d) != CUDNN_STATUS_SUCCESS) {
    ok_ = false;
    return nullptr;
  }
  owned_.push_back(std::make_unique<Descriptor>(d));
  return owned_.back().get();
}

CudnnGraph::Descriptor* CudnnGraph::finalized(Descriptor* d) {
  if (ok_ && d && cudnnBackendFinalize(d->get()) == CUDNN_STATUS_SUCCESS) return d;
  ok_ = false;
  return nullptr;
}

CudnnGraph::Descriptor* CudnnGraph::tensor(const TensorSpec& s) {
  Descriptor* t = make(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
  if (!t) return nullptr;
  const int64_t alignment = s.by_value ? 4 : 16;
  const bool yes = true;
  bool set = t->set(CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &s.type) &&
             t->set(CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, int64_t(s.dims.size()),
                    s.dims.data()) &&
             t->set(CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, int64_t(s.strides.size()),
                    s.strides.data()) &&
             t->set(CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &s.uid) &&
             t->set(CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment);
  if (s.is_virtual) set = set && t->set(CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &yes);
  if (s.by_value) set = set && t->set(CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &yes);
  ok_ = ok_ && set;
  return finalized(t);
}

void CudnnGraph::pointwise(cudnnPointwiseMode_t mode, Descriptor* x, Descriptor* b, Descriptor* y) {
  pointwise(mode, x, b, y, PointwiseOptions{});
}

void CudnnGraph::pointwise(cudnnPointwiseMode_t mode, Descriptor* x, Descriptor* b, Descriptor* y,
                           const PointwiseOptions& options) {
  Descriptor* desc = make(CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
  ok_ = ok_ && desc->set(CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode) &&
        desc->set(CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &options.precision) &&
        (options.axis < 0 ||
         desc->set(CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, 1, &options.axis));
  if (!finalized(desc)) return;
  Descriptor* op = make(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
  const float one = 1.f;
  ok_ = ok_ && x && y && op->set(CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, desc) &&
        op->set(CUDNN_ATTR_OPERATION_POINTWISE_XDESC, x) &&
        op->set(CUDNN_ATTR_OPERATION_POINTWISE_YDESC, y) &&
        (!b || op->set(CUDNN_ATTR_OPERATION_POINTWISE_BDESC, b)) &&
        (!options.select || op->set(CUDNN_ATTR_OPERATION_POINTWISE_TDESC, options.select)) &&
        op->set(CUDNN_ATTR_OPERATION_POINTWISE_ALPHA1, CUDNN_TYPE_FLOAT, 1, &one) &&
        op->set(CUDNN_ATTR_OPERATION_POINTWISE_ALPHA2, CUDNN_TYPE_FLOAT, 1, &one);
  if (finalized(op)) ops_.push_back(op);
}

void CudnnGraph::matmul(Descriptor* a, Descriptor* b, Descriptor* c) {
  Descriptor* desc = make(CUDNN_BACKEND_MATMUL_DESCRIPTOR);
  const cudnnDataType_t compute = CUDNN_DATA_FLOAT;
  const double padding = 0.0;
  ok_ = ok_ && desc->set(CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &compute) &&
        desc->set(CUDNN_ATTR_MATMUL_PADDING_VALUE, CUDNN_TYPE_DOUBLE, 1, &padding);
  if (!finalized(desc)) return;
  operation(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR, {{CUDNN_ATTR_OPERATION_MATMUL_ADESC, a},
                                                        {CUDNN_ATTR_OPERATION_MATMUL_BDESC, b},
                                                        {CUDNN_ATTR_OPERATION_MATMUL_CDESC, c},
                                                        {CUDNN_ATTR_OPERATION_MATMUL_DESC, desc}});
}

void CudnnGraph::reduce(cudnnReduceTensorOp_t op, Descriptor* x, Descriptor* y) {
  Descriptor* desc = make(CUDNN_BACKEND_REDUCTION_DESCRIPTOR);
  const cudnnDataType_t compute = CUDNN_DATA_FLOAT;
  ok_ = ok_ &&
        desc->set(CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &op) &&
        desc->set(CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &compute);
  if (!finalized(desc)) return;
  operation(CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR,
            {{CUDNN_ATTR_OPERATION_REDUCTION_XDESC, x},
             {CUDNN_ATTR_OPERATION_REDUCTION_YDESC, y},
             {CUDNN_ATTR_OPERATION_REDUCTION_DESC, desc}});
}

void CudnnGraph::reshape(Descriptor* x, Descriptor* y) {
  operation(CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR,
            {{CUDNN_ATTR_OPERATION_RESHAPE_XDESC, x}, {CUDNN_ATTR_OPERATION_RESHAPE_YDESC, y}});
}

void CudnnGraph::operation(
    cudnnBackendDescriptorType_t type,
    std::initializer_list<std::pair<cudnnBackendAttributeName_t, Descriptor*>> attrs) {
  Descriptor* op = make(type);
  for (const auto& [name, value] : attrs) ok_ = ok_ && value && op->set(name, value);
  if (finalized(op)) ops_.push_back(op);
}

bool CudnnGraph::plan(cudnnHandle_t handle) {
  Descriptor* graph = make(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
  std::vector<cudnnBackendDescriptor_t> ops;
  for (const Descriptor* op : ops_) ops.push_back(op->get());
  ok_ = ok_ && graph->set(CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle) &&
        graph->set(CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                   int64_t(ops.size()), ops.data());
  if (!finalized(graph)) return false;
  for (const cudnnBackendHeurMode_t mode : {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK}) {
    // Heuristics and candidate configs are tried without failing the graph.
    cudnnBackendDescriptor_t heuristics = nullptr;
    if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, &heuristics) !=
        CUDNN_STATUS_SUCCESS)
      continue;
    owned_.push_back(std::make_unique<Descriptor>(heuristics));
    Descriptor* h = owned_.back().get();
    int64_t count = 0;
    if (!h->set(CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, graph) ||
        !h->set(CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode) ||
        cudnnBackendFinalize(heuristics) != CUDNN_STATUS_SUCCESS ||
        cudnnBackendGetAttribute(heuristics, CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                 CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count,
                                 nullptr) != CUDNN_STATUS_SUCCESS ||
        count == 0)
      continue;
    std::vector<cudnnBackendDescriptor_t> configs;
    for (int64_t i = 0; i < count; ++i) {
      Descriptor* config = make(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
      if (!config) return false;
      configs.push_back(config->get());
    }
    if (cudnnBackendGetAttribute(heuristics, CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                 CUDNN_TYPE_BACKEND_DESCRIPTOR, count, &count,
                                 configs.data()) != CUDNN_STATUS_SUCCESS)
      continue;
    for (int64_t i = 0; i < count; ++i) {
      Descriptor* plan = make(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
      if (!plan) return false;
      int64_t got = 0;
      if (plan->set(CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle) &&
          plan->set(CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                    &configs[size_t(i)]) &&
          cudnnBackendFinalize(plan->get()) == CUDNN_STATUS_SUCCESS &&
          cudnnBackendGetAttribute(plan->get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                                   CUDNN_TYPE_INT64, 1, &got,
                                   &workspace_bytes_) == CUDNN_STATUS_SUCCESS) {
        plan_ = plan;
        return true;
      }
    }
  }
  return false;
}

cudnnStatus_t CudnnGraph::execute(cudnnHandle_t handle, const std::vector<int64_t>& uids,
                                  const std::vector<void*>& pointers, void* workspace) const {
  cudnnBackendDescriptor_t raw = nullptr;
  cudnnStatus_t status = cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &raw);
  if (status != CUDNN_STATUS_SUCCESS) return status;
  Descriptor pack(raw);
  if (!pack.set(CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, int64_t(uids.size()),
                uids.data()) ||
      !pack.set(CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR,
                int64_t(pointers.size()), pointers.data()) ||
      !pack.set(CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &workspace))
    return CUDNN_STATUS_BAD_PARAM;
  status = cudnnBackendFinalize(raw);
  return status == CUDNN_STATUS_SUCCESS ? cudnnBackendExecute(handle, plan_->get(), raw) : status;
}

}  // namespace loom::kernels::cuda
