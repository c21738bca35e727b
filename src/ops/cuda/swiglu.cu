// CUDA twin of ops::swiglu_forward/backward (src/ops/swiglu.cpp) over the fused [n, 2f]
// gate|up buffer. σ goes through the exp_f32 twin and every product, sum and quotient is the
// CPU's, in the CPU's order, so the results are bit-identical.
#include <cstdint>

#include "core/cuda/check.cuh"
#include "ops/cuda/device_util.cuh"
#include "ops/cuda/ops_cuda.hpp"

namespace nibble::cuda::ops {

namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float sigmoid(float g) { return __fdiv_rn(1.0f, __fadd_rn(1.0f, dev::exp_f32(-g))); }

template <int W, class T>
__global__ void swiglu_forward_kernel(const T* __restrict__ gu, T* __restrict__ out, int64_t n, int64_t f) {
  const int64_t fv = f / W, total = n * fv;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / fv, j = (i % fv) * W;
    const T* gate = gu + r * 2 * f + j;
    float g[W], u[W];
    dev::load<W>(gate, g);
    dev::load<W>(gate + f, u);
#pragma unroll
    for (int l = 0; l < W; ++l) g[l] = __fmul_rn(__fmul_rn(g[l], sigmoid(g[l])), u[l]);
    dev::store<W>(out + r * f + j, g);
  }
}

// dgu may alias gu: each thread reads its gate and up elements before writing the same ones.
template <int W, class T>
__global__ void swiglu_backward_kernel(const T* __restrict__ dout, const T* gu, T* dgu, int64_t n,
                                       int64_t f) {
  const int64_t fv = f / W, total = n * fv;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / fv, j = (i % fv) * W;
    const int64_t at = r * 2 * f + j;
    float g[W], u[W], d[W], dg[W], du[W];
    dev::load<W>(gu + at, g);
    dev::load<W>(gu + at + f, u);
    dev::load<W>(dout + r * f + j, d);
#pragma unroll
    for (int l = 0; l < W; ++l) {
      const float s = sigmoid(g[l]);
      // d·u·(s·(1 + g·(1 − s))) and d·(g·s), as the CPU groups them
      dg[l] = __fmul_rn(__fmul_rn(d[l], u[l]), __fmul_rn(s, __fadd_rn(1.0f, __fmul_rn(g[l], __fsub_rn(1.0f, s)))));
      du[l] = __fmul_rn(d[l], __fmul_rn(g[l], s));
    }
    dev::store<W>(dgu + at, dg);
    dev::store<W>(dgu + at + f, du);
  }
}

template <class T>
void forward_launch(const T* gu, T* out, int64_t n, int64_t f, cudaStream_t stream) {
  if (n < 0 || f < 0) fail("swiglu_forward: bad shape n=", n, " f=", f);
  if (n == 0 || f == 0) return;
  const bool vec = f % 4 == 0 && dev::aligned_vec(gu, 4) && dev::aligned_vec(out, 4);
  const int64_t total = n * (vec ? f / 4 : f);
  if (vec) swiglu_forward_kernel<4, T><<<dev::grid_for(total, kThreads), kThreads, 0, stream>>>(gu, out, n, f);
  else swiglu_forward_kernel<1, T><<<dev::grid_for(total, kThreads), kThreads, 0, stream>>>(gu, out, n, f);
  NIBBLE_CUDA_CHECK_LAUNCH();
}

template <class T>
void backward_launch(const T* dout, const T* gu, T* dgu, int64_t n, int64_t f, cudaStream_t stream) {
  if (n < 0 || f < 0) fail("swiglu_backward: bad shape n=", n, " f=", f);
  if (n == 0 || f == 0) return;
  const bool vec = f % 4 == 0 && dev::aligned_vec(dout, 4) && dev::aligned_vec(gu, 4) && dev::aligned_vec(dgu, 4);
  const int64_t total = n * (vec ? f / 4 : f);
  if (vec) swiglu_backward_kernel<4, T><<<dev::grid_for(total, kThreads), kThreads, 0, stream>>>(dout, gu, dgu, n, f);
  else swiglu_backward_kernel<1, T><<<dev::grid_for(total, kThreads), kThreads, 0, stream>>>(dout, gu, dgu, n, f);
  NIBBLE_CUDA_CHECK_LAUNCH();
}

}  // namespace

void swiglu_forward(const float* gu, float* out, int64_t n, int64_t f, cudaStream_t stream) {
  forward_launch(gu, out, n, f, stream);
}
void swiglu_backward(const float* dout, const float* gu, float* dgu, int64_t n, int64_t f, cudaStream_t stream) {
  backward_launch(dout, gu, dgu, n, f, stream);
}
void swiglu_forward(const bf16* gu, bf16* out, int64_t n, int64_t f, cudaStream_t stream) {
  forward_launch(gu, out, n, f, stream);
}
void swiglu_backward(const bf16* dout, const bf16* gu, bf16* dgu, int64_t n, int64_t f, cudaStream_t stream) {
  backward_launch(dout, gu, dgu, n, f, stream);
}

}  // namespace nibble::cuda::ops
