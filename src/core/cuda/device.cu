#include <cstdio>

#include "core/cuda/check.cuh"
#include "nibble/cuda.hpp"

namespace nibble::cuda {

bool built_with_cuda() { return true; }

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver / no device" error
    return 0;
  }
  return n;
}

void select_device(int ordinal) {
  const int n = device_count();
  if (ordinal < 0 || ordinal >= n)
    fail("GPU ", ordinal, " (LOCAL_RANK) does not exist: this node has ", n, " visible GPU(s); launch at most ", n,
         " processes per node");
  NIBBLE_CUDA_CHECK(cudaSetDevice(ordinal));
}

std::string device_summary() {
  if (device_count() == 0) return "no CUDA device";
  int dev = 0;
  NIBBLE_CUDA_CHECK(cudaGetDevice(&dev));
  cudaDeviceProp p{};
  NIBBLE_CUDA_CHECK(cudaGetDeviceProperties(&p, dev));
  char tail[96];
  std::snprintf(tail, sizeof tail, " (sm_%d%d, %d SMs, %.1f GiB)", p.major, p.minor,
                p.multiProcessorCount, static_cast<double>(p.totalGlobalMem) / (1ull << 30));
  return std::string(p.name) + tail;
}

}  // namespace nibble::cuda
