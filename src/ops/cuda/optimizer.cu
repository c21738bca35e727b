// CUDA twins of the optimizer step's ops (src/ops/adamw.cpp): the global gradient norm's Σ g²
// and AdamW.
//
// global_sumsq: a fixed grid of global_norm_partials() blocks, each a grid-stride float64 sum
// of g² written to its slot of `partials`, then one block adding the slots in a fixed tree.
// The order differs from the CPU's chunks of 2^16 (a few ulps of the double), never between
// runs.
//
// adamw_update: one launch, one CUDA block per chunk of the parameter list; per element the
// clip multiply g·grad_scale (ops::scale_inplace's one rounding) and then ops::adamw_update's
// operations in its order, so the bits equal the CPU's.
#include <cmath>
#include <cstdint>

#include "core/cuda/check.cuh"
#include "ops/cuda/device_util.cuh"
#include "ops/cuda/ops_cuda.hpp"

namespace nibble::cuda::ops {

namespace {

constexpr int kNormPartials = 1024;
constexpr int kNormThreads = 256;
constexpr int kFinalThreads = 1024;
static_assert(kNormPartials == kFinalThreads, "the final block adds one slot per thread");

template <int W>
__global__ void __launch_bounds__(kNormThreads)
    sumsq_partial_kernel(const float* __restrict__ g, int64_t n, double* __restrict__ partials) {
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * kNormThreads + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(kNormPartials) * kNormThreads;
  const int64_t nv = n / W;
  double s = 0.0;
  for (int64_t i = tid; i < nv; i += stride) {
    float a[W];
    dev::load<W>(g + i * W, a);
#pragma unroll
    for (int l = 0; l < W; ++l) s += static_cast<double>(a[l]) * static_cast<double>(a[l]);
  }
  if (tid < n - nv * W) {
    const double a = static_cast<double>(g[nv * W + tid]);
    s += a * a;
  }
  s = dev::block_sum<kNormThreads>(s);
  if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

__global__ void __launch_bounds__(kFinalThreads)
    sumsq_final_kernel(const double* __restrict__ partials, double* __restrict__ sumsq) {
  const double s = dev::block_sum<kFinalThreads>(partials[threadIdx.x]);
  if (threadIdx.x == 0) *sumsq = s;
}

struct AdamParams {
  float lr, beta1, beta2, eps, wd, bc1, bc2, one_m_b1, one_m_b2, grad_scale;
  bool scaled;  // grad_scale != 1
  bool vec;     // p, g, m, v all 16-byte aligned
};

// ops::scale_inplace then ops::adamw_update's adamw_scalar, one IEEE operation at a time.
__device__ __forceinline__ void adam_element(const AdamParams& h, float wd, float& p, float gi, float& m, float& v) {
  if (h.scaled) gi = __fmul_rn(gi, h.grad_scale);
  const float mi = __fadd_rn(__fmul_rn(h.beta1, m), __fmul_rn(h.one_m_b1, gi));
  const float vi = __fadd_rn(__fmul_rn(h.beta2, v), __fmul_rn(h.one_m_b2, __fmul_rn(gi, gi)));
  m = mi;
  v = vi;
  const float mhat = __fdiv_rn(mi, h.bc1);
  const float vhat = __fdiv_rn(vi, h.bc2);
  p = __fsub_rn(p, __fmul_rn(h.lr, __fadd_rn(__fdiv_rn(mhat, __fadd_rn(__fsqrt_rn(vhat), h.eps)), __fmul_rn(wd, p))));
}

__device__ __forceinline__ void adam_scalar_range(const AdamParams& h, float wd, float* p, const float* g, float* m,
                                                  float* v, int64_t i0, int64_t i1) {
  for (int64_t i = i0 + threadIdx.x; i < i1; i += blockDim.x) {
    float pi = p[i], mi = m[i], vi = v[i];
    adam_element(h, wd, pi, g[i], mi, vi);
    p[i] = pi;
    m[i] = mi;
    v[i] = vi;
  }
}

// Chunks are independent: a chunk's elements may sit at any offset, so the float4 part starts
// at its first 16-byte boundary, with scalar heads and tails.
__global__ void adamw_kernel(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m,
                             float* __restrict__ v, AdamChunks chunks, AdamParams h) {
  for (int64_t c = blockIdx.x; c < chunks.count; c += gridDim.x) {
    const int64_t start = chunks.start[c];
    const int64_t end = start + static_cast<int64_t>(chunks.len[c]);
    const float wd = chunks.decay[c] ? h.wd : 0.0f;
    if (!h.vec) {
      adam_scalar_range(h, wd, p, g, m, v, start, end);
      continue;
    }
    const int64_t a0 = (start + 3) / 4 * 4 < end ? (start + 3) / 4 * 4 : end;
    const int64_t a1 = a0 + (end - a0) / 4 * 4;
    adam_scalar_range(h, wd, p, g, m, v, start, a0);
    for (int64_t i = a0 + 4 * static_cast<int64_t>(threadIdx.x); i < a1; i += 4 * static_cast<int64_t>(blockDim.x)) {
      float pp[4], gg[4], mm[4], vv[4];
      dev::load<4>(p + i, pp);
      dev::load<4>(g + i, gg);
      dev::load<4>(m + i, mm);
      dev::load<4>(v + i, vv);
#pragma unroll
      for (int l = 0; l < 4; ++l) adam_element(h, wd, pp[l], gg[l], mm[l], vv[l]);
      dev::store<4>(p + i, pp);
      dev::store<4>(m + i, mm);
      dev::store<4>(v + i, vv);
    }
    adam_scalar_range(h, wd, p, g, m, v, a1, end);
  }
}

constexpr int kAdamThreads = 256;

}  // namespace

int64_t global_norm_partials() { return kNormPartials; }

void global_sumsq(const float* g, int64_t n, double* partials, double* sumsq, cudaStream_t stream) {
  if (n < 0) fail("global_sumsq: negative length ", n);
  // The grid is fixed whatever n, so the summation order depends on n alone.
  if (dev::aligned(g, 16)) sumsq_partial_kernel<4><<<kNormPartials, kNormThreads, 0, stream>>>(g, n, partials);
  else sumsq_partial_kernel<1><<<kNormPartials, kNormThreads, 0, stream>>>(g, n, partials);
  NIBBLE_CUDA_CHECK_LAUNCH();
  sumsq_final_kernel<<<1, kFinalThreads, 0, stream>>>(partials, sumsq);
  NIBBLE_CUDA_CHECK_LAUNCH();
}

void adamw_update(float* p, const float* g, float* m, float* v, const AdamChunks& chunks, float lr, float beta1,
                  float beta2, float eps, float weight_decay, int64_t t, float grad_scale, cudaStream_t stream) {
  if (t < 1) fail("adamw: step ", t, " must be >= 1");
  if (chunks.count < 0) fail("adamw: negative chunk count ", chunks.count);
  if (chunks.count == 0) return;
  AdamParams h;
  h.lr = lr;
  h.beta1 = beta1;
  h.beta2 = beta2;
  h.eps = eps;
  h.wd = weight_decay;
  // The CPU's bias corrections: float64 pow, rounded once to float.
  h.bc1 = static_cast<float>(1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(t)));
  h.bc2 = static_cast<float>(1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(t)));
  h.one_m_b1 = 1.0f - beta1;
  h.one_m_b2 = 1.0f - beta2;
  h.grad_scale = grad_scale;
  h.scaled = grad_scale != 1.0f;  // x·1 is x: skip the multiply
  h.vec = dev::aligned(p, 16) && dev::aligned(g, 16) && dev::aligned(m, 16) && dev::aligned(v, 16);
  const unsigned grid = static_cast<unsigned>(chunks.count < (int64_t(1) << 30) ? chunks.count : int64_t(1) << 30);
  adamw_kernel<<<grid, kAdamThreads, 0, stream>>>(p, g, m, v, chunks, h);
  NIBBLE_CUDA_CHECK_LAUNCH();
}

}  // namespace nibble::cuda::ops
