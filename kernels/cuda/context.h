#pragma once
// CUDA-only (included by .cu and CUDA-build .cpp files): the compute stream every kernel launches
// on, launch checking, and the launch-size helpers shared by the kernel files.
//
// Streams: each device has one non-blocking compute stream, created on first use; all of loom's
// kernels and library calls (cuBLASLt) on that device go to it in program order, so tensors need
// no events between ops. Host<->device copies synchronize with it (runtime.h). Communication
// streams (NCCL) order themselves against it with events.
#include <cuda_runtime.h>

#include <cstdint>

namespace loom::kernels::cuda {

// The device the calling thread works on (cudaGetDevice).
int current_device();
// The compute stream of the current device.
cudaStream_t compute_stream();
// Throws std::runtime_error "[cuda] <what>: <error>" if the last launch failed.
void check_launch(const char* what);

// Whether p starts a 16-byte chunk (what vector loads, cp.async and cuDNN's tensors need).
inline bool aligned16(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

// Blocks of `threads` threads covering n items (at least 1 block, at most 2^31 - 1).
inline unsigned blocks_for(int64_t n, int threads) {
  int64_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  if (b > 2147483647) b = 2147483647;
  return unsigned(b);
}

}  // namespace loom::kernels::cuda
