#pragma once
// Device helpers shared by the op kernels of src/ops/cuda: the twin of ops::exp_f32, block
// reductions in a fixed order, and the float/float4 access used by the vectorised kernels.
//
// The bit-exact kernels spell their arithmetic with the _rn intrinsics (__fmul_rn, __fadd_rn,
// ...): those are never contracted into FMAs, so the CPU's operation order holds even where a
// file is compiled without --fmad=false.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <bit>
#include <cstdint>

#include "nibble/ops/ops.hpp"

namespace nibble::cuda::ops::dev {

// ---- exp_f32 twin ---------------------------------------------------------------------------
__device__ __forceinline__ int32_t order_key(float x) {
  const int32_t b = __float_as_int(x);
  return b ^ ((b >> 31) & 0x7FFFFFFF);
}
// The key map is its own inverse.
__device__ __forceinline__ float from_order_key(int32_t k) { return __int_as_float(k ^ ((k >> 31) & 0x7FFFFFFF)); }

// ops::exp_f32 (include/nibble/ops/ops.hpp) bit for bit (checked on all 2^32 inputs). The same constants and the same IEEE multiplies and adds in the same order as ops::exp_f32.
// Only the clamps and selects are spelled with float compares instead of the CPU's integer
// order keys (fewer instructions on the hot path); for every input the result has the same
// bits: for non-NaN x, key(x) > key(88.72…) ⇔ x > 88.72… and key(x) < key(−86.6) ⇔ x < −86.6
// (the keys order like the values and neither bound is ±0), so the clamped argument, the
// +inf above and the +0 below are the CPU's; a NaN comes back as itself on both sides (the
// CPU computes its polynomial from a different clamp value, which is then discarded).
constexpr float kExpHi = 88.72283935546875f, kExpLo = -86.6f;
static_assert(nibble::ops::detail::float_order_key(kExpHi) > 0 && nibble::ops::detail::float_order_key(kExpLo) < 0,
              "exp_f32 bounds on either side of zero");

__device__ __forceinline__ float exp_f32(float x) {
  const float xc = fminf(fmaxf(x, kExpLo), kExpHi);
  const float t = __fadd_rn(__fmul_rn(xc, 1.44269502162933349609375f), 12582912.0f);
  const float n = __fsub_rn(t, 12582912.0f);
  const int32_t ni = __float_as_int(t) - 0x4B400000;
  float r = __fsub_rn(xc, __fmul_rn(n, 0.693359375f));
  r = __fsub_rn(r, __fmul_rn(n, -2.12194440e-4f));
  float p = 1.9875691500e-4f;
  p = __fadd_rn(__fmul_rn(p, r), 1.3981999507e-3f);
  p = __fadd_rn(__fmul_rn(p, r), 8.3334519073e-3f);
  p = __fadd_rn(__fmul_rn(p, r), 4.1665795894e-2f);
  p = __fadd_rn(__fmul_rn(p, r), 1.6666665459e-1f);
  p = __fadd_rn(__fmul_rn(p, r), 5.0000001201e-1f);
  const float y = __fadd_rn(__fadd_rn(__fmul_rn(p, __fmul_rn(r, r)), r), 1.0f);
  const float scale = __int_as_float((ni + 126) << 23);  // 2^(n−1), n ∈ [−125, 128]
  const float e = __fmul_rn(__fmul_rn(y, scale), 2.0f);
  const float clamped = x > kExpHi ? __int_as_float(0x7F800000) : (x < kExpLo ? 0.0f : e);
  return x != x ? x : clamped;
}

// ---- reductions in a fixed order --------------------------------------------------------------
// Butterflies: every lane ends with the same bits (IEEE addition is commutative), and the
// pairing depends only on the lane numbers, never on timing.
__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}
__device__ __forceinline__ int32_t warp_max(int32_t v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
}

// Whole-block sum returned to every thread: warp butterflies, then the warp totals added in warp
// order. Every thread of the block must call it (it synchronises), and kThreads must be the
// block size. The trailing barrier lets a kernel call it again.
template <int kThreads>
__device__ __forceinline__ double block_sum(double v) {
  static_assert(kThreads % 32 == 0 && kThreads <= 1024, "whole warps, at most 1024 threads");
  __shared__ double warp_total[kThreads / 32];
  v = warp_sum(v);
  if ((threadIdx.x & 31) == 0) warp_total[threadIdx.x >> 5] = v;
  __syncthreads();
  double t = 0.0;
#pragma unroll
  for (int w = 0; w < kThreads / 32; ++w) t += warp_total[w];
  __syncthreads();
  return t;
}
template <int kThreads>
__device__ __forceinline__ int32_t block_max(int32_t v) {
  static_assert(kThreads % 32 == 0 && kThreads <= 1024, "whole warps, at most 1024 threads");
  __shared__ int32_t warp_top[kThreads / 32];
  v = warp_max(v);
  if ((threadIdx.x & 31) == 0) warp_top[threadIdx.x >> 5] = v;
  __syncthreads();
  int32_t t = warp_top[0];
#pragma unroll
  for (int w = 1; w < kThreads / 32; ++w) t = max(t, warp_top[w]);
  __syncthreads();
  return t;
}

// ---- vector access ------------------------------------------------------------------------------
// Kernels are templated on the access width W (4: float4, 2: float2, 1: float); the host picks
// the widest one that the pointers and strides allow.
template <int W>
struct VecOf;
template <>
struct VecOf<1> { using type = float; };
template <>
struct VecOf<2> { using type = float2; };
template <>
struct VecOf<4> { using type = float4; };

template <int W>
__device__ __forceinline__ void load(const float* p, float (&out)[W]) {
  if constexpr (W == 4) {
    const float4 t = *reinterpret_cast<const float4*>(p);
    out[0] = t.x; out[1] = t.y; out[2] = t.z; out[3] = t.w;
  } else if constexpr (W == 2) {
    const float2 t = *reinterpret_cast<const float2*>(p);
    out[0] = t.x; out[1] = t.y;
  } else {
    out[0] = *p;
  }
}
template <int W>
__device__ __forceinline__ void store(float* p, const float (&in)[W]) {
  if constexpr (W == 4) {
    *reinterpret_cast<float4*>(p) = make_float4(in[0], in[1], in[2], in[3]);
  } else if constexpr (W == 2) {
    *reinterpret_cast<float2*>(p) = make_float2(in[0], in[1]);
  } else {
    *p = in[0];
  }
}

// bf16 storage (activations in mixed precision): W values are loaded into fp32 registers
// (exact) and stored with one round-to-nearest-even each; the math between stays fp32.
template <int W>
__device__ __forceinline__ void load(const __nv_bfloat16* p, float (&out)[W]) {
  if constexpr (W == 4) {
    const uint2 t = *reinterpret_cast<const uint2*>(p);
    const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&t.x));
    const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&t.y));
    out[0] = a.x; out[1] = a.y; out[2] = b.x; out[3] = b.y;
  } else if constexpr (W == 2) {
    const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(p));
    out[0] = a.x; out[1] = a.y;
  } else {
    out[0] = __bfloat162float(*p);
  }
}
template <int W>
__device__ __forceinline__ void store(__nv_bfloat16* p, const float (&in)[W]) {
  if constexpr (W == 4) {
    const __nv_bfloat162 a = __floats2bfloat162_rn(in[0], in[1]), b = __floats2bfloat162_rn(in[2], in[3]);
    uint2 t;
    t.x = *reinterpret_cast<const uint32_t*>(&a);
    t.y = *reinterpret_cast<const uint32_t*>(&b);
    *reinterpret_cast<uint2*>(p) = t;
  } else if constexpr (W == 2) {
    *reinterpret_cast<__nv_bfloat162*>(p) = __floats2bfloat162_rn(in[0], in[1]);
  } else {
    *p = __float2bfloat16_rn(in[0]);
  }
}
__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
template <class T>
__device__ __forceinline__ T from_float(float v) {
  if constexpr (sizeof(T) == 2) return __float2bfloat16_rn(v);
  else return v;
}

// ---- host side ----------------------------------------------------------------------------------
inline bool aligned(const void* p, uintptr_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }
// W-wide access of T: the pointer aligned to W elements.
template <class T>
inline bool aligned_vec(const T* p, int w) { return aligned(p, static_cast<uintptr_t>(w) * sizeof(T)); }

// Blocks for a grid-stride loop over `work` items: enough to fill an H100 several times over,
// few enough that each thread does a handful of items.
inline unsigned grid_for(int64_t work, int threads, int64_t cap = int64_t(1) << 16) {
  const int64_t b = (work + threads - 1) / threads;
  return static_cast<unsigned>(std::clamp<int64_t>(b, 1, cap));
}

}  // namespace nibble::cuda::ops::dev
