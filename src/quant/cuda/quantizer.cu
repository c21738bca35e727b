// CUDA twin of src/quant/quantizer.cpp: the block quantizers of SPEC §3. The per-block and
// per-element arithmetic is the shared host/device code of block_codec.hpp, and SR draws
// come from the same Philox counters, so results are bit-identical to the CPU reference.
//
// Two launches: (1) the tensor amax (needed before any block scale, SPEC §3.1) with a
// non-finite check, (2) one thread per 1×B block (or per row of a B×B tile, the tile
// amax reduced across B lanes with shuffles) that scales, rounds and writes either the
// dequantized values or the packed codes and scale bytes.
#include <cfloat>
#include <climits>
#include <cstdint>

#include <cuda_bf16.h>

#include "core/cuda/check.cuh"
#include "quant/cuda/amax.cuh"
#include "quant/cuda/block_scale.cuh"
#include "nibble/cuda.hpp"
#include "nibble/philox.hpp"
#include "nibble/quant/block_codec.hpp"

namespace nibble::cuda {

struct QuantScratch {
  using Device = AmaxSlot;
  Device* d = nullptr;
};

namespace {

constexpr int kThreads = 256;

__global__ void reset_scratch(QuantScratch::Device* s) {
  s->amax_bits = 0u;
  s->nonfinite = 0u;
  s->first_bad = ULLONG_MAX;
}

__device__ __forceinline__ void note_value(float v, unsigned long long i, float& m, unsigned long long& bad) {
  amax_note_value(v, i, m, bad);
}

// Tensor amax (and the first non-finite index) over n floats.
__global__ void amax_kernel(const float* __restrict__ x, int64_t n, bool vec4, QuantScratch::Device* s) {
  float m = 0.0f;
  unsigned long long bad = ULLONG_MAX;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (vec4) {
    const float4* x4 = reinterpret_cast<const float4*>(x);
    for (int64_t i = tid; i < n / 4; i += stride) {
      const float4 v = x4[i];
      const unsigned long long b = static_cast<unsigned long long>(i) * 4;
      note_value(v.x, b, m, bad);
      note_value(v.y, b + 1, m, bad);
      note_value(v.z, b + 2, m, bad);
      note_value(v.w, b + 3, m, bad);
    }
  } else {
    for (int64_t i = tid; i < n; i += stride) note_value(x[i], static_cast<unsigned long long>(i), m, bad);
  }
  for (int off = 16; off > 0; off >>= 1) {
    m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
    bad = min(bad, __shfl_xor_sync(0xffffffffu, bad, off));
  }
  __shared__ float sm[kThreads / 32];
  __shared__ unsigned long long sb[kThreads / 32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) { sm[warp] = m; sb[warp] = bad; }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < blockDim.x / 32; ++w) { m = fmaxf(m, sm[w]); bad = min(bad, sb[w]); }
    atomicMax(&s->amax_bits, __float_as_uint(m));
    if (bad != ULLONG_MAX) {
      atomicOr(&s->nonfinite, 1u);
      atomicMin(&s->first_bad, bad);
    }
  }
}

// One thread per 1×B block along the last axis.
template <int B>
__global__ void quant_rows_kernel(const float* __restrict__ x, KernelSpec k, const QuantScratch::Device* s,
                                  void* out, uint8_t* codes, uint8_t* scales, float* tensor) {
  const int64_t nblk = k.rows * k.cols / B;
  const int64_t blk = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (blk >= nblk) return;
  float amax, s_enc, s_dec;
  tensor_scales(k, s, amax, s_enc, s_dec);
  const uint64_t base = static_cast<uint64_t>(blk) * B;
  float v[B];
  const float4* src = reinterpret_cast<const float4*>(x + base);
#pragma unroll
  for (int j = 0; j < B / 4; ++j) {
    const float4 t = src[j];
    v[4 * j] = t.x; v[4 * j + 1] = t.y; v[4 * j + 2] = t.z; v[4 * j + 3] = t.w;
  }
  float a_b = 0.0f;
#pragma unroll
  for (int j = 0; j < B; ++j) a_b = fmaxf(a_b, fabsf(v[j]));
  const BlockScale bs = block_scale(k, a_b, s_enc, s_dec);
  encode_and_store<B>(k, v, base, bs, s_dec, out, codes);
  if (scales) scales[blk] = bs.byte;
  if (tensor && blk == 0) { tensor[0] = k.mx ? 0.0f : amax; tensor[1] = s_dec; }
}

// B×B tiles: B consecutive lanes hold the B rows of one tile; the tile amax is reduced
// across them with shuffles (B = 16: half a warp, B = 32: a warp).
template <int B>
__global__ void quant_tiles_kernel(const float* __restrict__ x, KernelSpec k, const QuantScratch::Device* s,
                                   void* out, uint8_t* codes, uint8_t* scales, float* tensor) {
  const int64_t scols = k.cols / B, ntiles = (k.rows / B) * scols;
  const int64_t g = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t tile = g / B;
  const int rr = static_cast<int>(g % B);
  const bool live = tile < ntiles;  // dead lanes still take part in the shuffles
  float amax, s_enc, s_dec;
  tensor_scales(k, s, amax, s_enc, s_dec);
  const int64_t tr = live ? tile / scols : 0, tc = live ? tile % scols : 0;
  const uint64_t base = static_cast<uint64_t>((tr * B + rr) * k.cols + tc * B);
  float v[B];
  float a_b = 0.0f;
  if (live) {
    const float4* src = reinterpret_cast<const float4*>(x + base);
#pragma unroll
    for (int j = 0; j < B / 4; ++j) {
      const float4 t = src[j];
      v[4 * j] = t.x; v[4 * j + 1] = t.y; v[4 * j + 2] = t.z; v[4 * j + 3] = t.w;
    }
#pragma unroll
    for (int j = 0; j < B; ++j) a_b = fmaxf(a_b, fabsf(v[j]));
  }
#pragma unroll
  for (int off = B / 2; off > 0; off >>= 1) a_b = fmaxf(a_b, __shfl_xor_sync(0xffffffffu, a_b, off));
  if (!live) return;
  const BlockScale bs = block_scale(k, a_b, s_enc, s_dec);
  encode_and_store<B>(k, v, base, bs, s_dec, out, codes);
  if (scales && rr == 0) scales[tile] = bs.byte;
  if (tensor && tile == 0 && rr == 0) { tensor[0] = k.mx ? 0.0f : amax; tensor[1] = s_dec; }
}

void launch(const float* d_x, int64_t rows, int64_t cols, const QuantSpec& spec, OutMode mode, void* d_out,
            uint8_t* d_codes, uint8_t* d_scales, float* d_tensor, QuantScratch* scratch, cudaStream_t st,
            bool amax_ready = false) {
  validate_quant_shape(spec, rows, cols);
  NIBBLE_CHECK(scratch && scratch->d, "quantizer scratch not allocated");
  NIBBLE_CHECK(reinterpret_cast<uintptr_t>(d_x) % 16 == 0, "input must be 16-byte aligned");
  const int64_t n = rows * cols;
  if (n == 0) return;
  if (!amax_ready) {
    reset_scratch<<<1, 1, 0, st>>>(scratch->d);
    NIBBLE_CUDA_CHECK_LAUNCH();
    const int64_t amax_blocks = std::min<int64_t>((n / 4 + kThreads - 1) / kThreads, 132 * 8);
    amax_kernel<<<static_cast<unsigned>(std::max<int64_t>(amax_blocks, 1)), kThreads, 0, st>>>(d_x, n, true, scratch->d);
    NIBBLE_CUDA_CHECK_LAUNCH();
  }
  const KernelSpec k = kernel_spec(spec, rows, cols, mode);
  const int64_t threads = spec.tile2d ? n / spec.block : n / spec.block;  // one per block row
  const unsigned grid = static_cast<unsigned>((threads + kThreads - 1) / kThreads);
  if (spec.tile2d) {
    if (spec.block == 16) quant_tiles_kernel<16><<<grid, kThreads, 0, st>>>(d_x, k, scratch->d, d_out, d_codes, d_scales, d_tensor);
    else quant_tiles_kernel<32><<<grid, kThreads, 0, st>>>(d_x, k, scratch->d, d_out, d_codes, d_scales, d_tensor);
  } else {
    if (spec.block == 16) quant_rows_kernel<16><<<grid, kThreads, 0, st>>>(d_x, k, scratch->d, d_out, d_codes, d_scales, d_tensor);
    else quant_rows_kernel<32><<<grid, kThreads, 0, st>>>(d_x, k, scratch->d, d_out, d_codes, d_scales, d_tensor);
  }
  NIBBLE_CUDA_CHECK_LAUNCH();
}

}  // namespace

QuantScratch* make_quant_scratch() {
  auto* s = new QuantScratch;
  NIBBLE_CUDA_CHECK(cudaMalloc(&s->d, sizeof(QuantScratch::Device)));
  return s;
}
void free_quant_scratch(QuantScratch* s) {
  if (!s) return;
  cudaFree(s->d);
  delete s;
}

void quantize_dequantize(const float* d_x, int64_t rows, int64_t cols, const QuantSpec& spec, float* d_out,
                         QuantScratch* scratch, void* stream) {
  NIBBLE_CHECK(reinterpret_cast<uintptr_t>(d_out) % 16 == 0, "output must be 16-byte aligned");
  launch(d_x, rows, cols, spec, OutMode::Dequant, d_out, nullptr, nullptr, nullptr, scratch, as_stream(stream));
}

void quantize_for_gemm(const float* d_x, int64_t rows, int64_t cols, const QuantSpec& spec, bool bf16, void* d_out,
                       float* d_tensor, QuantScratch* scratch, void* stream, bool amax_ready) {
  NIBBLE_CHECK(reinterpret_cast<uintptr_t>(d_out) % 16 == 0, "output must be 16-byte aligned");
  launch(d_x, rows, cols, spec, bf16 ? OutMode::GemmBf16 : OutMode::GemmF32, d_out, nullptr, nullptr, d_tensor,
         scratch, as_stream(stream), amax_ready);
}

void reset_quant_scratch(QuantScratch* scratch, void* stream) {
  reset_scratch<<<1, 1, 0, as_stream(stream)>>>(scratch->d);
  NIBBLE_CUDA_CHECK_LAUNCH();
}
void* quant_scratch_slot(QuantScratch* scratch) { return scratch->d; }

void quantize_packed(const float* d_x, int64_t rows, int64_t cols, const QuantSpec& spec, uint8_t* d_codes,
                     uint8_t* d_scales, float* d_tensor, QuantScratch* scratch, void* stream) {
  NIBBLE_CHECK(reinterpret_cast<uintptr_t>(d_codes) % 8 == 0, "codes must be 8-byte aligned");
  launch(d_x, rows, cols, spec, OutMode::Packed, nullptr, d_codes, d_scales, d_tensor, scratch, as_stream(stream));
}

void check_finite(QuantScratch* scratch, void* stream) {
  QuantScratch::Device h{};
  NIBBLE_CUDA_CHECK(cudaMemcpyAsync(&h, scratch->d, sizeof h, cudaMemcpyDeviceToHost, as_stream(stream)));
  NIBBLE_CUDA_CHECK(cudaStreamSynchronize(as_stream(stream)));
  if (h.nonfinite) fail("input has a non-finite value at flat index ", h.first_bad);
}

// ---- host conveniences ---------------------------------------------------------------
namespace {
struct ScratchGuard {
  QuantScratch* s = make_quant_scratch();
  ~ScratchGuard() { free_quant_scratch(s); }
};
}  // namespace

std::vector<float> quantize_dequantize_host(const float* x, int64_t rows, int64_t cols, const QuantSpec& spec) {
  validate_quant_shape(spec, rows, cols);
  const size_t n = static_cast<size_t>(rows * cols);
  DeviceBuffer<float> dx(n), dy(n);
  dx.upload(x);
  if (n) NIBBLE_CUDA_CHECK(cudaMemset(dy.get(), 0xFF, n * sizeof(float)));  // poison: NaN
  ScratchGuard g;
  quantize_dequantize(dx.get(), rows, cols, spec, dy.get(), g.s, nullptr);
  check_finite(g.s, nullptr);
  std::vector<float> y(n);
  dy.download(y.data());
  return y;
}

QuantizedMatrix quantize_host(const float* x, int64_t rows, int64_t cols, const QuantSpec& spec) {
  validate_quant_shape(spec, rows, cols);
  QuantizedMatrix q;
  q.spec = spec;
  q.rows = rows;
  q.cols = cols;
  const size_t n = static_cast<size_t>(rows * cols);
  q.codes.resize(n / 2);
  q.scales.resize(static_cast<size_t>(q.scale_rows() * q.scale_cols()));
  DeviceBuffer<float> dx(n), dt(2);
  DeviceBuffer<uint8_t> dc(q.codes.size()), ds(q.scales.size());
  dx.upload(x);
  if (n) NIBBLE_CUDA_CHECK(cudaMemset(dc.get(), 0xAB, dc.size()));  // poison
  if (ds.size()) NIBBLE_CUDA_CHECK(cudaMemset(ds.get(), 0xFF, ds.size()));
  ScratchGuard g;
  quantize_packed(dx.get(), rows, cols, spec, dc.get(), ds.get(), dt.get(), g.s, nullptr);
  check_finite(g.s, nullptr);
  dc.download(q.codes.data());
  ds.download(q.scales.data());
  float t[2] = {0, 1};
  if (n) dt.download(t);
  q.tensor_amax = t[0];
  q.tensor_scale = t[1];
  return q;
}

}  // namespace nibble::cuda
