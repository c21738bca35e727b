// Causal grouped-query attention on tensor cores: FlashAttention-2 with bf16 operands and fp32
// accumulation (mma.sync.m16n8k16), a second implementation next to the bit-exact fp32 one
// (attention.cu). Same interface, layouts and outputs; not bit-exact with the CPU (the
// operands q, k, v, dO and the probabilities are rounded to bf16, relative 2⁻⁹ each).
//
// Arithmetic:
//  * q, k, v, dO are read as fp32 and rounded to bf16 (round to nearest even) on load; P and dS
//    are rounded to bf16 as the A operands of the second products. Every product accumulates
//    in fp32 in the tensor cores; softmax statistics, Δ and the gradients' accumulators are fp32.
//  * Exponentials by ex2.approx (base 2, the scale folded into log2(e)·scale; relative error
//    ~2⁻²², far below the bf16 rounding). lse is natural-log, as the fp32 path's.
//  * Deterministic: no atomics; every accumulation has a fixed order that depends only on the
//    shapes (dK, dV: the group's query heads in order, then query tiles from the diagonal on;
//    dQ: key tiles in order), so two runs give the same bits.
//
// Work layout: 128 threads (4 warps) per block; a block owns 64 rows (queries in the forward
// and dQ, keys in dK/dV), a warp 16 of them, and keeps its accumulators in the mma C-fragment
// registers. The first product's C fragment (scores, 16 rows × 8 columns per n-tile) is the
// second product's A fragment once rounded to bf16, so P and dS never touch shared memory.
// Streamed 64-row tiles (K, V in the forward and dQ; Q, dO in dK/dV) are copied as fp32 with
// cp.async into a staging buffer while the previous tile computes, then converted once into
// bf16 tiles (rows padded by 8 elements so that ldmatrix rows fall in distinct banks) read by
// all four warps through ldmatrix (.trans for the operands whose reduction index is the row).
// Operands a warp uses alone for the whole block (Q and dO rows in the forward and dQ) are
// loaded from global memory straight into A fragments.
//
// Fragment layouts (PTX ISA, mma.m16n8k16 with .bf16; g = lane / 4, c = 2·(lane % 4)):
//   A 16×16: a0 (row g, cols c, c+1), a1 (row g+8, cols c, c+1), a2 (row g, cols c+8, c+9),
//            a3 (row g+8, cols c+8, c+9); the lower column in the low half.
//   B 16×8:  b0 (k = c, c+1; n = g), b1 (k = c+8, c+9; n = g).
//   C 16×8:  c0, c1 (row g, cols c, c+1), c2, c3 (row g+8, cols c, c+1).
// ldmatrix.x4: lanes 8i..8i+7 give the row addresses of matrix i, register i receives matrix i
// with (row lane/4, cols c, c+1), or with .trans (rows c, c+1, col lane/4).
#include <cuda_pipeline.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <limits>

#include "core/cuda/check.cuh"
#include "nibble/error.hpp"
#include "ops/cuda/ops_cuda.hpp"

namespace nibble::cuda::ops {
namespace {

constexpr int kThreads = 128;  // 4 warps
constexpr int kTile = 64;      // rows per block and per streamed tile
constexpr int kSub = 32;       // columns per inner step of the backward products
constexpr unsigned kFull = 0xffffffffu;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr float kLog2e = 1.44269504088896340736f;
constexpr float kLn2 = 0.69314718055994530942f;

template <int D>
struct Tc {
  static_assert(D == 32 || D == 64 || D == 128, "head dims 32, 64, 128");
  static constexpr int kPitch = D + 8;   // bf16 elements per shared row (16 bytes of padding)
  static constexpr int kSteps = D / 16;  // k-steps of 16 over the head dim
  static constexpr int kDTiles = D / 8;  // n-tiles of 8 over the head dim
  static constexpr size_t kBf16Tile = sizeof(uint16_t) * kTile * kPitch;
  static constexpr size_t kF32Tile = sizeof(float) * kTile * D;
  // Forward and dQ: K, V (bf16) and their fp32 staging.
  static constexpr size_t kFwdSmem = 2 * kBf16Tile + 2 * kF32Tile;
  // dK/dV: K, V, Q, dO (bf16), the Q, dO staging, and lse·log2(e), Δ of the current and the next tile.
  static constexpr size_t kDkvSmem = 4 * kBf16Tile + 2 * kF32Tile + 4 * sizeof(float) * kTile;
  // dK/dV keeps the warp's K and V A fragments in registers where that does not spill (at D = 64
  // it spills a few bytes under the 168-register budget; there they are re-read by ldmatrix).
  static constexpr bool kHoistKv = D <= 64;
  // Query columns per inner step of dK/dV: 16 at D = 64 frees the registers for the hoisted
  // K, V fragments (and needs fewer ldmatrix per mma than 32 columns with K, V re-read).
  static constexpr int kDkvSub = D == 64 ? 16 : kSub;
  // Blocks per SM the register budget is set for (__launch_bounds__; 65536 / (128 · n) registers
  // per thread): what shared memory allows, less where the fragments would not fit.
  static constexpr int kFwdBlocks = D == 32 ? 4 : D == 64 ? 3 : 2;  // smem 26, 50, 98 KB
  static constexpr int kDkvBlocks = D == 32 ? 3 : D == 64 ? 3 : 1;  // smem 38, 69, 133 KB
};

struct Shape {
  int b, t, hq, hkv, group;
  float scale;
};

// ---- primitives --------------------------------------------------------------------------------------
__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Volatile with a memory clobber: never moved across the barriers that order the tile writes.
__device__ __forceinline__ void ldsm_x4(uint32_t addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}

// c += A·B, one m16n8k16 bf16 product with fp32 accumulation.
__device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats rounded to bf16 (nearest even), lo in the low half.
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}

__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// The A fragment of P (or dS) for the 16 columns 16·kk .. 16·kk + 15 of a C-fragment row block.
__device__ __forceinline__ void c_to_a(const float (&c0)[4], const float (&c1)[4], uint32_t (&a)[4]) {
  a[0] = pack_bf16(c0[0], c0[1]);
  a[1] = pack_bf16(c0[2], c0[3]);
  a[2] = pack_bf16(c1[0], c1[1]);
  a[3] = pack_bf16(c1[2], c1[3]);
}

// ldmatrix row addresses of a 16×16 block at (row0, col0) of a bf16 tile with pitch P:
//   a_addr: the four matrices in A order (rows 0-7 / 8-15 first, then cols 8-15);
//   b_addr: B fragments of two n-tiles whose n index is the tile row (K in S = Q·Kᵀ):
//           registers 0, 1 = (b0, b1) of rows row0..+7, registers 2, 3 of rows row0+8..+15;
//   t_addr: with .trans, B fragments of two n-tiles whose k index is the tile row (V in O = P·V):
//           registers 0, 1 = (b0, b1) of cols col0..+7, registers 2, 3 of cols col0+8..+15.
template <int P>
__device__ __forceinline__ uint32_t a_addr(uint32_t base, int row0, int col0, int lane) {
  return base + 2u * static_cast<uint32_t>((row0 + (lane & 7) + ((lane >> 3) & 1) * 8) * P + col0 + ((lane >> 4) & 1) * 8);
}
template <int P>
__device__ __forceinline__ uint32_t b_addr(uint32_t base, int row0, int col0, int lane) {
  return base + 2u * static_cast<uint32_t>((row0 + (lane & 7) + ((lane >> 4) & 1) * 8) * P + col0 + ((lane >> 3) & 1) * 8);
}
template <int P>
__device__ __forceinline__ uint32_t t_addr(uint32_t base, int row0, int col0, int lane) {
  return base + 2u * static_cast<uint32_t>((row0 + (lane & 7) + ((lane >> 3) & 1) * 8) * P + col0 + ((lane >> 4) & 1) * 8);
}

__device__ __forceinline__ float2 load2(const float* p, bool vec2) {
  if (vec2) return __ldg(reinterpret_cast<const float2*>(p));
  return make_float2(__ldg(p), __ldg(p + 1));
}
__device__ __forceinline__ float2 load2(const __nv_bfloat16* p, bool vec2) {
  if (vec2) return __bfloat1622float2(__ldg(reinterpret_cast<const __nv_bfloat162*>(p)));
  return make_float2(__bfloat162float(__ldg(p)), __bfloat162float(__ldg(p + 1)));
}

// A fragments of the 16 rows [r0, r0 + 16) of a head slice (element (r, e) at base[r·ld + e])
// straight from global memory, rounded to bf16; rows at or past t read as zeros.
template <int D, class T>
__device__ __forceinline__ void load_a_global(uint32_t (&a)[Tc<D>::kSteps][4], const T* __restrict__ base,
                                              int64_t ld, int r0, int t, bool vec2, int lane) {
  const int g = lane >> 2, c = (lane & 3) * 2;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int row = r0 + g + 8 * half;
    const bool in = row < t;
    const T* p = base + static_cast<int64_t>(in ? row : 0) * ld;
#pragma unroll
    for (int kk = 0; kk < Tc<D>::kSteps; ++kk)
#pragma unroll
      for (int hi = 0; hi < 2; ++hi) {
        const float2 x = in ? load2(p + 16 * kk + 8 * hi + c, vec2) : make_float2(0.0f, 0.0f);
        a[kk][half + 2 * hi] = pack_bf16(x.x, x.y);
      }
  }
}

// The A fragments of 16 rows of a bf16 shared tile.
template <int D>
__device__ __forceinline__ void load_a_smem(uint32_t (&a)[Tc<D>::kSteps][4], uint32_t tile, int row0, int lane) {
#pragma unroll
  for (int kk = 0; kk < Tc<D>::kSteps; ++kk) ldsm_x4(a_addr<Tc<D>::kPitch>(tile, row0, 16 * kk, lane), a[kk]);
}

// Issues the cp.async copy of rows [row0, row0 + kTile) of a head slice into a staging tile
// [kTile][D] of the source's type; rows at or past t are zero-filled (the source is then not
// read). 16-byte copies when `vec`; otherwise 4-byte copies (fp32) or plain loads (bf16).
template <int D, class T>
__device__ __forceinline__ void stage_tile(T* __restrict__ dst, const T* __restrict__ base, int64_t ld,
                                           int row0, int t, bool vec) {
  constexpr int kPer = 16 / static_cast<int>(sizeof(T));  // elements per 16-byte copy
  constexpr int kVecs = D / kPer, kIters = kTile * kVecs / kThreads, kRowStep = kThreads / kVecs;
  static_assert(kTile * kVecs % kThreads == 0 && kThreads % kVecs == 0, "whole iterations");
  const int r = static_cast<int>(threadIdx.x) / kVecs, c = (static_cast<int>(threadIdx.x) % kVecs) * kPer;
  // One pointer stepped by kRowStep rows (not one live pointer per iteration).
  const T* src = base + static_cast<int64_t>(row0 + r) * ld + c;
  const int64_t step = static_cast<int64_t>(kRowStep) * ld;
  T* d = dst + r * D + c;
  int left = t - row0 - r;  // rows of this thread's first copy that remain below t
#pragma unroll
  for (int it = 0; it < kIters; ++it) {
    const bool in = left > 0;
    if (vec) {
      __pipeline_memcpy_async(d, in ? src : base, 16, in ? 0 : 16);
    } else if constexpr (sizeof(T) == 4) {
#pragma unroll
      for (int u = 0; u < kPer; ++u) __pipeline_memcpy_async(d + u, in ? src + u : base, 4, in ? 0 : 4);
    } else {
#pragma unroll
      for (int u = 0; u < kPer; ++u) d[u] = in ? src[u] : T{};  // seen after the caller's barrier
    }
    src += step;
    d += kRowStep * D;
    left -= kRowStep;
  }
}

// kTile floats of a per-row statistic (lse or Δ), zero past t; 64 threads issue them.
__device__ __forceinline__ void stage_stat(float* __restrict__ dst, const float* __restrict__ src, int row0, int t,
                                           int i) {
  const bool in = row0 + i < t;
  __pipeline_memcpy_async(dst + i, in ? src + row0 + i : src, 4, in ? 0 : 4);
}

// Staging tile ([kTile][D]) → bf16 tile [kTile][kPitch]: rounded from fp32, copied from bf16.
template <int D>
__device__ __forceinline__ void convert_tile(uint16_t* __restrict__ dst, const __nv_bfloat16* __restrict__ src) {
  constexpr int kVecs = D / 4, kIters = kTile * kVecs / kThreads;
#pragma unroll 2
  for (int it = 0; it < kIters; ++it) {
    const int idx = it * kThreads + static_cast<int>(threadIdx.x);
    const int r = idx / kVecs, c = (idx % kVecs) * 4;
    *reinterpret_cast<uint2*>(dst + r * Tc<D>::kPitch + c) = *reinterpret_cast<const uint2*>(src + r * D + c);
  }
}
template <int D>
__device__ __forceinline__ void convert_tile(uint16_t* __restrict__ dst, const float* __restrict__ src) {
  constexpr int kVecs = D / 4, kIters = kTile * kVecs / kThreads;
  // Two at a time: fully unrolled, all kIters float4 loads are hoisted ahead of the stores and
  // hold 4·kIters registers next to the accumulators.
#pragma unroll 2
  for (int it = 0; it < kIters; ++it) {
    const int idx = it * kThreads + static_cast<int>(threadIdx.x);
    const int r = idx / kVecs, c = (idx % kVecs) * 4;
    const float4 x = *reinterpret_cast<const float4*>(src + r * D + c);
    *reinterpret_cast<uint2*>(dst + r * Tc<D>::kPitch + c) = make_uint2(pack_bf16(x.x, x.y), pack_bf16(x.z, x.w));
  }
}

// Two values of an output row (columns col, col + 1), rounded once for bf16 storage.
__device__ __forceinline__ void store2(float* p, float x, float y, bool vec2) {
  if (vec2) {
    *reinterpret_cast<float2*>(p) = make_float2(x, y);
  } else {
    p[0] = x;
    p[1] = y;
  }
}
__device__ __forceinline__ void store2(__nv_bfloat16* p, float x, float y, bool vec2) {
  if (vec2) {
    *reinterpret_cast<__nv_bfloat162*>(p) = __floats2bfloat162_rn(x, y);
  } else {
    p[0] = __float2bfloat16_rn(x);
    p[1] = __float2bfloat16_rn(y);
  }
}

// ---- forward -----------------------------------------------------------------------------------------
// One block per (64 query rows, batch · query head). Block order: head-major (the heads of a kv
// group adjacent), the heaviest query tile of a head first: the blocks resident at a time then
// cover a few heads whole and read each K, V tile from L2 rather than HBM (at B=16, T=1024,
// 12 heads the fp32 K, V are 100 MB, twice the L2; query-tile-major order would stream them from
// memory once per query tile). Key tiles of 64
// from 0 up to the diagonal tile (the only one with masked keys: keys past the block's last
// query, and thus past t, are never visited except there).
template <int D, class T>
__global__ void __launch_bounds__(kThreads, Tc<D>::kFwdBlocks)
    attention_tc_forward_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                                int64_t ld_q, int64_t ld_kv, T* __restrict__ out, float* __restrict__ lse, Shape sh,
                                bool vec_q2, bool vec_kv, bool vec_out2) {
  using C = Tc<D>;
  constexpr int kP = C::kPitch;
  extern __shared__ float4 smem_tc[];
  uint16_t* const kb = reinterpret_cast<uint16_t*>(smem_tc);
  uint16_t* const vb = kb + kTile * kP;
  T* const ks = reinterpret_cast<T*>(vb + kTile * kP);
  T* const vs = ks + kTile * D;
  const uint32_t kb_s = smem_u32(kb), vb_s = smem_u32(vb);

  const int tid = static_cast<int>(threadIdx.x), warp = tid >> 5, lane = tid & 31, tq = lane & 3;
  const int n_tiles = (sh.t + kTile - 1) / kTile;
  const int qt = n_tiles - 1 - static_cast<int>(blockIdx.x) % n_tiles;
  const int bh = static_cast<int>(blockIdx.x) / n_tiles, bb = bh / sh.hq, h = bh % sh.hq, g = h / sh.group;
  const int q0 = qt * kTile;
  const T* kbase = k + static_cast<int64_t>(bb) * sh.t * ld_kv + static_cast<int64_t>(g) * D;
  const T* vbase = v + static_cast<int64_t>(bb) * sh.t * ld_kv + static_cast<int64_t>(g) * D;

  stage_tile<D, T>(ks, kbase, ld_kv, 0, sh.t, vec_kv);
  stage_tile<D, T>(vs, vbase, ld_kv, 0, sh.t, vec_kv);
  __pipeline_commit();
  uint32_t qf[C::kSteps][4];
  load_a_global<D, T>(qf, q + static_cast<int64_t>(bb) * sh.t * ld_q + static_cast<int64_t>(h) * D, ld_q,
                   q0 + 16 * warp, sh.t, vec_q2, lane);

  float o[C::kDTiles][4];
#pragma unroll
  for (int dt = 0; dt < C::kDTiles; ++dt)
#pragma unroll
    for (int e = 0; e < 4; ++e) o[dt][e] = 0.0f;
  float m[2] = {kNegInf, kNegInf};  // running max of rows (row0, row0 + 8), in units of log2: max s·scale·log2(e)
  float l[2] = {0.0f, 0.0f};        // this thread's part of the running row sums
  const float sl2 = sh.scale * kLog2e;
  const int row0 = q0 + 16 * warp + (lane >> 2);

  for (int jt = 0; jt <= qt; ++jt) {
    __pipeline_wait_prior(0);
    __syncthreads();  // this tile's K, V staged; every warp is done with the previous bf16 tiles
    convert_tile<D>(kb, ks);
    convert_tile<D>(vb, vs);
    __syncthreads();  // bf16 tiles ready; staging free
    if (jt < qt) {
      stage_tile<D, T>(ks, kbase, ld_kv, (jt + 1) * kTile, sh.t, vec_kv);
      stage_tile<D, T>(vs, vbase, ld_kv, (jt + 1) * kTile, sh.t, vec_kv);
    }
    __pipeline_commit();
    const int j0 = jt * kTile;

    // S = Q·Kᵀ: 16 rows × 64 keys per warp.
    float s[8][4];
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[nt][e] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < C::kSteps; ++kk)
#pragma unroll
      for (int np = 0; np < 4; ++np) {
        uint32_t b[4];
        ldsm_x4(b_addr<kP>(kb_s, 16 * np, 16 * kk, lane), b);
        mma(s[2 * np], qf[kk], b[0], b[1]);
        mma(s[2 * np + 1], qf[kk], b[2], b[3]);
      }
    if (jt == qt) {
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          if (j0 + 8 * nt + 2 * tq + (e & 1) > row0 + 8 * (e >> 1)) s[nt][e] = kNegInf;
    }

    // Online softmax (rows shared by the 4 lanes of a quad).
    float mx[2] = {kNegInf, kNegInf};
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
      mx[0] = fmaxf(mx[0], fmaxf(s[nt][0], s[nt][1]));
      mx[1] = fmaxf(mx[1], fmaxf(s[nt][2], s[nt][3]));
    }
    float neg_m[2], alpha[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(kFull, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(kFull, mx[r], 2));
      const float m_new = fmaxf(m[r], __fmul_rn(mx[r], sl2));  // scale > 0: max commutes with it
      const float m_use = m_new == kNegInf ? 0.0f : m_new;      // a row with nothing visible yet
      alpha[r] = ex2(__fsub_rn(m[r], m_use));                    // 0 while m was −inf
      m[r] = m_new;
      neg_m[r] = -m_use;
      l[r] = __fmul_rn(l[r], alpha[r]);
    }
#pragma unroll
    for (int dt = 0; dt < C::kDTiles; ++dt) {
      o[dt][0] = __fmul_rn(o[dt][0], alpha[0]);
      o[dt][1] = __fmul_rn(o[dt][1], alpha[0]);
      o[dt][2] = __fmul_rn(o[dt][2], alpha[1]);
      o[dt][3] = __fmul_rn(o[dt][3], alpha[1]);
    }
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[nt][e] = ex2(__fmaf_rn(s[nt][e], sl2, neg_m[e >> 1]));  // masked: ex2(−inf) = 0
        l[e >> 1] = __fadd_rn(l[e >> 1], s[nt][e]);
      }

    // O += P·V.
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      uint32_t a[4];
      c_to_a(s[2 * kk], s[2 * kk + 1], a);
#pragma unroll
      for (int dp = 0; dp < C::kSteps; ++dp) {
        uint32_t b[4];
        ldsm_x4_t(t_addr<kP>(vb_s, 16 * kk, 16 * dp, lane), b);
        mma(o[2 * dp], a, b[0], b[1]);
        mma(o[2 * dp + 1], a, b[2], b[3]);
      }
    }
  }

  const int64_t ld_out = static_cast<int64_t>(sh.hq) * D;
#pragma unroll
  for (int r = 0; r < 2; ++r) {  // the quad's parts of the row sums, before any lane branches off
    l[r] = __fadd_rn(l[r], __shfl_xor_sync(kFull, l[r], 1));
    l[r] = __fadd_rn(l[r], __shfl_xor_sync(kFull, l[r], 2));
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = row0 + 8 * r;
    if (row >= sh.t) continue;
    const float inv = 1.0f / l[r];  // l ≥ 1: the row's maximum contributes ex2(0)
    T* dst = out + (static_cast<int64_t>(bb) * sh.t + row) * ld_out + static_cast<int64_t>(h) * D + 2 * tq;
#pragma unroll
    for (int dt = 0; dt < C::kDTiles; ++dt)
      store2(dst + 8 * dt, __fmul_rn(o[dt][2 * r], inv), __fmul_rn(o[dt][2 * r + 1], inv), vec_out2);
    if (tq == 0)
      lse[(static_cast<int64_t>(bb) * sh.hq + h) * sh.t + row] = __fadd_rn(__fmul_rn(m[r], kLn2), logf(l[r]));
  }
}

// ---- backward ----------------------------------------------------------------------------------------
// Δ[b, h, t] = Σ_e dO·O in fp32: D/4 lanes per (row, head), a float4 each, then a butterfly.
// (row, head) pairs are adjacent D-float chunks of the contiguous [B·T, Hq·D] buffers.
__device__ __forceinline__ float4 load4(const float* p, bool vec) {
  if (vec) return __ldg(reinterpret_cast<const float4*>(p));
  return make_float4(__ldg(p), __ldg(p + 1), __ldg(p + 2), __ldg(p + 3));
}
__device__ __forceinline__ float4 load4(const __nv_bfloat16* p, bool vec) {
  const float2 a = load2(p, vec), b = load2(p + 2, vec);
  return make_float4(a.x, a.y, b.x, b.y);
}

template <int D, class T>
__global__ void attention_tc_delta_kernel(const T* __restrict__ dout, const T* __restrict__ out,
                                          float* __restrict__ delta, int64_t pairs, int t, int hq, bool vec) {
  constexpr int kLanes = D / 4;  // 8, 16 or 32: groups never straddle a warp
  const int64_t gid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t pair = gid / kLanes;
  const int part = static_cast<int>(gid % kLanes);
  float s = 0.0f;
  if (pair < pairs) {
    const float4 x = load4(dout + pair * D + 4 * part, vec), y = load4(out + pair * D + 4 * part, vec);
    s = __fmaf_rn(x.x, y.x, s);
    s = __fmaf_rn(x.y, y.y, s);
    s = __fmaf_rn(x.z, y.z, s);
    s = __fmaf_rn(x.w, y.w, s);
  }
#pragma unroll
  for (int off = kLanes / 2; off > 0; off >>= 1) s = __fadd_rn(s, __shfl_xor_sync(kFull, s, off));
  if (pair < pairs && part == 0) {
    const int64_t row = pair / hq;
    const int64_t h = pair % hq;
    const int64_t bb = row / t, tt = row % t;
    delta[(bb * hq + h) * t + tt] = s;
  }
}

// dQ for 64 query rows of one (batch, query head), blocks in the forward's order: key tiles 0 .. diagonal in order,
// dQ += dS·K with dS = P ⊙ (dP − Δ), P = exp(s·scale − lse), dP = dO·Vᵀ; scaled once at the end.
template <int D, class T>
__global__ void __launch_bounds__(kThreads, Tc<D>::kFwdBlocks)
    attention_tc_dq_kernel(const T* __restrict__ dout, const T* __restrict__ q, const T* __restrict__ k,
                           const T* __restrict__ v, int64_t ld_q, int64_t ld_kv, const float* __restrict__ lse,
                           const float* __restrict__ delta, T* __restrict__ dq, int64_t ld_dq, Shape sh,
                           bool vec_q2, bool vec_kv, bool vec_do2, bool vec_dq2) {
  using C = Tc<D>;
  constexpr int kP = C::kPitch;
  extern __shared__ float4 smem_tc[];
  uint16_t* const kb = reinterpret_cast<uint16_t*>(smem_tc);
  uint16_t* const vb = kb + kTile * kP;
  T* const ks = reinterpret_cast<T*>(vb + kTile * kP);
  T* const vs = ks + kTile * D;
  const uint32_t kb_s = smem_u32(kb), vb_s = smem_u32(vb);

  const int tid = static_cast<int>(threadIdx.x), warp = tid >> 5, lane = tid & 31, tq = lane & 3;
  const int n_tiles = (sh.t + kTile - 1) / kTile;
  const int qt = n_tiles - 1 - static_cast<int>(blockIdx.x) % n_tiles;
  const int bh = static_cast<int>(blockIdx.x) / n_tiles, bb = bh / sh.hq, h = bh % sh.hq, g = h / sh.group;
  const int q0 = qt * kTile;
  const int64_t ld_do = static_cast<int64_t>(sh.hq) * D;
  const T* kbase = k + static_cast<int64_t>(bb) * sh.t * ld_kv + static_cast<int64_t>(g) * D;
  const T* vbase = v + static_cast<int64_t>(bb) * sh.t * ld_kv + static_cast<int64_t>(g) * D;
  const int64_t stat = (static_cast<int64_t>(bb) * sh.hq + h) * sh.t;

  stage_tile<D, T>(ks, kbase, ld_kv, 0, sh.t, vec_kv);
  stage_tile<D, T>(vs, vbase, ld_kv, 0, sh.t, vec_kv);
  __pipeline_commit();
  uint32_t qf[C::kSteps][4], dof[C::kSteps][4];
  load_a_global<D, T>(qf, q + static_cast<int64_t>(bb) * sh.t * ld_q + static_cast<int64_t>(h) * D, ld_q,
                   q0 + 16 * warp, sh.t, vec_q2, lane);
  load_a_global<D, T>(dof, dout + static_cast<int64_t>(bb) * sh.t * ld_do + static_cast<int64_t>(h) * D, ld_do,
                   q0 + 16 * warp, sh.t, vec_do2, lane);
  const int row0 = q0 + 16 * warp + (lane >> 2);
  const float sl2 = sh.scale * kLog2e;
  float neg_l2[2], dl[2];  // −lse·log2(e) and Δ of rows (row0, row0 + 8); 0 past t (all finite)
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = row0 + 8 * r;
    neg_l2[r] = row < sh.t ? -__fmul_rn(__ldg(lse + stat + row), kLog2e) : 0.0f;
    dl[r] = row < sh.t ? __ldg(delta + stat + row) : 0.0f;
  }
  float acc[C::kDTiles][4];
#pragma unroll
  for (int dt = 0; dt < C::kDTiles; ++dt)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[dt][e] = 0.0f;

  for (int jt = 0; jt <= qt; ++jt) {
    __pipeline_wait_prior(0);
    __syncthreads();
    convert_tile<D>(kb, ks);
    convert_tile<D>(vb, vs);
    __syncthreads();
    if (jt < qt) {
      stage_tile<D, T>(ks, kbase, ld_kv, (jt + 1) * kTile, sh.t, vec_kv);
      stage_tile<D, T>(vs, vbase, ld_kv, (jt + 1) * kTile, sh.t, vec_kv);
    }
    __pipeline_commit();
    const int j0 = jt * kTile;
    // Not unrolled: the two chunks' scores would be interleaved and kept live together.
#pragma unroll 1
    for (int c = 0; c < kTile / kSub; ++c) {
      const int kc = kSub * c;  // key columns kc .. kc + 31 of the tile
      float s[4][4], dp[4][4];
#pragma unroll
      for (int nt = 0; nt < 4; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[nt][e] = dp[nt][e] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < C::kSteps; ++kk)
#pragma unroll
        for (int np = 0; np < 2; ++np) {
          uint32_t b[4];
          ldsm_x4(b_addr<kP>(kb_s, kc + 16 * np, 16 * kk, lane), b);
          mma(s[2 * np], qf[kk], b[0], b[1]);
          mma(s[2 * np + 1], qf[kk], b[2], b[3]);
          ldsm_x4(b_addr<kP>(vb_s, kc + 16 * np, 16 * kk, lane), b);
          mma(dp[2 * np], dof[kk], b[0], b[1]);
          mma(dp[2 * np + 1], dof[kk], b[2], b[3]);
        }
      // dS in place of S; masked entries are selected to 0 (whatever their P would be).
#pragma unroll
      for (int nt = 0; nt < 4; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int r = e >> 1;
          const float p = ex2(__fmaf_rn(s[nt][e], sl2, neg_l2[r]));
          const float ds = __fmul_rn(p, __fsub_rn(dp[nt][e], dl[r]));
          const bool live = jt < qt || j0 + kc + 8 * nt + 2 * tq + (e & 1) <= row0 + 8 * r;
          s[nt][e] = live ? ds : 0.0f;
        }
      // dQ += dS·K.
#pragma unroll
      for (int kk = 0; kk < kSub / 16; ++kk) {
        uint32_t a[4];
        c_to_a(s[2 * kk], s[2 * kk + 1], a);
#pragma unroll
        for (int dp2 = 0; dp2 < C::kSteps; ++dp2) {
          uint32_t b[4];
          ldsm_x4_t(t_addr<kP>(kb_s, kc + 16 * kk, 16 * dp2, lane), b);
          mma(acc[2 * dp2], a, b[0], b[1]);
          mma(acc[2 * dp2 + 1], a, b[2], b[3]);
        }
      }
    }
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = row0 + 8 * r;
    if (row >= sh.t) continue;
    T* dst = dq + (static_cast<int64_t>(bb) * sh.t + row) * ld_dq + static_cast<int64_t>(h) * D + 2 * tq;
#pragma unroll
    for (int dt = 0; dt < C::kDTiles; ++dt)
      store2(dst + 8 * dt, __fmul_rn(acc[dt][2 * r], sh.scale), __fmul_rn(acc[dt][2 * r + 1], sh.scale), vec_dq2);
  }
}

// dK, dV for 64 key rows of one (batch, kv head). Block order: kv-head-major, lowest key tile
// (most queries) first, so that the blocks of a head, resident together, share its Q, dO tiles
// through L2. Over the
// group's query heads in order, then query tiles from the diagonal on, dV += Pᵀ·dO and
// dK += dSᵀ·Q. The products are computed transposed (key rows, query columns) so that each
// warp's accumulator rows are its 16 keys.
template <int D, class T>
__global__ void __launch_bounds__(kThreads, Tc<D>::kDkvBlocks)
    attention_tc_dkv_kernel(const T* __restrict__ dout, const T* __restrict__ q, const T* __restrict__ k,
                            const T* __restrict__ v, int64_t ld_q, int64_t ld_kv, const float* __restrict__ lse,
                            const float* __restrict__ delta, T* __restrict__ dk, T* __restrict__ dv,
                            int64_t ld_dkv, Shape sh, bool vec_q, bool vec_kv, bool vec_do, bool vec_dkv2) {
  using C = Tc<D>;
  constexpr int kP = C::kPitch, kCols = C::kDkvSub;
  extern __shared__ float4 smem_tc[];
  uint16_t* const kb = reinterpret_cast<uint16_t*>(smem_tc);
  uint16_t* const vb = kb + kTile * kP;
  uint16_t* const qb = vb + kTile * kP;
  uint16_t* const dob = qb + kTile * kP;
  // The staging tiles are sized for fp32 (Tc::kDkvSmem); bf16 staging uses the first half.
  T* const qs = reinterpret_cast<T*>(dob + kTile * kP);
  T* const dos = qs + kTile * D;
  float* const lse_s = reinterpret_cast<float*>(qs) + 2 * kTile * D;  // −lse·log2(e) of the current query tile
  float* const dl_s = lse_s + kTile;     // Δ of the current query tile
  float* const lse_st = dl_s + kTile;    // staging of the next tile's lse, Δ
  float* const dl_st = lse_st + kTile;
  const uint32_t kb_s = smem_u32(kb), vb_s = smem_u32(vb), qb_s = smem_u32(qb), dob_s = smem_u32(dob);

  const int tid = static_cast<int>(threadIdx.x), warp = tid >> 5, lane = tid & 31, tq = lane & 3;
  const int n_tiles = (sh.t + kTile - 1) / kTile;
  const int kt = static_cast<int>(blockIdx.x) % n_tiles;
  const int bg = static_cast<int>(blockIdx.x) / n_tiles, bb = bg / sh.hkv, g = bg % sh.hkv;
  const int k0 = kt * kTile;
  const int64_t ld_do = static_cast<int64_t>(sh.hq) * D;
  const T* qbatch = q + static_cast<int64_t>(bb) * sh.t * ld_q;
  const T* dobatch = dout + static_cast<int64_t>(bb) * sh.t * ld_do;
  const int nq = n_tiles - kt;      // query tiles per head: the diagonal one and those after it
  const int items = sh.group * nq;  // (query head, query tile) pairs, head-major

  // Q, dO tile, lse and Δ of item `it` into the staging buffers (one commit batch by the caller).
  auto stage_item = [&](int it) {
    const int h = g * sh.group + it / nq, i0 = (kt + it % nq) * kTile;
    stage_tile<D, T>(qs, qbatch + static_cast<int64_t>(h) * D, ld_q, i0, sh.t, vec_q);
    stage_tile<D, T>(dos, dobatch + static_cast<int64_t>(h) * D, ld_do, i0, sh.t, vec_do);
    const int64_t stat = (static_cast<int64_t>(bb) * sh.hq + h) * sh.t;
    if (tid < kTile) stage_stat(lse_st, lse + stat, i0, sh.t, tid);
    else stage_stat(dl_st, delta + stat, i0, sh.t, tid - kTile);
  };

  // K, V through the Q, dO staging, then the first item.
  stage_tile<D, T>(qs, k + static_cast<int64_t>(bb) * sh.t * ld_kv + static_cast<int64_t>(g) * D, ld_kv, k0, sh.t,
                vec_kv);
  stage_tile<D, T>(dos, v + static_cast<int64_t>(bb) * sh.t * ld_kv + static_cast<int64_t>(g) * D, ld_kv, k0, sh.t,
                vec_kv);
  __pipeline_commit();
  __pipeline_wait_prior(0);
  __syncthreads();
  convert_tile<D>(kb, qs);
  convert_tile<D>(vb, dos);
  __syncthreads();
  stage_item(0);
  __pipeline_commit();

  uint32_t kf[C::kHoistKv ? C::kSteps : 1][4], vf[C::kHoistKv ? C::kSteps : 1][4];
  if constexpr (C::kHoistKv) {
    load_a_smem<D>(kf, kb_s, 16 * warp, lane);
    load_a_smem<D>(vf, vb_s, 16 * warp, lane);
  }
  float adk[C::kDTiles][4], adv[C::kDTiles][4];
#pragma unroll
  for (int dt = 0; dt < C::kDTiles; ++dt)
#pragma unroll
    for (int e = 0; e < 4; ++e) adk[dt][e] = adv[dt][e] = 0.0f;
  const float sl2 = sh.scale * kLog2e;
  const int key0 = k0 + 16 * warp + (lane >> 2);  // the thread's keys: key0, key0 + 8

  for (int it = 0; it < items; ++it) {
    const int i0 = (kt + it % nq) * kTile;
    __pipeline_wait_prior(0);
    __syncthreads();  // this item staged; every warp is done with the previous Q, dO, lse, Δ
    convert_tile<D>(qb, qs);
    convert_tile<D>(dob, dos);
    if (tid < kTile) lse_s[tid] = -__fmul_rn(lse_st[tid], kLog2e);
    else dl_s[tid - kTile] = dl_st[tid - kTile];
    __syncthreads();
    if (it + 1 < items) stage_item(it + 1);
    __pipeline_commit();
    const bool edge = it % nq == 0 || i0 + kTile > sh.t;  // the diagonal tile or the last one

#pragma unroll 1
    for (int c = 0; c < kTile / kCols; ++c) {
      const int qc = kCols * c;  // query columns qc .. qc + kCols − 1 of the tile
      float s[kCols / 8][4], dp[kCols / 8][4];
#pragma unroll
      for (int nt = 0; nt < kCols / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[nt][e] = dp[nt][e] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < C::kSteps; ++kk) {
        uint32_t ka[4], va[4];
        if constexpr (C::kHoistKv) {
#pragma unroll
          for (int x = 0; x < 4; ++x) {
            ka[x] = kf[kk][x];
            va[x] = vf[kk][x];
          }
        } else {
          ldsm_x4(a_addr<kP>(kb_s, 16 * warp, 16 * kk, lane), ka);
          ldsm_x4(a_addr<kP>(vb_s, 16 * warp, 16 * kk, lane), va);
        }
#pragma unroll
        for (int np = 0; np < kCols / 16; ++np) {
          uint32_t b[4];
          ldsm_x4(b_addr<kP>(qb_s, qc + 16 * np, 16 * kk, lane), b);
          mma(s[2 * np], ka, b[0], b[1]);
          mma(s[2 * np + 1], ka, b[2], b[3]);
          ldsm_x4(b_addr<kP>(dob_s, qc + 16 * np, 16 * kk, lane), b);
          mma(dp[2 * np], va, b[0], b[1]);
          mma(dp[2 * np + 1], va, b[2], b[3]);
        }
      }
      // Pᵀ in place of Sᵀ, dSᵀ in place of dPᵀ; masked entries (query < key or query ≥ t) are 0.
#pragma unroll
      for (int nt = 0; nt < kCols / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int col = qc + 8 * nt + 2 * tq + (e & 1), query = i0 + col, key = key0 + 8 * (e >> 1);
          const float p = ex2(__fmaf_rn(s[nt][e], sl2, lse_s[col]));
          const float ds = __fmul_rn(p, __fsub_rn(dp[nt][e], dl_s[col]));
          const bool live = !edge || (query >= key && query < sh.t);
          s[nt][e] = live ? p : 0.0f;
          dp[nt][e] = live ? ds : 0.0f;
        }
      // dV += Pᵀ·dO, dK += dSᵀ·Q.
#pragma unroll
      for (int kk = 0; kk < kCols / 16; ++kk) {
        uint32_t ap[4], ad[4];
        c_to_a(s[2 * kk], s[2 * kk + 1], ap);
        c_to_a(dp[2 * kk], dp[2 * kk + 1], ad);
#pragma unroll
        for (int dp2 = 0; dp2 < C::kSteps; ++dp2) {
          uint32_t b[4];
          ldsm_x4_t(t_addr<kP>(dob_s, qc + 16 * kk, 16 * dp2, lane), b);
          mma(adv[2 * dp2], ap, b[0], b[1]);
          mma(adv[2 * dp2 + 1], ap, b[2], b[3]);
          ldsm_x4_t(t_addr<kP>(qb_s, qc + 16 * kk, 16 * dp2, lane), b);
          mma(adk[2 * dp2], ad, b[0], b[1]);
          mma(adk[2 * dp2 + 1], ad, b[2], b[3]);
        }
      }
    }
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = key0 + 8 * r;
    if (row >= sh.t) continue;
    const int64_t off = (static_cast<int64_t>(bb) * sh.t + row) * ld_dkv + static_cast<int64_t>(g) * D + 2 * tq;
#pragma unroll
    for (int dt = 0; dt < C::kDTiles; ++dt) {
      store2(dk + off + 8 * dt, __fmul_rn(adk[dt][2 * r], sh.scale), __fmul_rn(adk[dt][2 * r + 1], sh.scale),
             vec_dkv2);
      store2(dv + off + 8 * dt, adv[dt][2 * r], adv[dt][2 * r + 1], vec_dkv2);
    }
  }
}

// ---- host side -----------------------------------------------------------------------------------------
// Every row start of the slice aligned to `elems` elements of T.
template <class T>
bool aligned(const T* p, int64_t ld, int elems) {
  return reinterpret_cast<uintptr_t>(p) % (sizeof(T) * static_cast<unsigned>(elems)) == 0 && ld % elems == 0;
}
// The 16-byte copies of stage_tile: 4 floats or 8 bf16.
template <class T>
constexpr int kCopyElems = 16 / static_cast<int>(sizeof(T));

Shape check_shape(const char* what, int64_t b, int64_t t, int64_t hq, int64_t hkv, int64_t d) {
  if (b < 0 || t < 0 || hq <= 0 || hkv <= 0 || d <= 0)
    fail(what, ": bad shape B=", b, " T=", t, " Hq=", hq, " Hkv=", hkv, " D=", d);
  if (hq % hkv != 0) fail(what, ": query heads Hq=", hq, " are not a multiple of kv heads Hkv=", hkv);
  if (!attention_tc_supported(d))
    fail(what, ": head dim D=", d, " is not supported by the tensor-core attention (32, 64 or 128); "
         "use attention_forward/attention_backward (fp32)");
  // Block indices and in-block row arithmetic are 32-bit.
  const int64_t tiles = (t + kTile - 1) / kTile;
  if (b * t * hq > INT32_MAX || tiles * b * hq > INT32_MAX || b * t * hq * d / 4 > INT32_MAX)
    fail(what, ": shape B=", b, " T=", t, " Hq=", hq, " is too large");
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  return Shape{static_cast<int>(b), static_cast<int>(t), static_cast<int>(hq), static_cast<int>(hkv),
               static_cast<int>(hq / hkv), static_cast<float>(scale)};
}

void check_ld(const char* what, const char* name, int64_t ld, int64_t heads, int64_t d) {
  if (ld < heads * d) fail(what, ": row stride ", name, "=", ld, " is below ", heads, " heads × ", d);
}

template <class Kernel>
void allow_smem(Kernel kernel, size_t bytes) {
  NIBBLE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
}

template <int D, class T>
void launch_forward(const T* q, const T* k, const T* v, int64_t ld_q, int64_t ld_kv, T* out,
                    float* lse, const Shape& sh, cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>((sh.t + kTile - 1) / kTile * sh.b * sh.hq);
  constexpr int kc = kCopyElems<T>;
  allow_smem(attention_tc_forward_kernel<D, T>, Tc<D>::kFwdSmem);
  attention_tc_forward_kernel<D, T><<<blocks, kThreads, Tc<D>::kFwdSmem, stream>>>(
      q, k, v, ld_q, ld_kv, out, lse, sh, aligned(q, ld_q, 2), aligned(k, ld_kv, kc) && aligned(v, ld_kv, kc),
      aligned(out, static_cast<int64_t>(sh.hq) * D, 2));
  NIBBLE_CUDA_CHECK_LAUNCH();
}

template <int D, class T>
void launch_backward(const T* dout, const T* q, const T* k, const T* v, int64_t ld_q, int64_t ld_kv,
                     const T* out, const float* lse, T* dq, T* dk, T* dv, int64_t ld_dq,
                     int64_t ld_dkv, float* delta, const Shape& sh, cudaStream_t stream) {
  constexpr int kc = kCopyElems<T>;
  const int64_t ld_o = static_cast<int64_t>(sh.hq) * D;
  const int64_t pairs = static_cast<int64_t>(sh.b) * sh.t * sh.hq;
  constexpr int kDeltaThreads = 256;
  attention_tc_delta_kernel<D, T><<<static_cast<unsigned>((pairs * (D / 4) + kDeltaThreads - 1) / kDeltaThreads),
                                 kDeltaThreads, 0, stream>>>(dout, out, delta, pairs, sh.t, sh.hq,
                                                             aligned(dout, ld_o, 4) && aligned(out, ld_o, 4));
  NIBBLE_CUDA_CHECK_LAUNCH();

  const unsigned q_blocks = static_cast<unsigned>((sh.t + kTile - 1) / kTile * sh.b * sh.hq);
  allow_smem(attention_tc_dq_kernel<D, T>, Tc<D>::kFwdSmem);
  attention_tc_dq_kernel<D, T><<<q_blocks, kThreads, Tc<D>::kFwdSmem, stream>>>(
      dout, q, k, v, ld_q, ld_kv, lse, delta, dq, ld_dq, sh, aligned(q, ld_q, 2),
      aligned(k, ld_kv, kc) && aligned(v, ld_kv, kc), aligned(dout, ld_o, 2), aligned(dq, ld_dq, 2));
  NIBBLE_CUDA_CHECK_LAUNCH();

  const unsigned kv_blocks = static_cast<unsigned>((sh.t + kTile - 1) / kTile * sh.b * sh.hkv);
  allow_smem(attention_tc_dkv_kernel<D, T>, Tc<D>::kDkvSmem);
  attention_tc_dkv_kernel<D, T><<<kv_blocks, kThreads, Tc<D>::kDkvSmem, stream>>>(
      dout, q, k, v, ld_q, ld_kv, lse, delta, dk, dv, ld_dkv, sh, aligned(q, ld_q, kc),
      aligned(k, ld_kv, kc) && aligned(v, ld_kv, kc), aligned(dout, ld_o, kc),
      aligned(dk, ld_dkv, 2) && aligned(dv, ld_dkv, 2));
  NIBBLE_CUDA_CHECK_LAUNCH();
}

}  // namespace

bool attention_tc_supported(int64_t d) { return d == 32 || d == 64 || d == 128; }

namespace {

template <class T>
void forward_tc(const T* q, const T* k, const T* v, int64_t ld_q, int64_t ld_kv, T* out,
                          float* lse, int64_t b, int64_t t, int64_t hq, int64_t hkv, int64_t d, cudaStream_t stream) {
  constexpr const char* kWhat = "attention_forward_tc (CUDA)";
  const Shape sh = check_shape(kWhat, b, t, hq, hkv, d);
  check_ld(kWhat, "ld_q", ld_q, hq, d);
  check_ld(kWhat, "ld_kv", ld_kv, hkv, d);
  if (b == 0 || t == 0) return;
  switch (d) {
    case 32: launch_forward<32, T>(q, k, v, ld_q, ld_kv, out, lse, sh, stream); break;
    case 64: launch_forward<64, T>(q, k, v, ld_q, ld_kv, out, lse, sh, stream); break;
    default: launch_forward<128, T>(q, k, v, ld_q, ld_kv, out, lse, sh, stream); break;
  }
}

template <class T>
void backward_tc(const T* dout, const T* q, const T* k, const T* v, int64_t ld_q,
                           int64_t ld_kv, const T* out, const float* lse, T* dq, T* dk, T* dv,
                           int64_t ld_dq, int64_t ld_dkv, float* delta, int64_t b, int64_t t, int64_t hq,
                           int64_t hkv, int64_t d, cudaStream_t stream) {
  constexpr const char* kWhat = "attention_backward_tc (CUDA)";
  const Shape sh = check_shape(kWhat, b, t, hq, hkv, d);
  check_ld(kWhat, "ld_q", ld_q, hq, d);
  check_ld(kWhat, "ld_kv", ld_kv, hkv, d);
  check_ld(kWhat, "ld_dq", ld_dq, hq, d);
  check_ld(kWhat, "ld_dkv", ld_dkv, hkv, d);
  if (b == 0 || t == 0) return;
  switch (d) {
    case 32:
      launch_backward<32, T>(dout, q, k, v, ld_q, ld_kv, out, lse, dq, dk, dv, ld_dq, ld_dkv, delta, sh, stream);
      break;
    case 64:
      launch_backward<64, T>(dout, q, k, v, ld_q, ld_kv, out, lse, dq, dk, dv, ld_dq, ld_dkv, delta, sh, stream);
      break;
    default:
      launch_backward<128, T>(dout, q, k, v, ld_q, ld_kv, out, lse, dq, dk, dv, ld_dq, ld_dkv, delta, sh, stream);
      break;
  }
}

}  // namespace

void attention_forward_tc(const float* q, const float* k, const float* v, int64_t ld_q, int64_t ld_kv, float* out,
                          float* lse, int64_t b, int64_t t, int64_t hq, int64_t hkv, int64_t d, cudaStream_t stream) {
  forward_tc(q, k, v, ld_q, ld_kv, out, lse, b, t, hq, hkv, d, stream);
}
void attention_forward_tc(const bf16* q, const bf16* k, const bf16* v, int64_t ld_q, int64_t ld_kv, bf16* out,
                          float* lse, int64_t b, int64_t t, int64_t hq, int64_t hkv, int64_t d, cudaStream_t stream) {
  forward_tc(q, k, v, ld_q, ld_kv, out, lse, b, t, hq, hkv, d, stream);
}
void attention_backward_tc(const float* dout, const float* q, const float* k, const float* v, int64_t ld_q,
                           int64_t ld_kv, const float* out, const float* lse, float* dq, float* dk, float* dv,
                           int64_t ld_dq, int64_t ld_dkv, float* delta, int64_t b, int64_t t, int64_t hq,
                           int64_t hkv, int64_t d, cudaStream_t stream) {
  backward_tc(dout, q, k, v, ld_q, ld_kv, out, lse, dq, dk, dv, ld_dq, ld_dkv, delta, b, t, hq, hkv, d, stream);
}
void attention_backward_tc(const bf16* dout, const bf16* q, const bf16* k, const bf16* v, int64_t ld_q,
                           int64_t ld_kv, const bf16* out, const float* lse, bf16* dq, bf16* dk, bf16* dv,
                           int64_t ld_dq, int64_t ld_dkv, float* delta, int64_t b, int64_t t, int64_t hq,
                           int64_t hkv, int64_t d, cudaStream_t stream) {
  backward_tc(dout, q, k, v, ld_q, ld_kv, out, lse, dq, dk, dv, ld_dq, ld_dkv, delta, b, t, hq, hkv, d, stream);
}

}  // namespace nibble::cuda::ops
