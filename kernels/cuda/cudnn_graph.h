#pragma once
// A small builder over cuDNN's backend API for kernels that hand cuDNN a whole operation graph
// (attention_cudnn.cpp): tensors and operations are added to a Graph, which owns every descriptor,
// then planned once (the heuristics' engine configs, mode A then fallback, tried in order until
// one finalizes) and executed any number of times with a variant pack of (uid, pointer) pairs.
//
// Nothing here throws for a graph cuDNN does not take: every builder returns null and marks the
// graph failed (ok() false, plan() false) when cuDNN refuses a descriptor, including descriptor
// types the loaded library does not know, so callers fall back instead. CUDA builds with cuDNN.
#include <cudnn.h>

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <utility>
#include <vector>

namespace loom::kernels::cuda {

class CudnnGraph {
 public:
  class Descriptor;  // one backend descriptor, owned by the graph

  struct TensorSpec {
    int64_t uid = 0;
    cudnnDataType_t type = CUDNN_DATA_FLOAT;
    std::vector<int64_t> dims, strides;
    bool is_virtual = false;
    bool by_value = false;  // a host scalar passed in the variant pack (f32 [1, 1, 1, 1])
  };

  CudnnGraph();
  ~CudnnGraph();
  CudnnGraph(const CudnnGraph&) = delete;
  CudnnGraph& operator=(const CudnnGraph&) = delete;

  struct PointwiseOptions {
    cudnnDataType_t precision = CUDNN_DATA_FLOAT;  // the math type (BOOLEAN for comparisons)
    int64_t axis = -1;                             // GEN_INDEX: the dim whose index is written
    Descriptor* select = nullptr;                  // BINARY_SELECT: the condition tensor
  };

  Descriptor* tensor(const TensorSpec& spec);
  // y = x <mode> b (b null for unary modes), math in f32 unless the options say otherwise.
  void pointwise(cudnnPointwiseMode_t mode, Descriptor* x, Descriptor* b, Descriptor* y);
  void pointwise(cudnnPointwiseMode_t mode, Descriptor* x, Descriptor* b, Descriptor* y,
                 const PointwiseOptions& options);
  // c = a b over the last two dims (batched over the leading ones); f32 accumulation.
  void matmul(Descriptor* a, Descriptor* b, Descriptor* c);
  // y = x reduced (sum, max, ...) over the dims where y has extent 1; f32.
  void reduce(cudnnReduceTensorOp_t op, Descriptor* x, Descriptor* y);
  // y = x with y's dims and strides (how the graph transposes a virtual tensor).
  void reshape(Descriptor* x, Descriptor* y);
  // Any other operation of `type` whose attributes are all descriptors.
  void operation(cudnnBackendDescriptorType_t type,
                 std::initializer_list<std::pair<cudnnBackendAttributeName_t, Descriptor*>> attrs);

  bool ok() const { return ok_; }
  // Finalizes the operation graph and picks an execution plan; false when cuDNN has no engine.
  bool plan(cudnnHandle_t handle);
  int64_t workspace_bytes() const { return workspace_bytes_; }
  // Runs the plan (plan() returned true) on the handle's stream.
  cudnnStatus_t execute(cudnnHandle_t handle, const std::vector<int64_t>& uids,
                        const std::vector<void*>& pointers, void* workspace) const;

 private:
  Descriptor* make(cudnnBackendDescriptorType_t type);  // null (graph failed) when refused
  Descriptor* finalized(Descriptor* d);                 // d, or null when it does not finalize

  std::vector<std::unique_ptr<Descriptor>> owned_;
  std::vector<Descriptor*> ops_;
  Descriptor* plan_ = nullptr;
  int64_t workspace_bytes_ = 0;
  bool ok_ = true;
};

}  // namespace loom::kernels::cuda
