// CUDA twins of ops::embedding_forward/backward (src/ops/embedding.cpp). The forward is a copy
// and the backward adds each token's rows in increasing row order onto the existing dwte value,
// the CPU loop's order, so both are bit-identical to the CPU.
#include <algorithm>
#include <cstdint>

#include "core/cuda/check.cuh"
#include "ops/cuda/device_util.cuh"
#include "ops/cuda/ops_cuda.hpp"

namespace nibble::cuda::ops {

namespace {

constexpr int kThreads = 256;

// Rows spread over threadIdx.y, a row's W-wide columns over threadIdx.x: narrow rows still fill
// the block.
struct RowShape {
  dim3 block;
  unsigned grid;
};
RowShape row_shape(int64_t rows, int64_t row_vecs) {
  const int64_t tx = std::min<int64_t>(kThreads, std::max<int64_t>(32, (row_vecs + 31) / 32 * 32));
  const int64_t ty = kThreads / tx;
  RowShape s;
  s.block = dim3(static_cast<unsigned>(tx), static_cast<unsigned>(ty));
  s.grid = dev::grid_for(rows, static_cast<int>(ty));
  return s;
}

template <int W>
__global__ void embedding_forward_kernel(const int32_t* __restrict__ tokens, const float* __restrict__ wte,
                                         float* __restrict__ out, int64_t n, int64_t c) {
  using V = typename dev::VecOf<W>::type;
  const int64_t cv = c / W;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; r < n;
       r += static_cast<int64_t>(gridDim.x) * blockDim.y) {
    const V* src = reinterpret_cast<const V*>(wte + static_cast<int64_t>(tokens[r]) * c);
    V* dst = reinterpret_cast<V*>(out + r * c);
    for (int64_t j = threadIdx.x; j < cv; j += blockDim.x) dst[j] = src[j];
  }
}

// One token of the plan per row of threads. The row's additions are a dependent chain (that is
// the CPU's order), so the loop is unrolled to issue the loads of several rows ahead of it.
template <int W>
__global__ void embedding_backward_kernel(const int32_t* __restrict__ unique, const int32_t* __restrict__ starts,
                                          const int32_t* __restrict__ order, int64_t n_unique,
                                          const float* __restrict__ dout, float* __restrict__ dwte, int64_t c) {
  const int64_t cv = c / W;
  for (int64_t u = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; u < n_unique;
       u += static_cast<int64_t>(gridDim.x) * blockDim.y) {
    const int32_t k0 = starts[u], k1 = starts[u + 1];
    float* dst = dwte + static_cast<int64_t>(unique[u]) * c;
    for (int64_t j = threadIdx.x; j < cv; j += blockDim.x) {
      float acc[W];
      dev::load<W>(dst + j * W, acc);
#pragma unroll 4
      for (int32_t k = k0; k < k1; ++k) {
        float d[W];
        dev::load<W>(dout + static_cast<int64_t>(order[k]) * c + j * W, d);
#pragma unroll
        for (int l = 0; l < W; ++l) acc[l] = __fadd_rn(acc[l], d[l]);
      }
      dev::store<W>(dst + j * W, acc);
    }
  }
}

}  // namespace

void embedding_forward(const int32_t* tokens, const float* wte, float* out, int64_t n, int64_t c,
                       cudaStream_t stream) {
  if (n < 0 || c < 0) fail("embedding_forward: bad shape n=", n, " c=", c);
  if (n == 0 || c == 0) return;
  const bool vec = c % 4 == 0 && dev::aligned(wte, 16) && dev::aligned(out, 16);
  const RowShape s = row_shape(n, vec ? c / 4 : c);
  if (vec) embedding_forward_kernel<4><<<s.grid, s.block, 0, stream>>>(tokens, wte, out, n, c);
  else embedding_forward_kernel<1><<<s.grid, s.block, 0, stream>>>(tokens, wte, out, n, c);
  NIBBLE_CUDA_CHECK_LAUNCH();
}

void embedding_backward(const int32_t* unique, const int32_t* starts, const int32_t* order, int64_t n_unique,
                        const float* dout, float* dwte, int64_t c, cudaStream_t stream) {
  if (n_unique < 0 || c < 0) fail("embedding_backward: bad shape n_unique=", n_unique, " c=", c);
  if (n_unique == 0 || c == 0) return;
  const bool vec = c % 4 == 0 && dev::aligned(dout, 16) && dev::aligned(dwte, 16);
  const RowShape s = row_shape(n_unique, vec ? c / 4 : c);
  if (vec)
    embedding_backward_kernel<4><<<s.grid, s.block, 0, stream>>>(unique, starts, order, n_unique, dout, dwte, c);
  else
    embedding_backward_kernel<1><<<s.grid, s.block, 0, stream>>>(unique, starts, order, n_unique, dout, dwte, c);
  NIBBLE_CUDA_CHECK_LAUNCH();
}

}  // namespace nibble::cuda::ops
