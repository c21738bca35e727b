// CUDA twin of ops::add_inplace (src/ops/adamw.cpp): one IEEE add per element, so the result is
// bit-identical to the CPU.
#include <cstdint>

#include "core/cuda/check.cuh"
#include "ops/cuda/device_util.cuh"
#include "ops/cuda/ops_cuda.hpp"

namespace nibble::cuda::ops {

namespace {

constexpr int kThreads = 256;

// W-wide over the first n − n % W elements, the remainder by the first threads of the grid.
template <int W>
__global__ void add_kernel(float* y, const float* x, int64_t n) {
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t nv = n / W;
  for (int64_t i = tid; i < nv; i += stride) {
    float a[W], b[W];
    dev::load<W>(y + i * W, a);
    dev::load<W>(x + i * W, b);
#pragma unroll
    for (int l = 0; l < W; ++l) a[l] = __fadd_rn(a[l], b[l]);
    dev::store<W>(y + i * W, a);
  }
  if (tid < n - nv * W) y[nv * W + tid] = __fadd_rn(y[nv * W + tid], x[nv * W + tid]);
}

}  // namespace

void add_inplace(float* y, const float* x, int64_t n, cudaStream_t stream) {
  if (n < 0) fail("add_inplace: negative length ", n);
  if (n == 0) return;
  if (dev::aligned(y, 16) && dev::aligned(x, 16))
    add_kernel<4><<<dev::grid_for(n / 4 + 1, kThreads), kThreads, 0, stream>>>(y, x, n);
  else
    add_kernel<1><<<dev::grid_for(n, kThreads), kThreads, 0, stream>>>(y, x, n);
  NIBBLE_CUDA_CHECK_LAUNCH();
}

}  // namespace nibble::cuda::ops
