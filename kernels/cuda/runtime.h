#pragma once
// The CUDA runtime as loom's core sees it: devices, memory, copies and synchronization. Implemented
// by runtime.cpp + allocator.cpp when loom is built with CUDA (LOOM_CUDA) and by stub.cpp
// otherwise, where every call except built_with_cuda() and device_count() throws a loom-style
// std::runtime_error saying CUDA is not built in.
//
// Device memory comes from a caching allocator (allocator.cpp): freed blocks are kept per device
// in size classes and handed out again without cudaMalloc/cudaFree; when cudaMalloc fails the
// cache is released and the call retried once, and a final failure reports what was asked for,
// what loom holds and what the device has free. Blocks are reused in the compute stream's order
// (context.h), which is the only stream that reads or writes tensors; a block handed to another
// stream must be synchronized with the compute stream before it is freed.
#include <cstddef>
#include <cstdint>

namespace loom::kernels::cuda {

bool built_with_cuda();
int device_count();  // 0 when not built with CUDA or no device is present

void* device_malloc(size_t nbytes, int device);
void device_free(void* ptr, int device);

struct MemoryStats {
  int64_t allocated = 0;       // bytes in blocks handed out now
  int64_t reserved = 0;        // bytes obtained from cudaMalloc (handed out + cached)
  int64_t peak_allocated = 0;  // max of `allocated` since start or reset_peak_memory()
  int64_t num_mallocs = 0;     // cudaMalloc calls so far
};
MemoryStats memory_stats(int device);
void reset_peak_memory(int device);
// Returns every cached (free) block of the device to the driver.
void empty_cache(int device);

// Copies nbytes; each side is host memory unless its *_is_device flag is set. Ordered after all
// work already queued on the compute stream; returns when the destination holds the data.
void memcpy_any(void* dst, bool dst_is_device, const void* src, bool src_is_device, size_t nbytes);
// Waits for all work queued on the device's compute stream.
void synchronize(int device);

}  // namespace loom::kernels::cuda
