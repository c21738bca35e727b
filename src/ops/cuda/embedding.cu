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

// One warp per (token of the plan, tile of 32·W columns): lane l owns columns 32·W·tile + W·l.
// A token's additions are a dependent chain (the CPU's order), so a frequent token costs its
// row count times the memory latency divided by the rows in flight. The warp fetches the row
// ids of 32 rows with one coalesced load (the next 32 prefetched meanwhile) and spreads them
// with shuffles; it then issues the loads of a group of rows unconditionally (no branch
// between them, so they are all in flight at once) before adding them in order. Groups are
// kBatch rows while that many remain, then 4; a short group re-reads its last row and skips
// the surplus additions.
constexpr int kBatch = 16;

template <int W, int K>
__device__ __forceinline__ void add_rows(float (&acc)[W], const float* __restrict__ dout, int64_t c, int64_t col,
                                         int32_t ids, int first, int count) {
  float d[K][W];
#pragma unroll
  for (int i = 0; i < K; ++i) {
    const int64_t row = __shfl_sync(0xffffffffu, ids, first + (i < count ? i : count - 1));
    dev::load<W>(dout + row * c + col, d[i]);
  }
#pragma unroll
  for (int i = 0; i < K; ++i)
    if (i < count)
#pragma unroll
      for (int l = 0; l < W; ++l) acc[l] = __fadd_rn(acc[l], d[i][l]);
}

template <int W>
__global__ void __launch_bounds__(kThreads)
    embedding_backward_kernel(const int32_t* __restrict__ unique, const int32_t* __restrict__ starts,
                              const int32_t* __restrict__ order, int64_t n_unique, const float* __restrict__ dout,
                              float* __restrict__ dwte, int64_t c) {
  const int lane = threadIdx.x & 31;
  const int64_t tiles = (c + 32 * W - 1) / (32 * W);
  const int64_t items = n_unique * tiles;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (kThreads / 32);
  for (int64_t item = static_cast<int64_t>(blockIdx.x) * (kThreads / 32) + (threadIdx.x >> 5); item < items;
       item += warps) {
    const int64_t u = item / tiles;
    const int64_t col0 = (item % tiles) * 32 * W + lane * W;
    const bool live = col0 < c;
    const int64_t col = live ? col0 : 0;  // dead lanes load column 0 and store nothing
    const int32_t k0 = starts[u], k1 = starts[u + 1];
    float* dst = dwte + static_cast<int64_t>(unique[u]) * c + col;
    float acc[W];
    dev::load<W>(dst, acc);
    int32_t ids = k0 + lane < k1 ? order[k0 + lane] : 0;
    for (int32_t kb = k0; kb < k1; kb += 32) {  // warp-uniform bounds throughout
      const int32_t next = kb + 32 + lane < k1 ? order[kb + 32 + lane] : 0;
      const int cnt = k1 - kb < 32 ? k1 - kb : 32;
      int i = 0;
      for (; i + kBatch <= cnt; i += kBatch) add_rows<W, kBatch>(acc, dout, c, col, ids, i, kBatch);
      for (; i < cnt; i += 4) add_rows<W, 4>(acc, dout, c, col, ids, i, cnt - i < 4 ? cnt - i : 4);
      ids = next;
    }
    if (live) dev::store<W>(dst, acc);
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
  const int w = vec ? 4 : 1;
  const int64_t warps = n_unique * ((c + 32 * w - 1) / (32 * w));
  const unsigned grid = dev::grid_for(warps, kThreads / 32, int64_t(1) << 20);
  if (vec) embedding_backward_kernel<4><<<grid, kThreads, 0, stream>>>(unique, starts, order, n_unique, dout, dwte, c);
  else embedding_backward_kernel<1><<<grid, kThreads, 0, stream>>>(unique, starts, order, n_unique, dout, dwte, c);
  NIBBLE_CUDA_CHECK_LAUNCH();
}

}  // namespace nibble::cuda::ops
