// CUDA builds: the runtime entry points of runtime.h over the CUDA runtime API.
#include "kernels/cuda/runtime.h"

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "kernels/cuda/check.h"

namespace loom::kernels::cuda {

bool built_with_cuda() {
  return true;
}

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return n;
}

void* device_malloc(size_t nbytes, int device) {
  if (device_count() == 0) throw std::runtime_error("[cuda] no CUDA device is present");
  LOOM_CUDA_CHECK(cudaSetDevice(device));
  void* p = nullptr;
  const cudaError_t err = cudaMalloc(&p, nbytes ? nbytes : 1);
  if (err != cudaSuccess) {
    size_t free_b = 0, total_b = 0;
    cudaGetLastError();
    cudaMemGetInfo(&free_b, &total_b);
    throw std::runtime_error("[cuda] out of memory on device " + std::to_string(device) +
                             ": asked for " + std::to_string(nbytes) + " bytes, " +
                             std::to_string(free_b) + " of " + std::to_string(total_b) + " free");
  }
  return p;
}

void device_free(void* ptr, int device) {
  if (!ptr) return;
  cudaSetDevice(device);
  cudaFree(ptr);
}

void memcpy_any(void* dst, bool dst_is_device, const void* src, bool src_is_device, size_t nbytes) {
  const cudaMemcpyKind kind =
      dst_is_device ? (src_is_device ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
                    : (src_is_device ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
  LOOM_CUDA_CHECK(cudaMemcpy(dst, src, nbytes, kind));
}

}  // namespace loom::kernels::cuda
