#pragma once
// The per-block arithmetic of the GPU quantizers (SPEC §3), shared by the block quantizer
// (quantizer.cu) and the fused transform-and-quantize kernels of the GEMM operands
// (nn/cuda/operand.cu): the launch description, the tensor scales read from the amax slot, and
// a block's scale — exactly as compute_scales() on the CPU (block_codec.hpp).
#include <cstdint>

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
