// GEMM operands on the GPU (see operand.hpp). Memory-bound kernels: every element is read
// once and written once per stage; transposes go through 32×32 shared-memory tiles so both
// the reads and the writes are coalesced.
#include "nn/cuda/operand.hpp"

#include <cuda_bf16.h>

#include <algorithm>
#include <climits>
#include <cmath>

#include "core/cuda/check.cuh"
#include "nibble/error.hpp"
#include "ops/cuda/device_util.cuh"
#include "nibble/philox.hpp"
#include "quant/cuda/amax.cuh"
#include "quant/cuda/block_scale.cuh"
#include "quant/cuda/rht_butterfly.cuh"

namespace nibble::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 132 * 16;  // grid-stride kernels: enough blocks to fill an H100

unsigned blocks_for(int64_t n, int per_thread = 1) {
  const int64_t b = (n / per_thread + kThreads - 1) / kThreads;
  return static_cast<unsigned>(std::max<int64_t>(b, 1));
}

using ops::dev::to_float;
using ops::dev::from_float;
using bf16 = __nv_bfloat16;

// out[r, c] = src[r, c] − mean[c] (mean optional), four columns per thread.
template <class SrcT, class OutT>
__global__ void convert_rows_kernel(const SrcT* __restrict__ src, int64_t n4, int64_t cols,
                                    const float* __restrict__ mean, OutT* __restrict__ out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n4) return;
  float v[4];
  ops::dev::load<4>(src + i * 4, v);
  if (mean) {
    const int64_t c = (i * 4) % cols;
#pragma unroll
    for (int l = 0; l < 4; ++l) v[l] -= mean[c + l];
  }
  ops::dev::store<4>(out + i * 4, v);
}

// out[c, r] = src[r, c] − mean[c], through a 32×32 tile (blockDim 32×8).
template <class SrcT, class OutT>
__global__ void convert_transpose_kernel(const SrcT* __restrict__ src, int64_t rows, int64_t cols,
                                         const float* __restrict__ mean, OutT* __restrict__ out) {
  __shared__ float tile[32][33];
  const int64_t c0 = static_cast<int64_t>(blockIdx.x) * 32, r0 = static_cast<int64_t>(blockIdx.y) * 32;
  const int tx = threadIdx.x, ty = threadIdx.y;
  for (int j = ty; j < 32; j += 8) {
    const int64_t r = r0 + j, c = c0 + tx;
    float v = 0.0f;
    if (r < rows && c < cols) {
      v = to_float(src[r * cols + c]);
      if (mean) v -= mean[c];
    }
    tile[j][tx] = v;
  }
  __syncthreads();
  for (int j = ty; j < 32; j += 8) {
    const int64_t c = c0 + j, r = r0 + tx;
    if (r < rows && c < cols) out[c * rows + r] = from_float<OutT>(tile[tx][j]);
  }
}

template <class SrcT, class OutT>
void convert_launch(const SrcT* src, int64_t rows, int64_t cols, bool transpose, const float* mean, OutT* out,
                    cudaStream_t st) {
  if (rows * cols == 0) return;
  if (transpose) {
    const dim3 grid(static_cast<unsigned>((cols + 31) / 32), static_cast<unsigned>((rows + 31) / 32));
    convert_transpose_kernel<SrcT, OutT><<<grid, dim3(32, 8), 0, st>>>(src, rows, cols, mean, out);
  } else {
    NIBBLE_CHECK(cols % 4 == 0, "operand width ", cols, " must be a multiple of 4");
    const int64_t n4 = rows * cols / 4;
    convert_rows_kernel<SrcT, OutT><<<blocks_for(n4), kThreads, 0, st>>>(src, n4, cols, mean, out);
  }
  NIBBLE_CUDA_CHECK_LAUNCH();
}

// Any source type to any output type (a cast, centring and transposition as asked).
void convert_any(const void* src, GemmDtype src_type, int64_t rows, int64_t cols, bool transpose, const float* mean,
                 GemmDtype dt, void* out, cudaStream_t st) {
  const bool sb = src_type == GemmDtype::BF16, ob = dt == GemmDtype::BF16;
  if (sb && ob) convert_launch(static_cast<const bf16*>(src), rows, cols, transpose, mean, static_cast<bf16*>(out), st);
  else if (sb) convert_launch(static_cast<const bf16*>(src), rows, cols, transpose, mean, static_cast<float*>(out), st);
  else if (ob) convert_launch(static_cast<const float*>(src), rows, cols, transpose, mean, static_cast<bf16*>(out), st);
  else convert_launch(static_cast<const float*>(src), rows, cols, transpose, mean, static_cast<float*>(out), st);
}

__global__ void alpha_kernel(const float* ta, bool a_scaled, const float* tb, bool b_scaled, float* alpha) {
  *alpha = (a_scaled ? ta[1] : 1.0f) * (b_scaled ? tb[1] : 1.0f);
}

// partials[chunk, f] = Σ over the chunk's rows of x[t, f] (· weight[t] when given), float64 in
// increasing t; a second kernel adds the chunks in order. Many chunks keep every SM busy even
// when F is small (a thread per column alone would leave a 768-wide layer at 3 blocks).
template <class SrcT>
__global__ void column_sum_kernel(const SrcT* __restrict__ x, int64_t t, int64_t f, int64_t rows_per_chunk,
                                  const float* __restrict__ weight, double* __restrict__ partials) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= f) return;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * rows_per_chunk, r1 = min(t, r0 + rows_per_chunk);
  double s = 0.0;
  if (weight)
    for (int64_t r = r0; r < r1; ++r) s += static_cast<double>(to_float(x[r * f + c])) * weight[r];
  else
    for (int64_t r = r0; r < r1; ++r) s += to_float(x[r * f + c]);
  partials[static_cast<int64_t>(blockIdx.y) * f + c] = s;
}

__global__ void column_sum_finish_kernel(const double* __restrict__ partials, int64_t chunks, double divisor, int64_t f,
                                         float* __restrict__ out) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= f) return;
  double s = 0.0;
  for (int64_t i = 0; i < chunks; ++i) s += partials[i * f + c];
  out[c] = static_cast<float>(divisor == 1.0 ? s : s / divisor);
}

int64_t mean_chunks(int64_t t) { return std::clamp<int64_t>((t + 63) / 64, 1, 256); }

template <class SrcT>
void column_sum(const SrcT* x, int64_t t, int64_t f, const float* weight, double divisor, double* partials, float* out,
                cudaStream_t st) {
  const int64_t chunks = mean_chunks(t), per = (t + chunks - 1) / chunks;
  const dim3 grid(blocks_for(f), static_cast<unsigned>(chunks));
  column_sum_kernel<<<grid, kThreads, 0, st>>>(x, t, f, per, weight, partials);
  NIBBLE_CUDA_CHECK_LAUNCH();
  column_sum_finish_kernel<<<blocks_for(f), kThreads, 0, st>>>(partials, chunks, divisor, f, out);
  NIBBLE_CUDA_CHECK_LAUNCH();
}

// One warp per output row n: out[n] = Σ_k w[n, k] μ[k] (float64, fixed lane order).
__global__ void fprop_correction_kernel(const float* __restrict__ w, int64_t n, int64_t k, const float* __restrict__ mu,
                                        float* __restrict__ out) {
  const int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= n) return;
  double s = 0.0;
  for (int64_t j = lane; j < k; j += 32) s += static_cast<double>(w[row * k + j]) * mu[j];
  for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
  if (lane == 0) out[row] = static_cast<float>(s);
}

__global__ void add_column_vector_kernel(float* __restrict__ x, int64_t total, int64_t cols, const float* __restrict__ v) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < total) x[i] += v[i % cols];
}

__global__ void wgrad_correction_kernel(float* __restrict__ dw, int64_t n, int64_t k, double t, const float* __restrict__ nu,
                                        const float* __restrict__ mu) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n * k) return;
  const int64_t r = i / k, c = i % k;
  dw[i] = static_cast<float>(dw[i] + t * nu[r] * static_cast<double>(mu[c]));
}

// ---- fused transforms: (transpose,) centre, RHT, then one of two epilogues ------------------
// The RHT is the CPU's arithmetic exactly (rht.cpp / quant/cuda/rht.cu): v·sign in float64,
// butterflies in stage order with lower = a + b, upper = a − b, one rounding of t·(1/√n).
//   Fp32:     write the transformed fp32 operand and fold its tensor amax (the quantizer's
//             input, or the statistics' reference);
//   AmaxOnly: fold the tensor amax only (pass 1 of a fused quantization, see rows_quant_kernel).
enum class Emit : uint8_t { Fp32, AmaxOnly };

struct Epilogue {
  float* out = nullptr;          // Fp32
  AmaxSlot* slot = nullptr;      // where the amax is folded
};

// Row layout: groups of min(N, 32) lanes hold one N-block of a row (N = 0: no RHT, 32-blocks).
template <int N, class SrcT, Emit E>
__global__ void rows_transform_kernel(const SrcT* __restrict__ src, int64_t nblocks, int64_t cols,
                                      const float* __restrict__ mean, const float* __restrict__ signs, double scale,
                                      Epilogue ep) {
  constexpr int kB = N == 0 ? 32 : N;  // N = 0: no RHT, blocks of 32 for the amax
  constexpr int kLanes = RhtLanes<kB>::kLanes, kPerLane = RhtLanes<kB>::kPerLane;
  float m = 0.0f;
  unsigned long long bad = ULLONG_MAX;
  const int64_t total = nblocks * kLanes, stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  // grid-stride with a block-uniform trip count: every lane takes part in every shuffle
  for (int64_t g0 = static_cast<int64_t>(blockIdx.x) * blockDim.x; g0 < total; g0 += stride) {
    const int64_t g = g0 + threadIdx.x;
    const int64_t blk = g / kLanes;
    const int lane = static_cast<int>(g % kLanes);
    const bool live = blk < nblocks;
    const int64_t base = (live ? blk : 0) * kB;
    const int64_t col0 = base % cols;
    double t[kPerLane];
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int pos = lane + kLanes * i;
      float v = live ? to_float(src[base + pos]) : 0.0f;
      if (mean && live) v -= mean[col0 + pos];
      t[i] = N == 0 ? static_cast<double>(v) : static_cast<double>(v) * static_cast<double>(signs[pos]);
    }
    if constexpr (N != 0) rht_butterflies<N>(t, lane);
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int pos = lane + kLanes * i;
      const float o = N == 0 ? static_cast<float>(t[i]) : static_cast<float>(t[i] * scale);
      if (live) {
        if constexpr (E == Emit::Fp32) ep.out[base + pos] = o;
        amax_note_value(o, static_cast<unsigned long long>(base + pos), m, bad);
      }
    }
  }
  if (ep.slot) amax_fold_block(ep.slot, m, bad);
}

// Transposed layout: a 32×32 tile of src [rows, cols] is staged in shared memory; warp w writes
// output rows (src columns) c0 + w, + 8, ...: lane l holds token r0 + l, and an RHT of N ≤ 32
// along the tokens runs across groups of N lanes with shuffles.
template <int N, class SrcT, Emit E>
__global__ void transpose_transform_kernel(const SrcT* __restrict__ src, int64_t rows, int64_t cols,
                                           const float* __restrict__ mean, const float* __restrict__ signs, double scale,
                                           Epilogue ep) {
  __shared__ float tile[32][33];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t tiles_c = (cols + 31) / 32, tiles = tiles_c * ((rows + 31) / 32);
  const double sg = N == 0 ? 1.0 : static_cast<double>(signs[tx % (N == 0 ? 1 : N)]);
  float m = 0.0f;
  unsigned long long bad = ULLONG_MAX;
  for (int64_t tile_id = blockIdx.x; tile_id < tiles; tile_id += gridDim.x) {
    const int64_t c0 = (tile_id % tiles_c) * 32, r0 = (tile_id / tiles_c) * 32;
    __syncthreads();  // the previous tile's reads are done
    for (int j = ty; j < 32; j += 8) {
      const int64_t r = r0 + j, c = c0 + tx;
      float v = 0.0f;
      if (r < rows && c < cols) {
        v = to_float(src[r * cols + c]);
        if (mean) v -= mean[c];
      }
      tile[j][tx] = v;
    }
    __syncthreads();
    for (int j = ty; j < 32; j += 8) {
      const int64_t c = c0 + j, r = r0 + tx;
      double t = static_cast<double>(tile[tx][j]);
      if constexpr (N != 0) {
        double one[1] = {t * sg};  // N ≤ 32: one value per lane, lanes tx of one N-block
        rht_butterflies<N>(one, tx);
        t = one[0];
      }
      const float o = N == 0 ? static_cast<float>(t) : static_cast<float>(t * scale);
      if (r < rows && c < cols) {
        if constexpr (E == Emit::Fp32) ep.out[c * rows + r] = o;
        amax_note_value(o, static_cast<unsigned long long>(c * rows + r), m, bad);
      }
    }
  }
  if (ep.slot) amax_fold_block(ep.slot, m, bad);
}

// ---- pass 2 of a fused quantization: transform and quantize, one thread per block -----------
// A thread owns one QB-element quantization block of a row-major operand: it reads the block's
// source values, centres them, runs the RHT (N ≤ QB, N | QB) in registers and quantizes them
// with the block quantizer's code (encode_and_store: the same block scale, Philox words and
// encodings as quantizer.cu, so the CPU's bits). With pass 1 (the amax) the source is read
// twice and the GEMM operand written once — no fp32 copy written and read back.
//
// Transposed operands (wgrad's Xᵀ, dYᵀ) keep the two-kernel path (transpose_transform_kernel
// into fp32, then the block quantizer): a thread-per-block transposed variant (a 32×128
// shared-memory tile, 16 tokens per thread) measured slower on an H100 — 124m nvfp4 step 83 ms
// against 76 ms, 2026-11-23 — its 16 float64 RHT values and Philox state per thread cut the
// occupancy below what the tile's load phase needs to hide memory latency. The row-major fused
// path measured 74.4 ms against 76.1 ms (nvfp4), 83.3 against 85.0 (mxfp4).
struct QuantEpilogue {
  KernelSpec k{};
  const AmaxSlot* amax = nullptr;  // the tensor amax from pass 1
  void* out = nullptr;             // the GEMM operand [R, C]
  float* tensor = nullptr;         // amax and S_dec for the GEMM's alpha
};

// The serial butterflies of RHT-N blocks inside a thread's QB values (stage order as fwht()).
template <int QB, int N>
__device__ __forceinline__ void rht_in_thread(float (&v)[QB], const float* __restrict__ signs, double scale) {
  double t[QB];
#pragma unroll
  for (int i = 0; i < QB; ++i) t[i] = static_cast<double>(v[i]) * static_cast<double>(signs[i % N]);
#pragma unroll
  for (int h = 1; h < N; h <<= 1)
#pragma unroll
    for (int i = 0; i < QB; ++i)
      if ((i & h) == 0) {
        const double a = t[i], b = t[i + h];
        t[i] = a + b;
        t[i + h] = a - b;
      }
#pragma unroll
  for (int i = 0; i < QB; ++i) v[i] = static_cast<float>(t[i] * scale);
}

template <int QB>
__device__ __forceinline__ void quantize_block(const QuantEpilogue& e, const float (&v)[QB], uint64_t base) {
  float amax, s_enc, s_dec;
  tensor_scales(e.k, e.amax, amax, s_enc, s_dec);
  float a_b = 0.0f;
#pragma unroll
  for (int j = 0; j < QB; ++j) a_b = fmaxf(a_b, fabsf(v[j]));
  const BlockScale bs = block_scale(e.k, a_b, s_enc, s_dec);
  encode_and_store<QB>(e.k, v, base, bs, s_dec, e.out, nullptr);
  if (e.tensor && base == 0) {
    e.tensor[0] = e.k.mx ? 0.0f : amax;
    e.tensor[1] = s_dec;
  }
}

template <class SrcT, int QB, int N>
__global__ void rows_quant_kernel(const SrcT* __restrict__ src, int64_t nblk, int64_t cols,
                                  const float* __restrict__ mean, const float* __restrict__ signs, double scale,
                                  QuantEpilogue ep) {
  const int64_t blk = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (blk >= nblk) return;
  const int64_t base = blk * QB, col0 = base % cols;
  float v[QB];
#pragma unroll
  for (int j = 0; j < QB; j += 4) {
    float q[4];
    ops::dev::load<4>(src + base + j, q);
#pragma unroll
    for (int l = 0; l < 4; ++l) v[j + l] = mean ? q[l] - mean[col0 + j + l] : q[l];
  }
  if constexpr (N != 0) rht_in_thread<QB, N>(v, signs, scale);
  quantize_block<QB>(ep, v, static_cast<uint64_t>(base));
}

template <class SrcT, int QB, int N>
void launch_quant(const OperandJob& j, const SrcT* src, const QuantEpilogue& ep, cudaStream_t st) {
  const double scale = N ? 1.0 / std::sqrt(static_cast<double>(N)) : 1.0;
  const int64_t nblk = j.rows * j.cols / QB;
  rows_quant_kernel<SrcT, QB, N><<<blocks_for(nblk), kThreads, 0, st>>>(src, nblk, j.cols, j.mean, j.signs, scale, ep);
  NIBBLE_CUDA_CHECK_LAUNCH();
}

template <class SrcT, int QB>
void launch_quant_rht(const OperandJob& j, const SrcT* src, const QuantEpilogue& ep, cudaStream_t st) {
  if (j.rht == 0) launch_quant<SrcT, QB, 0>(j, src, ep, st);
  else if (j.rht == 16) launch_quant<SrcT, QB, 16>(j, src, ep, st);
  else if constexpr (QB == 32) launch_quant<SrcT, QB, 32>(j, src, ep, st);
}

// Runs a fused transform of a job with epilogue E; false when this combination has no fused
// kernel (an RHT wider than 32 along a transposed operand).
template <class SrcT, Emit E>
bool fused_transform_t(const OperandJob& j, const SrcT* src, const Epilogue& ep, cudaStream_t st) {
  const double scale = j.rht ? 1.0 / std::sqrt(static_cast<double>(j.rht)) : 1.0;
  if (j.transpose) {
    if (j.rht != 0 && j.rht != 16 && j.rht != 32) return false;
    const int64_t tiles = ((j.cols + 31) / 32) * ((j.rows + 31) / 32);
    const unsigned grid = static_cast<unsigned>(std::min<int64_t>(tiles, kMaxBlocks));
    const dim3 block(32, 8);
    if (j.rht == 0) transpose_transform_kernel<0, SrcT, E><<<grid, block, 0, st>>>(src, j.rows, j.cols, j.mean, j.signs, scale, ep);
    else if (j.rht == 16) transpose_transform_kernel<16, SrcT, E><<<grid, block, 0, st>>>(src, j.rows, j.cols, j.mean, j.signs, scale, ep);
    else transpose_transform_kernel<32, SrcT, E><<<grid, block, 0, st>>>(src, j.rows, j.cols, j.mean, j.signs, scale, ep);
  } else {
    const int b = j.rht == 0 ? 32 : j.rht;
    NIBBLE_CHECK(j.cols % b == 0, "operand width ", j.cols, " is not a multiple of ", b);
    const int64_t nblocks = j.rows * j.cols / b;
    const unsigned grid = std::min(blocks_for(nblocks * std::min(b, 32)), static_cast<unsigned>(kMaxBlocks));
    switch (j.rht) {
      case 0: rows_transform_kernel<0, SrcT, E><<<grid, kThreads, 0, st>>>(src, nblocks, j.cols, j.mean, j.signs, scale, ep); break;
      case 16: rows_transform_kernel<16, SrcT, E><<<grid, kThreads, 0, st>>>(src, nblocks, j.cols, j.mean, j.signs, scale, ep); break;
      case 32: rows_transform_kernel<32, SrcT, E><<<grid, kThreads, 0, st>>>(src, nblocks, j.cols, j.mean, j.signs, scale, ep); break;
      case 64: rows_transform_kernel<64, SrcT, E><<<grid, kThreads, 0, st>>>(src, nblocks, j.cols, j.mean, j.signs, scale, ep); break;
      default: rows_transform_kernel<128, SrcT, E><<<grid, kThreads, 0, st>>>(src, nblocks, j.cols, j.mean, j.signs, scale, ep); break;
    }
  }
  NIBBLE_CUDA_CHECK_LAUNCH();
  return true;
}

template <Emit E>
bool fused_transform(const OperandJob& j, const Epilogue& ep, cudaStream_t st) {
  if (j.src_type == GemmDtype::BF16) return fused_transform_t<bf16, E>(j, static_cast<const bf16*>(j.src), ep, st);
  return fused_transform_t<float, E>(j, static_cast<const float*>(j.src), ep, st);
}

// The fp32 transformed operand into w (with its amax folded into slot when given).
bool fused_transform(const OperandJob& j, float* w, AmaxSlot* slot, cudaStream_t st) {
  Epilogue ep;
  ep.out = w;
  ep.slot = slot;
  return fused_transform<Emit::Fp32>(j, ep, st);
}

// Two passes over the source (the amax, then transform + quantize) into the GEMM operand `o`;
// false where no fused kernel applies (a transposed operand, 2D tiles, an RHT wider than the
// block, a row width that is not a whole number of the amax pass's 32-blocks).
bool fused_quantize(const OperandJob& j, const QuantSpec& q, void* o, float* tensor, QuantScratch* qs, cudaStream_t st) {
  if (j.transpose) return false;
  if (q.tile2d || (q.block != 16 && q.block != 32)) return false;
  if (j.rht != 0 && (j.rht > q.block || q.block % j.rht != 0)) return false;
  if (j.cols % (j.rht == 0 ? 32 : j.rht) != 0) return false;
  const int64_t r = j.rows, c = j.cols;
  validate_quant_shape(q, r, c);
  auto* slot = static_cast<AmaxSlot*>(quant_scratch_slot(qs));
  reset_quant_scratch(qs, st);
  Epilogue amax;
  amax.slot = slot;
  fused_transform<Emit::AmaxOnly>(j, amax, st);
  QuantEpilogue ep;
  ep.k = kernel_spec(q, r, c, j.dtype == GemmDtype::BF16 ? OutMode::GemmBf16 : OutMode::GemmF32);
  ep.amax = slot;
  ep.out = o;
  ep.tensor = tensor;
  const bool b16 = j.src_type == GemmDtype::BF16;
  if (q.block == 16) {
    if (b16) launch_quant_rht<bf16, 16>(j, static_cast<const bf16*>(j.src), ep, st);
    else launch_quant_rht<float, 16>(j, static_cast<const float*>(j.src), ep, st);
  } else {
    if (b16) launch_quant_rht<bf16, 32>(j, static_cast<const bf16*>(j.src), ep, st);
    else launch_quant_rht<float, 32>(j, static_cast<const float*>(j.src), ep, st);
  }
  return true;
}

bool needs_work(const OperandJob& j) {
  return j.spec->kind == OperandKind::QUANT || j.mean != nullptr || j.rht != 0;
}

}  // namespace

void transformed_operand(const OperandJob& j, DeviceScratch& work, cudaStream_t st) {
  const int64_t r = j.transpose ? j.cols : j.rows, c = j.transpose ? j.rows : j.cols;
  float* w = work.as<float>(static_cast<size_t>(r * c));
  if (fused_transform(j, w, nullptr, st)) return;
  convert_any(j.src, j.src_type, j.rows, j.cols, j.transpose, j.mean, GemmDtype::FP32, w, st);
  if (j.rht) rht_forward(w, r, c, j.rht, j.signs, st);
}

PreparedOperand prepare_operand(const OperandJob& j, DeviceScratch& work, DeviceScratch& out, float* tensor,
                                QuantScratch* qs, cudaStream_t st) {
  const int64_t r = j.transpose ? j.cols : j.rows, c = j.transpose ? j.rows : j.cols;
  if (!needs_work(j)) {
    if (j.materialize) {
      void* o = out.ensure(static_cast<size_t>(r * c) * dtype_bytes(j.dtype));
      convert_any(j.src, j.src_type, j.rows, j.cols, j.transpose, nullptr, j.dtype, o, st);
      return {{o, j.dtype, true}, false};
    }
    // In place, or cast row for row; a transposed operand is the GEMM's layout flag.
    if (j.src_type == j.dtype) return {{j.src, j.dtype, !j.transpose}, false};
    void* o = out.ensure(static_cast<size_t>(r * c) * dtype_bytes(j.dtype));
    convert_any(j.src, j.src_type, j.rows, j.cols, false, nullptr, j.dtype, o, st);
    return {{o, j.dtype, !j.transpose}, false};
  }
  void* o = out.ensure(static_cast<size_t>(r * c) * dtype_bytes(j.dtype));
  if (j.spec->kind == OperandKind::QUANT) {
    QuantSpec q = j.spec->quant;
    q.seed = j.seed;
    q.stream = j.stream;
    const bool bf16_out = j.dtype == GemmDtype::BF16;
    const bool scaled = format_has_tensor_scale(q.format);
    if (!j.transpose && !j.mean && !j.rht && j.src_type == GemmDtype::FP32) {
      // nothing to transform: the quantizer reads the source itself (amax pass + block pass)
      quantize_for_gemm(static_cast<const float*>(j.src), r, c, q, bf16_out, o, tensor, qs, st);
      return {{o, j.dtype, true}, scaled};
    }
    if (fused_quantize(j, q, o, tensor, qs, st)) return {{o, j.dtype, true}, scaled};
    float* w = work.as<float>(static_cast<size_t>(r * c));
    reset_quant_scratch(qs, st);
    if (fused_transform(j, w, static_cast<AmaxSlot*>(quant_scratch_slot(qs)), st)) {
      quantize_for_gemm(w, r, c, q, bf16_out, o, tensor, qs, st, /*amax_ready=*/true);
    } else {
      transformed_operand(j, work, st);
      quantize_for_gemm(w, r, c, q, bf16_out, o, tensor, qs, st);
    }
    return {{o, j.dtype, true}, scaled};
  }
  transformed_operand(j, work, st);
  convert_any(work.get<float>(), GemmDtype::FP32, r, c, false, nullptr, j.dtype, o, st);
  return {{o, j.dtype, true}, false};
}

const float* as_float(const void* src, GemmDtype type, int64_t n, DeviceScratch& tmp, cudaStream_t st) {
  if (type == GemmDtype::FP32) return static_cast<const float*>(src);
  float* f = tmp.as<float>(static_cast<size_t>(n));
  NIBBLE_CHECK(n % 4 == 0, "as_float: length ", n, " must be a multiple of 4");
  convert_any(src, type, n / 4, 4, false, nullptr, GemmDtype::FP32, f, st);
  return f;
}

void store_as(const float* src, int64_t n, void* dst, GemmDtype type, cudaStream_t st) {
  if (type == GemmDtype::FP32) {
    if (dst != src) NIBBLE_CUDA_CHECK(cudaMemcpyAsync(dst, src, static_cast<size_t>(n) * 4, cudaMemcpyDeviceToDevice, st));
    return;
  }
  NIBBLE_CHECK(n % 4 == 0, "store_as: length ", n, " must be a multiple of 4");
  convert_any(src, GemmDtype::FP32, n / 4, 4, false, nullptr, type, dst, st);
}

void gemm_alpha(const float* ta, bool a_scaled, const float* tb, bool b_scaled, float* alpha, cudaStream_t st) {
  alpha_kernel<<<1, 1, 0, st>>>(ta, a_scaled, tb, b_scaled, alpha);
  NIBBLE_CUDA_CHECK_LAUNCH();
}

int64_t column_mean_partials(int64_t t, int64_t f) { return mean_chunks(t) * f; }

void column_mean(const void* x, GemmDtype type, int64_t t, int64_t f, double* partials, float* mean, cudaStream_t st) {
  if (type == GemmDtype::BF16) column_sum(static_cast<const bf16*>(x), t, f, nullptr, static_cast<double>(t), partials, mean, st);
  else column_sum(static_cast<const float*>(x), t, f, nullptr, static_cast<double>(t), partials, mean, st);
}

void fprop_correction(const float* w, int64_t n, int64_t k, const float* mu, float* out, cudaStream_t st) {
  fprop_correction_kernel<<<blocks_for(n * 32), kThreads, 0, st>>>(w, n, k, mu, out);
  NIBBLE_CUDA_CHECK_LAUNCH();
}
void dgrad_correction(const float* w, int64_t n, int64_t k, const float* nu, double* partials, float* out,
                      cudaStream_t st) {
  column_sum(w, n, k, nu, 1.0, partials, out, st);  // Σ_n w[n, k]·ν[n]
}
void add_column_vector(float* x, int64_t rows, int64_t cols, const float* v, cudaStream_t st) {
  add_column_vector_kernel<<<blocks_for(rows * cols), kThreads, 0, st>>>(x, rows * cols, cols, v);
  NIBBLE_CUDA_CHECK_LAUNCH();
}
void add_wgrad_correction(float* dw, int64_t n, int64_t k, int64_t t, const float* nu, const float* mu, cudaStream_t st) {
  wgrad_correction_kernel<<<blocks_for(n * k), kThreads, 0, st>>>(dw, n, k, static_cast<double>(t), nu, mu);
  NIBBLE_CUDA_CHECK_LAUNCH();
}

}  // namespace nibble::cuda
