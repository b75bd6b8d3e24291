#pragma once
// Storage: one contiguous allocation on one device, shared by every tensor that views it.
// Host memory is 64-byte aligned; device memory comes from the CUDA backend's allocator
// (kernels/cuda/runtime.h), which a CPU-only build stubs out with a clear error.
#include <cstddef>
#include <memory>

#include "core/device.h"

namespace loom {

class Storage {
 public:
  Storage(size_t nbytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }

 private:
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  Device device_;
};

// Copies nbytes between any two devices (host<->host, host<->cuda, cuda<->cuda).
void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t nbytes);

}  // namespace loom
