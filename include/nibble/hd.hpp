#pragma once
// NIBBLE_HD marks scalar code shared verbatim by the CPU reference and the CUDA
// kernels, so that both compute the same bits (SPEC: CPU and CUDA agree exactly).
#if defined(__CUDACC__)
#define NIBBLE_HD __host__ __device__ __forceinline__
#else
#define NIBBLE_HD inline
#endif
