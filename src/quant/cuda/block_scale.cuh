#pragma once
// The per-block arithmetic of the GPU quantizers (SPEC §3), shared by the block quantizer
// (quantizer.cu) and the fused transform-and-quantize kernels of the GEMM operands
// (nn/cuda/operand.cu): the launch description, the tensor scales read from the amax slot, and
// a block's scale — exactly as compute_scales() on the CPU (block_codec.hpp).
#include <cuda_bf16.h>

#include <cstdint>

#include "nibble/philox.hpp"
#include "nibble/quant/block_codec.hpp"
#include "nibble/quant/grid.hpp"
#include "nibble/quant/quantizer.hpp"
#include "quant/cuda/amax.cuh"

namespace nibble::cuda {

// What a quantizer launch writes: dequantized fp32 values (x̂ = q·s_b·S_dec), packed codes
// and scale bytes, or a GEMM operand: q·s_b (exact in bf16) with S_dec left to the GEMM's alpha.
enum class OutMode : uint8_t { Dequant, Packed, GemmBf16, GemmF32 };

struct KernelSpec {
  OutMode mode;
  Grid grid;
  bool mx;            // e8m0 scales, no tensor scale
  bool rceil;
  bool stochastic;
  uint64_t seed;
  uint32_t stream;
  int64_t rows, cols;
};

// Block scale of a block with amax a_b: the stored byte, its value s_b, and the multiplier
// applied to x before rounding — exactly as compute_scales() on the CPU.
struct BlockScale {
  uint8_t byte;
  float value, mul;
};
__device__ __forceinline__ BlockScale block_scale(const KernelSpec& k, float a_b, float s_enc, float s_dec) {
  BlockScale b;
  if (k.mx) {
    b.byte = codec::e8m0_block_scale(a_b, k.rceil);
    b.value = ldexpf(1.0f, static_cast<int>(b.byte) - 127);
    b.mul = ldexpf(1.0f, 127 - static_cast<int>(b.byte));
  } else {
    b.byte = codec::e4m3_block_scale(a_b, s_enc, 1.0f / grid_max(k.grid));
    b.value = e4m3_decode(b.byte);
    b.mul = codec::e4m3_encode_multiplier(b.value, s_dec);
  }
  return b;
}

__device__ __forceinline__ void tensor_scales(const KernelSpec& k, const AmaxSlot* s,
                                              float& amax, float& s_enc, float& s_dec) {
  amax = __uint_as_float(s->amax_bits);
  if (k.mx) { s_enc = 1.0f; s_dec = 1.0f; return; }
  s_enc = codec::tensor_encode_scale(grid_max(k.grid), amax);
  s_dec = 1.0f / s_enc;
}

// Rounds B values (one block row) and writes them out: dequantized floats or packed codes.
template <int B>
__device__ __forceinline__ void encode_and_store(const KernelSpec& k, const float (&v)[B], uint64_t base,
                                                 const BlockScale& bs, float s_dec, void* out, uint8_t* codes) {
  uint8_t q[B];
#pragma unroll
  for (int j = 0; j < B; j += 4) {
    Philox4 rnd{};
    if (k.stochastic) rnd = philox_group(k.seed, k.stream, (base + j) >> 2);
#pragma unroll
    for (int l = 0; l < 4; ++l) {
      const float u = k.stochastic ? philox_uniform_from_word(rnd.v[l]) : 0.0f;
      q[j + l] = codec::encode_element(k.grid, v[j + l], bs.mul, k.stochastic, u);
    }
  }
  if (k.mode == OutMode::GemmBf16) {
    uint4* dst = reinterpret_cast<uint4*>(static_cast<__nv_bfloat16*>(out) + base);
#pragma unroll
    for (int j = 0; j < B; j += 8) {
      __align__(16) __nv_bfloat16 h[8];
#pragma unroll
      for (int l = 0; l < 8; ++l) h[l] = __float2bfloat16_rn(grid_decode(k.grid, q[j + l]) * bs.value);
      dst[j / 8] = *reinterpret_cast<const uint4*>(h);
    }
  } else if (k.mode == OutMode::GemmF32) {
    float4* dst = reinterpret_cast<float4*>(static_cast<float*>(out) + base);
#pragma unroll
    for (int j = 0; j < B; j += 4)
      dst[j / 4] = make_float4(grid_decode(k.grid, q[j]) * bs.value, grid_decode(k.grid, q[j + 1]) * bs.value,
                               grid_decode(k.grid, q[j + 2]) * bs.value, grid_decode(k.grid, q[j + 3]) * bs.value);
  } else if (codes) {
    uint32_t w[B / 8];
#pragma unroll
    for (int i = 0; i < B / 8; ++i) {
      w[i] = 0;
#pragma unroll
      for (int l = 0; l < 8; ++l) w[i] |= static_cast<uint32_t>(q[8 * i + l] & 0xF) << (4 * l);
    }
    uint32_t* dst = reinterpret_cast<uint32_t*>(codes + base / 2);  // 8-byte aligned for B=16
#pragma unroll
    for (int i = 0; i < B / 8; ++i) dst[i] = w[i];
  } else {
    float4* dst = reinterpret_cast<float4*>(static_cast<float*>(out) + base);
#pragma unroll
    for (int j = 0; j < B; j += 4) {
      float4 o;
      o.x = codec::decode_element(k.grid, q[j], bs.value, s_dec);
      o.y = codec::decode_element(k.grid, q[j + 1], bs.value, s_dec);
      o.z = codec::decode_element(k.grid, q[j + 2], bs.value, s_dec);
      o.w = codec::decode_element(k.grid, q[j + 3], bs.value, s_dec);
      dst[j / 4] = o;
    }
  }
}

inline KernelSpec kernel_spec(const QuantSpec& spec, int64_t rows, int64_t cols, OutMode mode) {
  KernelSpec k;
  k.mode = mode;
  k.grid = format_grid(spec.format);
  k.mx = !format_has_tensor_scale(spec.format);
  k.rceil = spec.scale_rule == ScaleRule::RCEIL;
  k.stochastic = spec.rounding == Rounding::SR;
  k.seed = spec.seed;
  k.stream = spec.stream;
  k.rows = rows;
  k.cols = cols;
  return k;
}

}  // namespace nibble::cuda
