// Causal grouped-query attention on the GPU, flash style (memory linear in T), fp32 SIMT.
// CUDA twin of src/ops/attention.cpp, built to reproduce its arithmetic rather than merely
// approximate it:
//
//  * Scores and every product are single fp32 FMA chains over the reduction index in
//    increasing order, starting from 0, exactly as the CPU GEMM computes each element
//    (ops.hpp: "every C element is the single fp32 FMA chain"). Each thread owns whole
//    dot products (a 4×NJ micro-tile) rather than splitting D across lanes, so the chain
//    order is the CPU's, and the accumulations over keys (forward O, dQ) and over queries
//    (dK, dV; query heads of a group outer, queries inner) run in the CPU's order too.
//    Masked probabilities are exact zeros, and fma(0, x, acc) == acc, so which masked
//    entries each side multiplies through does not matter.
//  * The forward uses key tiles of 128 aligned at multiples of 128, the CPU's kBc: the
//    running max, and hence every probability and every rescale of O and of the row sum,
//    happens at the same points with the same values. The row sum is accumulated in
//    float64 with the CPU's 8-lane order (lane_sum), read back from the probability tile.
//  * Exponentials by a device twin of ops::exp_f32 (same bits for every input); the softmax
//    arithmetic is spelled with _rn intrinsics so that no build flag can contract it into FMAs.
// What may still differ from the CPU: log() of the float64 row sum (CUDA's is within 1 ulp,
// glibc's is correctly rounded in practice), which reaches lse and out only when it moves a
// float rounding. The bit-for-bit agreement leans on the CPU's kBc = 128 and its lane_sum;
// if those change, results stay within the tested error budget but stop matching bits.
//
// Determinism: no atomics; every sum has a fixed order that depends only on the shapes.
// The backward is three launches: Δ = rowsum(dO ⊙ O) (float64, in order of e, as the CPU),
// dQ (a block owns 64 query rows and loops over keys ≤ query), and dK, dV (a block owns 64
// key rows and loops over the group's query heads, then queries ≥ key). S and dP are thus
// computed twice, the price of writing every gradient element from a single thread.
//
// Tiles are fetched with cp.async while the previous phase computes (forward: the next K
// during P·V, the next V during the next scores; dQ likewise with V and K), so no thread
// waits on global memory with registers held; dK/dV loads its Q, dO tiles synchronously
// (four products per tile hide them).
//
// Layout of the work: 256 threads; thread (ty, tx) = (tid / 16, tid % 16) owns tile rows
// 4·ty .. 4·ty + 3 and tile columns tx + 16·j, and in the accumulation products the head
// dims c·16·W + tx·W .. + W − 1 (W = min(4, D/16)). Tiles sit in shared memory with rows
// padded by 4 floats so that the 16 distinct rows a warp reads in a score product fall in
// distinct banks, and the probability tiles use pitches ≡ 4 (mod 32) with row groups
// 4 apart (16 banks apart) so that stores from the two row groups of a warp do not collide.
#include <cuda_pipeline.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <limits>

#include "core/cuda/check.cuh"
#include "nibble/error.hpp"
#include "nibble/ops/ops.hpp"
#include "ops/cuda/device_util.cuh"
#include "ops/cuda/ops_cuda.hpp"

namespace nibble::cuda::ops {
namespace {

constexpr int kThreads = 256;
constexpr int kRows = 64;       // query rows per block (key rows per block in dK/dV)
constexpr int kFwdKeys = 128;   // forward key tile: the CPU's kBc, so rescales line up
constexpr int kBwdKeys = 64;    // backward tiles (no rescaling: any size gives the same bits)
constexpr int kPad = 4;         // floats of padding per shared-memory row
constexpr int kBwdPPitch = kBwdKeys + kPad;  // probability tiles [64][68] (the forward P by halves)
constexpr unsigned kFull = 0xffffffffu;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// exp_f32: the device twin of ops::exp_f32 in ops/cuda/device_util.cuh (same bits for every input).
using dev::exp_f32;

// blockIdx.x through a volatile read, which the compiler cannot merge with an earlier one.
__device__ __forceinline__ unsigned block_index() {
  unsigned b;
  asm volatile("mov.u32 %0, %%ctaid.x;" : "=r"(b));
  return b;
}

// ---- shapes and per-D constants ------------------------------------------------------------------
struct Shape {
  int b, t, hq, hkv, group;
  float scale;
};

template <int D>
struct Cfg {
  static_assert(D == 32 || D == 64 || D == 128, "head dims 32, 64, 128");
  static constexpr int kPitch = D + kPad;      // shared row pitch of Q, K, V, dO tiles
  static constexpr int kDims = D / 16;         // head dims per thread in accumulations
  static constexpr int kW = kDims < 4 ? kDims : 4;
  static constexpr int kChunks = kDims / kW;
  // Forward: Q [64], K [128], V [128], P [64][68] (one 64-key half at a time), row max, row sum.
  static constexpr size_t kFwdSmem =
      sizeof(float) * (kRows * kPitch + 2 * kFwdKeys * kPitch + kRows * kBwdPPitch + kRows) + sizeof(double) * kRows;
  // dQ: Q, dO, K, V tiles and dS.   dK/dV: K, V, Q, dO tiles and Pᵀ, dSᵀ.
  static constexpr size_t kDqSmem = sizeof(float) * (4 * kRows * kPitch + kRows * kBwdPPitch);
  static constexpr size_t kDkvSmem = sizeof(float) * (4 * kRows * kPitch + 2 * kRows * kBwdPPitch);
  // Two blocks per SM where shared memory allows (D ≤ 64), which caps registers at 128.
  static constexpr int kMinBlocks = D <= 64 ? 2 : 1;
};

// Rows [row0, row0 + ROWS) of a head slice (element (r, e) at base[r·ld + e]) into shared
// memory with pitch D + kPad; rows at or past t are zeros (finite, and masked later).
template <int D, int ROWS>
__device__ __forceinline__ void load_tile(float* __restrict__ dst, const float* __restrict__ base, int64_t ld,
                                          int row0, int t, bool vec) {
  constexpr int kVecs = D / 4, kIters = ROWS * kVecs / kThreads;
  static_assert(ROWS * kVecs % kThreads == 0, "whole iterations");
#pragma unroll
  for (int it = 0; it < kIters; ++it) {
    const int idx = it * kThreads + static_cast<int>(threadIdx.x);
    const int r = idx / kVecs, c = (idx % kVecs) * 4;
    float4 x = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (row0 + r < t) {
      const float* src = base + static_cast<int64_t>(row0 + r) * ld + c;
      if (vec) x = __ldg(reinterpret_cast<const float4*>(src));
      else x = make_float4(__ldg(src), __ldg(src + 1), __ldg(src + 2), __ldg(src + 3));
    }
    *reinterpret_cast<float4*>(dst + r * Cfg<D>::kPitch + c) = x;
  }
}

// load_tile through cp.async (no registers held while the copy is in flight): the caller
// commits the batch, waits for it (__pipeline_wait_prior) and synchronises before reading.
template <int D, int ROWS>
__device__ __forceinline__ void copy_tile_async(float* __restrict__ dst, const float* __restrict__ base, int64_t ld,
                                                int row0, int t, bool vec) {
  constexpr int kVecs = D / 4, kIters = ROWS * kVecs / kThreads;
  static_assert(ROWS * kVecs % kThreads == 0, "whole iterations");
#pragma unroll
  for (int it = 0; it < kIters; ++it) {
    const int idx = it * kThreads + static_cast<int>(threadIdx.x);
    const int r = idx / kVecs, c = (idx % kVecs) * 4;
    const bool in = row0 + r < t;
    // Past the end: copy nothing and zero-fill (the source address is not read, but stays valid).
    const float* src = in ? base + static_cast<int64_t>(row0 + r) * ld + c : base;
    float* d = dst + r * Cfg<D>::kPitch + c;
    if (vec) {
      __pipeline_memcpy_async(d, src, 16, in ? 0 : 16);
    } else {
#pragma unroll
      for (int u = 0; u < 4; ++u) __pipeline_memcpy_async(d + u, in ? src + u : base, 4, in ? 0 : 4);
    }
  }
}

// s[i][j] = Σ_d A[4·ty + i][d] · B[tx + 16·j][d], one FMA chain per element over d = 0..D−1.
template <int D, int NJ>
__device__ __forceinline__ void tile_dot(const float* __restrict__ a, const float* __restrict__ b, int tx, int ty,
                                         float (&s)[4][NJ]) {
  constexpr int kP = Cfg<D>::kPitch;
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < NJ; ++j) s[i][j] = 0.0f;
  // Not unrolled: one step already has 4 + NJ independent loads and 16·NJ FMAs in flight, and
  // unrolling further pushes the D ≤ 64 kernels past their 128-register cap into spills.
#pragma unroll 1
  for (int d = 0; d < D; d += 4) {
    float4 av[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) av[i] = *reinterpret_cast<const float4*>(a + (4 * ty + i) * kP + d);
#pragma unroll
    for (int j = 0; j < NJ; ++j) {
      const float4 bv = *reinterpret_cast<const float4*>(b + (tx + 16 * j) * kP + d);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        s[i][j] = fmaf(av[i].x, bv.x, s[i][j]);
        s[i][j] = fmaf(av[i].y, bv.y, s[i][j]);
        s[i][j] = fmaf(av[i].z, bv.z, s[i][j]);
        s[i][j] = fmaf(av[i].w, bv.w, s[i][j]);
      }
    }
  }
}

// The thread's head dims of one shared row.
template <int D>
__device__ __forceinline__ void row_dims(const float* __restrict__ row, int tx, float (&x)[Cfg<D>::kDims]) {
  constexpr int kW = Cfg<D>::kW;
#pragma unroll
  for (int c = 0; c < Cfg<D>::kChunks; ++c) {
    const float* p = row + c * 16 * kW + tx * kW;
    if constexpr (kW == 4) {
      const float4 v = *reinterpret_cast<const float4*>(p);
      x[4 * c] = v.x; x[4 * c + 1] = v.y; x[4 * c + 2] = v.z; x[4 * c + 3] = v.w;
    } else {
      const float2 v = *reinterpret_cast<const float2*>(p);
      x[2 * c] = v.x; x[2 * c + 1] = v.y;
    }
  }
}

// acc[i][e] = fma(P[4·ty + i][j], M[j][dim e], acc[i][e]) for j = 0..n−1 in order (n % 4 == 0).
template <int D>
__device__ __forceinline__ void tile_acc(const float* __restrict__ p, int p_pitch, const float* __restrict__ m,
                                         int n, int tx, int ty, float (&acc)[4][Cfg<D>::kDims]) {
  constexpr int kP = Cfg<D>::kPitch, kE = Cfg<D>::kDims;
#pragma unroll 2
  for (int j = 0; j < n; j += 4) {
    float4 pv[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) pv[i] = *reinterpret_cast<const float4*>(p + (4 * ty + i) * p_pitch + j);
    float x[kE];
    row_dims<D>(m + (j + 0) * kP, tx, x);
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int e = 0; e < kE; ++e) acc[i][e] = fmaf(pv[i].x, x[e], acc[i][e]);
    row_dims<D>(m + (j + 1) * kP, tx, x);
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int e = 0; e < kE; ++e) acc[i][e] = fmaf(pv[i].y, x[e], acc[i][e]);
    row_dims<D>(m + (j + 2) * kP, tx, x);
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int e = 0; e < kE; ++e) acc[i][e] = fmaf(pv[i].z, x[e], acc[i][e]);
    row_dims<D>(m + (j + 3) * kP, tx, x);
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int e = 0; e < kE; ++e) acc[i][e] = fmaf(pv[i].w, x[e], acc[i][e]);
  }
}

// The thread's head dims of one output row to global memory.
template <int D>
__device__ __forceinline__ void store_dims(float* __restrict__ dst, int tx, const float (&x)[Cfg<D>::kDims], bool vec) {
  constexpr int kW = Cfg<D>::kW;
#pragma unroll
  for (int c = 0; c < Cfg<D>::kChunks; ++c) {
    float* p = dst + c * 16 * kW + tx * kW;
    if (vec) {
      if constexpr (kW == 4)
        *reinterpret_cast<float4*>(p) = make_float4(x[4 * c], x[4 * c + 1], x[4 * c + 2], x[4 * c + 3]);
      else
        *reinterpret_cast<float2*>(p) = make_float2(x[2 * c], x[2 * c + 1]);
    } else {
#pragma unroll
      for (int u = 0; u < kW; ++u) p[u] = x[kW * c + u];
    }
  }
}

// ---- forward -----------------------------------------------------------------------------------------
struct FwdState {
  float m[4];    // running max of the thread's 4 rows (replicated over the 16 lanes of a row)
  double l;      // running row sum of row `lr` (replicated over its 4 lanes)
  float lm;      // the max that l is relative to
};

// Where the forward's key tiles come from, for the prefetches issued inside forward_tile.
struct KvSource {
  const float* k;
  const float* v;
  int64_t ld;
  int kend, t;
  bool vec;
};

// Issues the copy of rows [j0, j0 + 128) (or 64 when that covers every key left) of K or V.
template <int D>
__device__ __forceinline__ void copy_key_tile(float* dst, const float* base, const KvSource& src, int j0) {
  if (src.kend - j0 <= kFwdKeys / 2) copy_tile_async<D, kFwdKeys / 2>(dst, base, src.ld, j0, src.t, src.vec);
  else copy_tile_async<D, kFwdKeys>(dst, base, src.ld, j0, src.t, src.vec);
}

// One key tile [j0, j0 + 16·NJ) for the block's 64 query rows (NJ = 4 when the tile's second
// half lies wholly above the diagonal). On entry K is in shared memory and V is on its way;
// inside, K of the next tile is fetched while P·V runs and V of the next tile while the next
// scores run. Every thread commits the same copy batches (empty ones included), so
// "all but the newest batch have landed" is __pipeline_wait_prior(1) throughout.
template <int D, int NJ>
__device__ __forceinline__ void forward_tile(const float* __restrict__ qs, float* __restrict__ ks,
                                             float* __restrict__ vs, float* __restrict__ ps, float* __restrict__ mxs,
                                             const KvSource& src, int tx, int ty, int q0, int j0, float scale,
                                             float (&o)[4][Cfg<D>::kDims], FwdState& st) {
  constexpr int kP = Cfg<D>::kPitch;
  float s[4][NJ];
  tile_dot<D, NJ>(qs, ks, tx, ty, s);
  __syncthreads();  // every score product is done with K
  if (j0 + kFwdKeys < src.kend) copy_key_tile<D>(ks, src.k, src, j0 + kFwdKeys);
  __pipeline_commit();

  float mx[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int row = q0 + 4 * ty + i;
    float rm = kNegInf;
#pragma unroll
    for (int j = 0; j < NJ; ++j)
      if (j0 + tx + 16 * j <= row) rm = fmaxf(rm, s[i][j]);
#pragma unroll
    for (int off = 1; off < 16; off <<= 1) rm = fmaxf(rm, __shfl_xor_sync(kFull, rm, off));
    // As the CPU: max of the raw scores, then scaled (rounding is monotonic), then std::max.
    const float cand = __fmul_rn(rm, scale);
    mx[i] = st.m[i] < cand ? cand : st.m[i];
#pragma unroll
    for (int j = 0; j < NJ; ++j)
      s[i][j] = j0 + tx + 16 * j <= row ? exp_f32(__fsub_rn(__fmul_rn(s[i][j], scale), mx[i])) : 0.0f;
    if (st.m[i] != kNegInf && mx[i] != st.m[i]) {
      const float alpha = exp_f32(__fsub_rn(st.m[i], mx[i]));
#pragma unroll
      for (int e = 0; e < Cfg<D>::kDims; ++e) o[i][e] = __fmul_rn(o[i][e], alpha);
    }
    st.m[i] = mx[i];
  }
  if (tx == 0)
#pragma unroll
    for (int i = 0; i < 4; ++i) mxs[4 * ty + i] = mx[i];
  __pipeline_wait_prior(1);  // this tile's V (the batch before the next K)

  // Row sum of row lr as the CPU's lane_sum over its `valid` keys: eight float64 lanes
  // (key ≡ lane mod 8, whole groups of 8), the remainder into lane 0, then
  // ((s0+s1)+(s2+s3))+((s4+s5)+(s6+s7)). Lane pair (2·lq, 2·lq+1) lives in thread lq of the
  // row's four; the butterflies give that bracketing because double addition commutes. The
  // remainder never straddles the two 64-key halves (both boundaries are multiples of 8).
  const int lr = static_cast<int>(threadIdx.x) >> 2, lq = static_cast<int>(threadIdx.x) & 3;
  const int n = min(16 * NJ, q0 + lr - j0 + 1);  // ≥ 1: j0 ≤ q0
  const int full = n & ~7;
  double a0 = 0.0, a1 = 0.0;
#pragma unroll
  for (int half = 0; half < NJ / 4; ++half) {
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) ps[(4 * ty + i) * kBwdPPitch + tx + 16 * j] = s[i][4 * half + j];
    __syncthreads();  // P (and, the first time, V and the row maxima) visible to all
    tile_acc<D>(ps, kBwdPPitch, vs + half * (kFwdKeys / 2) * kP, kFwdKeys / 2, tx, ty, o);
    const int c0 = half * (kFwdKeys / 2), c1 = min(n, c0 + kFwdKeys / 2);
    const float* pr = ps + lr * kBwdPPitch - c0;
    for (int c = c0; c < min(full, c1); c += 8) {
      a0 = __dadd_rn(a0, static_cast<double>(pr[c + 2 * lq]));
      a1 = __dadd_rn(a1, static_cast<double>(pr[c + 2 * lq + 1]));
    }
    if (lq == 0)
      for (int c = max(full, c0); c < c1; ++c) a0 = __dadd_rn(a0, static_cast<double>(pr[c]));
    __syncthreads();  // P is free again
  }
  double sum = __dadd_rn(a0, a1);
  sum = __dadd_rn(sum, __shfl_xor_sync(kFull, sum, 1));
  sum = __dadd_rn(sum, __shfl_xor_sync(kFull, sum, 2));
  const float m_new = mxs[lr];
  if (st.lm != kNegInf && m_new != st.lm) st.l = __dmul_rn(st.l, static_cast<double>(exp_f32(__fsub_rn(st.lm, m_new))));
  st.l = __dadd_rn(st.l, sum);
  st.lm = m_new;

  // V is free: fetch the next tile's while its scores are computed.
  if (j0 + kFwdKeys < src.kend) copy_key_tile<D>(vs, src.v, src, j0 + kFwdKeys);
  __pipeline_commit();
}

template <int D>
__global__ void __launch_bounds__(kThreads, Cfg<D>::kMinBlocks)
    attention_forward_kernel(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                             int64_t ld_q, int64_t ld_kv, float* __restrict__ out, float* __restrict__ lse, Shape sh,
                             bool vec_q, bool vec_kv, bool vec_out) {
  constexpr int kP = Cfg<D>::kPitch, kE = Cfg<D>::kDims;
  extern __shared__ float4 smem_f4[];
  float* const qs = reinterpret_cast<float*>(smem_f4);
  float* const ks = qs + kRows * kP;
  float* const vs = ks + kFwdKeys * kP;
  float* const ps = vs + kFwdKeys * kP;
  float* const mxs = ps + kRows * kBwdPPitch;
  double* const ls = reinterpret_cast<double*>(mxs + kRows);

  const int tid = static_cast<int>(threadIdx.x), tx = tid & 15, ty = tid >> 4;
  // Heaviest query tiles (most keys) first, every (batch, head) of a tile together.
  const int nbh = sh.b * sh.hq, n_tiles = (sh.t + kRows - 1) / kRows;
  const int q0 = (n_tiles - 1 - static_cast<int>(blockIdx.x) / nbh) * kRows;
  const int bh = static_cast<int>(blockIdx.x) % nbh, bb = bh / sh.hq, h = bh % sh.hq, g = h / sh.group;
  const float* qb = q + static_cast<int64_t>(bb) * sh.t * ld_q + static_cast<int64_t>(h) * D;
  // Keys past the tile's last row are masked for all its rows.
  const KvSource src{k + static_cast<int64_t>(bb) * sh.t * ld_kv + static_cast<int64_t>(g) * D,
                     v + static_cast<int64_t>(bb) * sh.t * ld_kv + static_cast<int64_t>(g) * D, ld_kv,
                     min(q0 + kRows, sh.t), sh.t, vec_kv};

  copy_tile_async<D, kRows>(qs, qb, ld_q, q0, sh.t, vec_q);
  copy_key_tile<D>(ks, src.k, src, 0);
  __pipeline_commit();
  copy_key_tile<D>(vs, src.v, src, 0);
  __pipeline_commit();

  float o[4][kE];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int e = 0; e < kE; ++e) o[i][e] = 0.0f;
  FwdState st{{kNegInf, kNegInf, kNegInf, kNegInf}, 0.0, kNegInf};

  for (int j0 = 0; j0 < src.kend; j0 += kFwdKeys) {
    __pipeline_wait_prior(1);  // this tile's K (and Q); its V may still be in flight
    __syncthreads();
    if (src.kend - j0 <= kFwdKeys / 2)
      forward_tile<D, kFwdKeys / 32>(qs, ks, vs, ps, mxs, src, tx, ty, q0, j0, sh.scale, o, st);
    else
      forward_tile<D, kFwdKeys / 16>(qs, ks, vs, ps, mxs, src, tx, ty, q0, j0, sh.scale, o, st);
  }

  // The block's coordinates again, from a fresh read of the block index: kept in registers
  // through the tile loop they would be spilled (D = 64 sits at the 128-register cap).
  const int blk = static_cast<int>(block_index());
  const int q0e = (n_tiles - 1 - blk / nbh) * kRows, bhe = blk % nbh, bbe = bhe / sh.hq, he = bhe % sh.hq;
  {
    const int lr = tid >> 2, lq = tid & 3;
    if (lq == 0) {
      ls[lr] = st.l;
      if (q0e + lr < sh.t)
        lse[(static_cast<int64_t>(bbe) * sh.hq + he) * sh.t + q0e + lr] =
            static_cast<float>(__dadd_rn(static_cast<double>(st.lm), log(st.l)));
    }
  }
  __syncthreads();
  const int64_t ld_out = static_cast<int64_t>(sh.hq) * D;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int row = q0e + 4 * ty + i;
    if (row >= sh.t) break;
    const float inv = static_cast<float>(__ddiv_rn(1.0, ls[4 * ty + i]));
    float x[kE];
#pragma unroll
    for (int e = 0; e < kE; ++e) x[e] = __fmul_rn(o[i][e], inv);
    store_dims<D>(out + (static_cast<int64_t>(bbe) * sh.t + row) * ld_out + static_cast<int64_t>(he) * D, tx, x,
                  vec_out);
  }
}

// ---- backward ----------------------------------------------------------------------------------------
// Δ[b, h, t] = Σ_e dO·O in float64 in order of e (each float product is exact in float64, so
// the FMA is the CPU's multiply-then-add). One thread per (row, head); (row, head) pairs are
// adjacent D-float chunks of the contiguous [B·T, Hq·D] buffers.
template <int D>
__global__ void attention_delta_kernel(const float* __restrict__ dout, const float* __restrict__ out,
                                       float* __restrict__ delta, int64_t n, int t, int hq, bool vec) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= n) return;
  const float* a = dout + idx * D;
  const float* o = out + idx * D;
  double s = 0.0;
  if (vec) {
#pragma unroll 4
    for (int e = 0; e < D; e += 4) {
      const float4 x = __ldg(reinterpret_cast<const float4*>(a + e));
      const float4 y = __ldg(reinterpret_cast<const float4*>(o + e));
      s = __fma_rn(static_cast<double>(x.x), static_cast<double>(y.x), s);
      s = __fma_rn(static_cast<double>(x.y), static_cast<double>(y.y), s);
      s = __fma_rn(static_cast<double>(x.z), static_cast<double>(y.z), s);
      s = __fma_rn(static_cast<double>(x.w), static_cast<double>(y.w), s);
    }
  } else {
    for (int e = 0; e < D; ++e) s = __fma_rn(static_cast<double>(__ldg(a + e)), static_cast<double>(__ldg(o + e)), s);
  }
  const int64_t row = idx / hq;
  const int h = static_cast<int>(idx % hq);
  const int64_t bb = row / t, tt = row % t;
  delta[(bb * hq + h) * t + tt] = static_cast<float>(s);
}

// dS = P ⊙ (dP − Δ) · scale with P = exp(s·scale − lse), as the CPU's softmax_grad_row.
__device__ __forceinline__ float dscore(float s, float dp, float lse, float delta, float scale) {
  const float p = exp_f32(__fsub_rn(__fmul_rn(s, scale), lse));
  return __fmul_rn(__fmul_rn(p, __fsub_rn(dp, delta)), scale);
}

// dQ for 64 query rows of one (batch, query head): over key tiles j0 = 0, 64, ... up to the
// diagonal, dQ[i] = fma(dS[i][j], K[j]) for j in increasing order.
template <int D>
__global__ void __launch_bounds__(kThreads, Cfg<D>::kMinBlocks)
    attention_dq_kernel(const float* __restrict__ dout, const float* __restrict__ q, const float* __restrict__ k,
                        const float* __restrict__ v, int64_t ld_q, int64_t ld_kv, const float* __restrict__ lse,
                        const float* __restrict__ delta, float* __restrict__ dq, int64_t ld_dq, Shape sh, bool vec_q,
                        bool vec_kv, bool vec_do, bool vec_dq) {
  constexpr int kP = Cfg<D>::kPitch, kE = Cfg<D>::kDims;
  extern __shared__ float4 smem_f4[];
  float* const qs = reinterpret_cast<float*>(smem_f4);
  float* const dos = qs + kRows * kP;
  float* const ks = dos + kRows * kP;
  float* const vs = ks + kRows * kP;
  float* const dss = vs + kRows * kP;

  const int tid = static_cast<int>(threadIdx.x), tx = tid & 15, ty = tid >> 4;
  const int nbh = sh.b * sh.hq, n_tiles = (sh.t + kRows - 1) / kRows;
  const int q0 = (n_tiles - 1 - static_cast<int>(blockIdx.x) / nbh) * kRows;
  const int bh = static_cast<int>(blockIdx.x) % nbh, bb = bh / sh.hq, h = bh % sh.hq, g = h / sh.group;
  const int64_t ld_do = static_cast<int64_t>(sh.hq) * D;
  const float* qb = q + static_cast<int64_t>(bb) * sh.t * ld_q + static_cast<int64_t>(h) * D;
  const float* dob = dout + static_cast<int64_t>(bb) * sh.t * ld_do + static_cast<int64_t>(h) * D;
  const float* kb = k + static_cast<int64_t>(bb) * sh.t * ld_kv + static_cast<int64_t>(g) * D;
  const float* vb = v + static_cast<int64_t>(bb) * sh.t * ld_kv + static_cast<int64_t>(g) * D;
  const int64_t stat = (static_cast<int64_t>(bb) * sh.hq + h) * sh.t;

  // Copy batches, in commit order: {Q, dO, V₀}, {K₀}, then per tile {V_next}, {K_next} (empty
  // past the last tile). Each tile waits for all but the newest batch: V before dP, K before S.
  copy_tile_async<D, kRows>(qs, qb, ld_q, q0, sh.t, vec_q);
  copy_tile_async<D, kRows>(dos, dob, ld_do, q0, sh.t, vec_do);
  copy_tile_async<D, kBwdKeys>(vs, vb, ld_kv, 0, sh.t, vec_kv);
  __pipeline_commit();
  copy_tile_async<D, kBwdKeys>(ks, kb, ld_kv, 0, sh.t, vec_kv);
  __pipeline_commit();
  float lrow[4], drow[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int row = q0 + 4 * ty + i;
    lrow[i] = row < sh.t ? __ldg(lse + stat + row) : 0.0f;
    drow[i] = row < sh.t ? __ldg(delta + stat + row) : 0.0f;
  }
  float acc[4][kE];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int e = 0; e < kE; ++e) acc[i][e] = 0.0f;

  const int kend = min(q0 + kRows, sh.t);
  for (int j0 = 0; j0 < kend; j0 += kBwdKeys) {
    const bool more = j0 + kBwdKeys < kend;
    __pipeline_wait_prior(1);  // V (and Q, dO)
    __syncthreads();
    float s[4][4], dp[4][4];
    tile_dot<D, 4>(dos, vs, tx, ty, dp);
    __syncthreads();  // V is free: fetch the next one while S and dQ run
    if (more) copy_tile_async<D, kBwdKeys>(vs, vb, ld_kv, j0 + kBwdKeys, sh.t, vec_kv);
    __pipeline_commit();
    __pipeline_wait_prior(1);  // K
    __syncthreads();
    tile_dot<D, 4>(qs, ks, tx, ty, s);
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const bool live = j0 + tx + 16 * j <= q0 + 4 * ty + i;
        dss[(4 * ty + i) * kBwdPPitch + tx + 16 * j] =
            live ? dscore(s[i][j], dp[i][j], lrow[i], drow[i], sh.scale) : 0.0f;
      }
    __syncthreads();
    tile_acc<D>(dss, kBwdPPitch, ks, kBwdKeys, tx, ty, acc);
    __syncthreads();  // K and dS are free: fetch the next K while the next dP runs
    if (more) copy_tile_async<D, kBwdKeys>(ks, kb, ld_kv, j0 + kBwdKeys, sh.t, vec_kv);
    __pipeline_commit();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int row = q0 + 4 * ty + i;
    if (row >= sh.t) break;
    store_dims<D>(dq + (static_cast<int64_t>(bb) * sh.t + row) * ld_dq + static_cast<int64_t>(h) * D, tx, acc[i],
                  vec_dq);
  }
}

// dK, dV for 64 key rows of one (batch, kv head): over the group's query heads in order, then
// query tiles from the diagonal on, dV[j] = fma(P[i][j], dO[i]) and dK[j] = fma(dS[i][j], Q[i])
// for i in increasing order. The tile products are computed transposed (key rows, query
// columns) so that a thread's accumulator rows are its score rows.
template <int D>
__global__ void __launch_bounds__(kThreads, Cfg<D>::kMinBlocks)
    attention_dkv_kernel(const float* __restrict__ dout, const float* __restrict__ q, const float* __restrict__ k,
                         const float* __restrict__ v, int64_t ld_q, int64_t ld_kv, const float* __restrict__ lse,
                         const float* __restrict__ delta, float* __restrict__ dk, float* __restrict__ dv,
                         int64_t ld_dkv, Shape sh, bool vec_q, bool vec_kv, bool vec_do, bool vec_dkv) {
  constexpr int kP = Cfg<D>::kPitch, kE = Cfg<D>::kDims;
  extern __shared__ float4 smem_f4[];
  float* const ks = reinterpret_cast<float*>(smem_f4);
  float* const vs = ks + kRows * kP;
  float* const qs = vs + kRows * kP;
  float* const dos = qs + kRows * kP;
  float* const pts = dos + kRows * kP;
  float* const dsts = pts + kRows * kBwdPPitch;

  const int tid = static_cast<int>(threadIdx.x), tx = tid & 15, ty = tid >> 4;
  // Lowest key tiles (most queries) first.
  const int nbg = sh.b * sh.hkv;
  const int k0 = static_cast<int>(blockIdx.x) / nbg * kRows;
  const int bg = static_cast<int>(blockIdx.x) % nbg, bb = bg / sh.hkv, g = bg % sh.hkv;
  const int64_t ld_do = static_cast<int64_t>(sh.hq) * D;
  load_tile<D, kRows>(ks, k + static_cast<int64_t>(bb) * sh.t * ld_kv + static_cast<int64_t>(g) * D, ld_kv, k0, sh.t,
                      vec_kv);
  load_tile<D, kRows>(vs, v + static_cast<int64_t>(bb) * sh.t * ld_kv + static_cast<int64_t>(g) * D, ld_kv, k0, sh.t,
                      vec_kv);
  float adk[4][kE], adv[4][kE];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int e = 0; e < kE; ++e) adk[i][e] = adv[i][e] = 0.0f;

  for (int hh = 0; hh < sh.group; ++hh) {
    const int h = g * sh.group + hh;
    const float* qb = q + static_cast<int64_t>(bb) * sh.t * ld_q + static_cast<int64_t>(h) * D;
    const float* dob = dout + static_cast<int64_t>(bb) * sh.t * ld_do + static_cast<int64_t>(h) * D;
    const int64_t stat = (static_cast<int64_t>(bb) * sh.hq + h) * sh.t;
    for (int i0 = k0; i0 < sh.t; i0 += kBwdKeys) {
      load_tile<D, kBwdKeys>(qs, qb, ld_q, i0, sh.t, vec_q);
      load_tile<D, kBwdKeys>(dos, dob, ld_do, i0, sh.t, vec_do);
      float lcol[4], dcol[4];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int qi = i0 + tx + 16 * j;
        lcol[j] = qi < sh.t ? __ldg(lse + stat + qi) : 0.0f;
        dcol[j] = qi < sh.t ? __ldg(delta + stat + qi) : 0.0f;
      }
      __syncthreads();
      float s[4][4], dp[4][4];
      tile_dot<D, 4>(ks, qs, tx, ty, s);
      tile_dot<D, 4>(vs, dos, tx, ty, dp);
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const int key = k0 + 4 * ty + i, qi = i0 + tx + 16 * j;
          const bool live = qi >= key && qi < sh.t;
          float p = 0.0f, ds = 0.0f;
          if (live) {
            p = exp_f32(__fsub_rn(__fmul_rn(s[i][j], sh.scale), lcol[j]));
            ds = __fmul_rn(__fmul_rn(p, __fsub_rn(dp[i][j], dcol[j])), sh.scale);
          }
          pts[(4 * ty + i) * kBwdPPitch + tx + 16 * j] = p;
          dsts[(4 * ty + i) * kBwdPPitch + tx + 16 * j] = ds;
        }
      __syncthreads();
      tile_acc<D>(pts, kBwdPPitch, dos, kBwdKeys, tx, ty, adv);
      tile_acc<D>(dsts, kBwdPPitch, qs, kBwdKeys, tx, ty, adk);
      __syncthreads();  // Q, dO, Pᵀ and dSᵀ are free for the next tile
    }
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int row = k0 + 4 * ty + i;
    if (row >= sh.t) break;
    const int64_t off = (static_cast<int64_t>(bb) * sh.t + row) * ld_dkv + static_cast<int64_t>(g) * D;
    store_dims<D>(dk + off, tx, adk[i], vec_dkv);
    store_dims<D>(dv + off, tx, adv[i], vec_dkv);
  }
}

// ---- host side -----------------------------------------------------------------------------------------
bool vec_ok(const void* p, int64_t ld) { return reinterpret_cast<uintptr_t>(p) % 16 == 0 && ld % 4 == 0; }

Shape check_shape(const char* what, int64_t b, int64_t t, int64_t hq, int64_t hkv, int64_t d) {
  if (b < 0 || t < 0 || hq <= 0 || hkv <= 0 || d <= 0)
    fail(what, ": bad shape B=", b, " T=", t, " Hq=", hq, " Hkv=", hkv, " D=", d);
  if (hq % hkv != 0) fail(what, ": query heads Hq=", hq, " are not a multiple of kv heads Hkv=", hkv);
  if (d != 32 && d != 64 && d != 128) fail(what, ": head dim D=", d, " is not supported (32, 64 or 128)");
  // Block indices and in-block row arithmetic are 32-bit.
  const int64_t tiles = (t + kRows - 1) / kRows;
  if (b * t * hq > INT32_MAX || tiles * b * hq > INT32_MAX)
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

template <int D>
void launch_forward(const float* q, const float* k, const float* v, int64_t ld_q, int64_t ld_kv, float* out, float* lse,
                    const Shape& sh, cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>((sh.t + kRows - 1) / kRows * sh.b * sh.hq);
  allow_smem(attention_forward_kernel<D>, Cfg<D>::kFwdSmem);
  attention_forward_kernel<D><<<blocks, kThreads, Cfg<D>::kFwdSmem, stream>>>(
      q, k, v, ld_q, ld_kv, out, lse, sh, vec_ok(q, ld_q), vec_ok(k, ld_kv) && vec_ok(v, ld_kv), vec_ok(out, static_cast<int64_t>(sh.hq) * D));
  NIBBLE_CUDA_CHECK_LAUNCH();
}

template <int D>
void launch_backward(const float* dout, const float* q, const float* k, const float* v, int64_t ld_q, int64_t ld_kv,
                     const float* out, const float* lse, float* dq, float* dk, float* dv, int64_t ld_dq,
                     int64_t ld_dkv, float* delta, const Shape& sh, cudaStream_t stream) {
  const int64_t ld_o = static_cast<int64_t>(sh.hq) * D;
  const int64_t rows = static_cast<int64_t>(sh.b) * sh.t * sh.hq;
  attention_delta_kernel<D><<<static_cast<unsigned>((rows + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
      dout, out, delta, rows, sh.t, sh.hq, vec_ok(dout, ld_o) && vec_ok(out, ld_o));
  NIBBLE_CUDA_CHECK_LAUNCH();

  const bool vq = vec_ok(q, ld_q), vkv = vec_ok(k, ld_kv) && vec_ok(v, ld_kv), vdo = vec_ok(dout, ld_o);
  const unsigned q_blocks = static_cast<unsigned>((sh.t + kRows - 1) / kRows * sh.b * sh.hq);
  allow_smem(attention_dq_kernel<D>, Cfg<D>::kDqSmem);
  attention_dq_kernel<D><<<q_blocks, kThreads, Cfg<D>::kDqSmem, stream>>>(
      dout, q, k, v, ld_q, ld_kv, lse, delta, dq, ld_dq, sh, vq, vkv, vdo, vec_ok(dq, ld_dq));
  NIBBLE_CUDA_CHECK_LAUNCH();

  const unsigned kv_blocks = static_cast<unsigned>((sh.t + kRows - 1) / kRows * sh.b * sh.hkv);
  allow_smem(attention_dkv_kernel<D>, Cfg<D>::kDkvSmem);
  attention_dkv_kernel<D><<<kv_blocks, kThreads, Cfg<D>::kDkvSmem, stream>>>(
      dout, q, k, v, ld_q, ld_kv, lse, delta, dk, dv, ld_dkv, sh, vq, vkv, vdo,
      vec_ok(dk, ld_dkv) && vec_ok(dv, ld_dkv));
  NIBBLE_CUDA_CHECK_LAUNCH();
}

}  // namespace

void attention_forward(const float* q, const float* k, const float* v, int64_t ld_q, int64_t ld_kv, float* out,
                       float* lse, int64_t b, int64_t t, int64_t hq, int64_t hkv, int64_t d, cudaStream_t stream) {
  constexpr const char* kWhat = "attention_forward (CUDA)";
  const Shape sh = check_shape(kWhat, b, t, hq, hkv, d);
  check_ld(kWhat, "ld_q", ld_q, hq, d);
  check_ld(kWhat, "ld_kv", ld_kv, hkv, d);
  if (b == 0 || t == 0) return;
  switch (d) {
    case 32: launch_forward<32>(q, k, v, ld_q, ld_kv, out, lse, sh, stream); break;
    case 64: launch_forward<64>(q, k, v, ld_q, ld_kv, out, lse, sh, stream); break;
    default: launch_forward<128>(q, k, v, ld_q, ld_kv, out, lse, sh, stream); break;
  }
}

void attention_backward(const float* dout, const float* q, const float* k, const float* v, int64_t ld_q,
                        int64_t ld_kv, const float* out, const float* lse, float* dq, float* dk, float* dv,
                        int64_t ld_dq, int64_t ld_dkv, float* delta, int64_t b, int64_t t, int64_t hq, int64_t hkv,
                        int64_t d, cudaStream_t stream) {
  constexpr const char* kWhat = "attention_backward (CUDA)";
  const Shape sh = check_shape(kWhat, b, t, hq, hkv, d);
  check_ld(kWhat, "ld_q", ld_q, hq, d);
  check_ld(kWhat, "ld_kv", ld_kv, hkv, d);
  check_ld(kWhat, "ld_dq", ld_dq, hq, d);
  check_ld(kWhat, "ld_dkv", ld_dkv, hkv, d);
  if (b == 0 || t == 0) return;
  switch (d) {
    case 32:
      launch_backward<32>(dout, q, k, v, ld_q, ld_kv, out, lse, dq, dk, dv, ld_dq, ld_dkv, delta, sh, stream);
      break;
    case 64:
      launch_backward<64>(dout, q, k, v, ld_q, ld_kv, out, lse, dq, dk, dv, ld_dq, ld_dkv, delta, sh, stream);
      break;
    default:
      launch_backward<128>(dout, q, k, v, ld_q, ld_kv, out, lse, dq, dk, dv, ld_dq, ld_dkv, delta, sh, stream);
      break;
  }
}

}  // namespace nibble::cuda::ops
