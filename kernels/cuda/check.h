#pragma once
// LOOM_CUDA_CHECK(call): throws std::runtime_error with file, line and the CUDA error string.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#define LOOM_CUDA_CHECK(call)                                                   \
  do {                                                                          \
    const cudaError_t loom_err_ = (call);                                       \
    if (loom_err_ != cudaSuccess)                                               \
      throw std::runtime_error(std::string("[cuda] ") + __FILE__ + ":" +        \
                               std::to_string(__LINE__) + ": " + #call + ": " + \
                               cudaGetErrorString(loom_err_));                  \
  } while (0)
