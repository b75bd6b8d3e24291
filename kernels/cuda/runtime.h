#pragma once
// The CUDA runtime as loom's core sees it: device count, memory and copies. Implemented by
// runtime.cpp when loom is built with CUDA (LOOM_CUDA) and by stub.cpp otherwise, where every
// call except device_count() throws a loom-style std::runtime_error saying CUDA is not built in.
#include <cstddef>

namespace loom::kernels::cuda {

bool built_with_cuda();
int device_count();  // 0 when not built with CUDA or no device is present
void* device_malloc(size_t nbytes, int device);
void device_free(void* ptr, int device);
// Synchronous copy; each side is host memory unless its *_is_device flag is set.
void memcpy_any(void* dst, bool dst_is_device, const void* src, bool src_is_device, size_t nbytes);

}  // namespace loom::kernels::cuda
