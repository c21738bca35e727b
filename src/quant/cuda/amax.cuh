#pragma once
// The tensor amax of SPEC §3.1 as a device-side reduction that any kernel can feed: the
// quantizer's own amax pass, or the producer of the quantizer's input (a transform kernel
// folding the amax into its epilogue, which saves the quantizer one full read of the tensor).
// max is order-independent, so the atomics keep results deterministic.
#include <cfloat>
#include <climits>
#include <cstdint>

namespace nibble::cuda {

struct AmaxSlot {
  unsigned int amax_bits;        // max|x| as float bits (non-negative floats order as uints)
  unsigned int nonfinite;        // any NaN/Inf seen
  unsigned long long first_bad;  // smallest flat index of a non-finite value
};

__device__ __forceinline__ void amax_note_value(float v, unsigned long long i, float& m, unsigned long long& bad) {
  const float a = fabsf(v);
  if (a <= FLT_MAX) m = fmaxf(m, a);
  else if (i < bad) bad = i;
}

// Warp-reduces (m, bad) and lets lane 0 fold them into the slot. Every lane of the warp must
// call it (inactive lanes with m = 0, bad = ULLONG_MAX).
__device__ __forceinline__ void amax_fold_warp(AmaxSlot* s, float m, unsigned long long bad) {
  for (int off = 16; off > 0; off >>= 1) {
    m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
    bad = min(bad, __shfl_xor_sync(0xffffffffu, bad, off));
  }
  if ((threadIdx.x + threadIdx.y * blockDim.x) % 32 == 0) {
    atomicMax(&s->amax_bits, __float_as_uint(m));
    if (bad != ULLONG_MAX) {
      atomicOr(&s->nonfinite, 1u);
      atomicMin(&s->first_bad, bad);
    }
  }
}

// Block-wide version: one atomic per block (a per-warp atomic on one address from millions of
// warps serialises the whole kernel). Every thread of the block must call it.
__device__ __forceinline__ void amax_fold_block(AmaxSlot* s, float m, unsigned long long bad) {
  __shared__ float sm[32];
  __shared__ unsigned long long sb[32];
  for (int off = 16; off > 0; off >>= 1) {
    m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
    bad = min(bad, __shfl_xor_sync(0xffffffffu, bad, off));
  }
  const int tid = threadIdx.x + threadIdx.y * blockDim.x, nthreads = blockDim.x * blockDim.y;
  if (tid % 32 == 0) {
    sm[tid / 32] = m;
    sb[tid / 32] = bad;
  }
  __syncthreads();
  if (tid == 0) {
    for (int w = 1; w < nthreads / 32; ++w) {
      m = fmaxf(m, sm[w]);
      bad = min(bad, sb[w]);
    }
    atomicMax(&s->amax_bits, __float_as_uint(m));
    if (bad != ULLONG_MAX) {
      atomicOr(&s->nonfinite, 1u);
      atomicMin(&s->first_bad, bad);
    }
  }
}

}  // namespace nibble::cuda
