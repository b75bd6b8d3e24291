#include "core/storage.h"

#include <malloc.h>

#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>

#include "core/error.h"
#include "kernels/cuda/runtime.h"

namespace loom {

namespace {
// Training allocates and frees the same large activation buffers every step. glibc would serve
// each from a fresh mmap and unmap it on free, paying page faults and zeroing every time (most of
// a step's system time); keeping large blocks in the heap lets them be reused instead.
const bool g_heap_tuned = [] {
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  return true;
}();
}  // namespace

Storage::Storage(size_t nbytes, Device device) : nbytes_(nbytes), device_(device) {
  (void)g_heap_tuned;
  if (device.is_cpu()) {
    const size_t rounded = (std::max<size_t>(nbytes, 1) + 63) / 64 * 64;
    data_ = std::aligned_alloc(64, rounded);
    if (!data_) LOOM_FAIL("[Storage] out of host memory allocating ", nbytes, " bytes");
  } else {
    try {
      data_ = kernels::cuda::device_malloc(nbytes, device.index);
    } catch (const std::runtime_error& e) {  // out of memory, no device: a loom::Error for callers
      LOOM_FAIL("[Storage] ", e.what());
    }
  }
}

Storage::~Storage() {
  if (device_.is_cpu()) {
    std::free(data_);
  } else {
    kernels::cuda::device_free(data_, device_.index);
  }
}

void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t nbytes) {
  if (nbytes == 0) return;
  if (dst_dev.is_cpu() && src_dev.is_cpu()) {
    std::memcpy(dst, src, nbytes);
  } else {
    try {
      kernels::cuda::memcpy_any(dst, dst_dev.is_cuda(), src, src_dev.is_cuda(), nbytes);
    } catch (const std::runtime_error& e) {  // incl. an index fault found by an earlier kernel
      LOOM_FAIL(e.what());
    }
  }
}

}  // namespace loom
