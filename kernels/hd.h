#pragma once
// LOOM_HD marks functions compiled for the host and, under nvcc, for the device too, so the CPU
// kernels and the CUDA kernels share one definition of each scalar function.
#if defined(__CUDACC__)
#define LOOM_HD __host__ __device__ __forceinline__
#else
#define LOOM_HD inline
#endif
