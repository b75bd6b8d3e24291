// CUDA builds: devices, copies and synchronization of runtime.h, and the compute streams of
// context.h. Memory is in allocator.cpp.
#include "kernels/cuda/runtime.h"

#include <cuda_runtime.h>

#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cuda/check.h"
#include "kernels/cuda/context.h"
#include "kernels/cuda/index_fault.h"

namespace loom::kernels::cuda {

bool built_with_cuda() {
  return true;
}

int device_count() {
  static const int n = [] {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess) {
      cudaGetLastError();  // clear the sticky "no device" error
      return 0;
    }
    return count;
  }();
  return n;
}

int current_device() {
  int d = 0;
  LOOM_CUDA_CHECK(cudaGetDevice(&d));
  return d;
}

cudaStream_t compute_stream() {
  static std::mutex mutex;
  static std::vector<cudaStream_t> streams;
  const int d = current_device();
  std::lock_guard<std::mutex> lock(mutex);
  if (streams.empty()) streams.assign(size_t(device_count() > 0 ? device_count() : 1), nullptr);
  cudaStream_t& s = streams.at(size_t(d));
  if (!s) LOOM_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  return s;
}

void check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("[cuda] ") + what + ": " + cudaGetErrorString(err));
}

void memcpy_any(void* dst, bool dst_is_device, const void* src, bool src_is_device, size_t nbytes) {
  const cudaMemcpyKind kind =
      dst_is_device ? (src_is_device ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
                    : (src_is_device ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
  cudaStream_t s = compute_stream();
  LOOM_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, kind, s));
  // Device-to-device copies stay ordered on the stream; anything touching host memory must be
  // complete before the host reads the result or frees the source.
  if (!(dst_is_device && src_is_device)) {
    LOOM_CUDA_CHECK(cudaStreamSynchronize(s));
    raise_index_fault();
  }
}

void synchronize(int device) {
  LOOM_CUDA_CHECK(cudaSetDevice(device));
  LOOM_CUDA_CHECK(cudaStreamSynchronize(compute_stream()));
  raise_index_fault();
}

IndexFault* index_fault_record() {
  static IndexFault* record = [] {
    void* p = nullptr;
    LOOM_CUDA_CHECK(cudaHostAlloc(&p, sizeof(IndexFault), cudaHostAllocMapped | cudaHostAllocPortable));
    auto* r = static_cast<IndexFault*>(p);
    *r = IndexFault{};
    return r;
  }();
  return record;
}

void raise_index_fault() {
  IndexFault* r = index_fault_record();
  if (r->flag == 0) return;
  const IndexFault f = *r;
  *r = IndexFault{};
  static const char* const names[] = {"?", "index_select", "index_add", "gather", "scatter_add"};
  throw std::runtime_error(std::string("[") + names[int(f.op)] + "] index " +
                           std::to_string(f.value) + " at element " + std::to_string(f.position) +
                           " of the index is out of range [0, " + std::to_string(f.bound) +
                           ") (found on the GPU by a kernel launched before this synchronization)");
}

}  // namespace loom::kernels::cuda
