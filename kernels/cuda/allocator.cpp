// CUDA builds: the caching device allocator behind runtime.h's device_malloc/device_free.
//
// Size classes: requests round up to 512 bytes below 1 MiB, and above it to the next of eight
// steps per power of two (at most 12.5% slack), so a block freed by one step's activation fits
// the same activation of the next step. Free blocks wait in a per-device multimap keyed by class
// size; a request takes a free block of exactly its class. Everything runs under one mutex: the
// allocator is called from the host thread that enqueues work, never from the device.
#include <cuda_runtime.h>

#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "kernels/cuda/check.h"
#include "kernels/cuda/runtime.h"

namespace loom::kernels::cuda {

namespace {

size_t size_class(size_t n) {
  constexpr size_t kSmall = size_t(1) << 20;
  if (n <= kSmall) return ((n > 0 ? n : 1) + 511) / 512 * 512;
  size_t pow2 = kSmall;
  while (pow2 * 2 < n) pow2 *= 2;  // pow2 < n <= 2 * pow2
  const size_t step = pow2 / 8;
  return (n + step - 1) / step * step;
}

struct DevicePool {
  std::multimap<size_t, void*> free_blocks;      // class size -> block
  std::unordered_map<void*, size_t> live;        // block -> class size
  MemoryStats stats;
};

std::mutex g_mutex;
std::vector<DevicePool>& pools() {
  static std::vector<DevicePool> p(size_t(device_count() > 0 ? device_count() : 1));
  return p;
}
DevicePool& pool(int device) {
  auto& p = pools();
  if (device < 0 || size_t(device) >= p.size())
    throw std::runtime_error("[cuda] device " + std::to_string(device) + " does not exist (" +
                             std::to_string(p.size()) + " present)");
  return p[size_t(device)];
}

void release_cache(DevicePool& p) {
  for (auto& [size, ptr] : p.free_blocks) {
    cudaFree(ptr);
    p.stats.reserved -= int64_t(size);
  }
  p.free_blocks.clear();
}

std::string mib(int64_t bytes) {
  return std::to_string(bytes >> 20) + " MiB";
}

}  // namespace

void* device_malloc(size_t nbytes, int device) {
  if (device_count() == 0) throw std::runtime_error("[cuda] no CUDA device is present");
  const size_t size = size_class(nbytes);
  std::lock_guard<std::mutex> lock(g_mutex);
  DevicePool& p = pool(device);
  void* ptr = nullptr;
  if (auto it = p.free_blocks.find(size); it != p.free_blocks.end()) {
    ptr = it->second;
    p.free_blocks.erase(it);
  } else {
    LOOM_CUDA_CHECK(cudaSetDevice(device));
    cudaError_t err = cudaMalloc(&ptr, size);
    if (err != cudaSuccess) {  // give the cache back and try once more
      cudaGetLastError();
      release_cache(p);
      err = cudaMalloc(&ptr, size);
    }
    if (err != cudaSuccess) {
      cudaGetLastError();
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      throw std::runtime_error(
          "[cuda] out of memory on device " + std::to_string(device) + ": asked for " +
          std::to_string(nbytes) + " bytes (" + mib(int64_t(nbytes)) + "); loom holds " +
          mib(p.stats.allocated) + " in tensors (peak " + mib(p.stats.peak_allocated) +
          "), the device has " + mib(int64_t(free_b)) + " free of " + mib(int64_t(total_b)));
    }
    p.stats.reserved += int64_t(size);
    ++p.stats.num_mallocs;
  }
  p.live.emplace(ptr, size);
  p.stats.allocated += int64_t(size);
  if (p.stats.allocated > p.stats.peak_allocated) p.stats.peak_allocated = p.stats.allocated;
  return ptr;
}

void device_free(void* ptr, int device) {
  if (!ptr) return;
  std::lock_guard<std::mutex> lock(g_mutex);
  DevicePool& p = pool(device);
  const auto it = p.live.find(ptr);
  if (it == p.live.end()) return;  // not ours: nothing to do (never happens for Storage)
  p.stats.allocated -= int64_t(it->second);
  p.free_blocks.emplace(it->second, ptr);
  p.live.erase(it);
}

MemoryStats memory_stats(int device) {
  std::lock_guard<std::mutex> lock(g_mutex);
  return pool(device).stats;
}

void reset_peak_memory(int device) {
  std::lock_guard<std::mutex> lock(g_mutex);
  DevicePool& p = pool(device);
  p.stats.peak_allocated = p.stats.allocated;
}

void empty_cache(int device) {
  std::lock_guard<std::mutex> lock(g_mutex);
  release_cache(pool(device));
}

}  // namespace loom::kernels::cuda
