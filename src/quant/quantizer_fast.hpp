#pragma once
// Private to src/quant (and its tests): the CPU block-quantizer kernels behind quantize()
// and quantize_dequantize(). The arithmetic is that of nibble/quant/block_codec.hpp,
// operation for operation (same IEEE fp32 ops, same order), so every kernel gives the
// same bits; they differ only in how the work is laid out:
//   generic  portable C++ written for the auto-vectoriser (any CPU);
//   avx2     the same code compiled for AVX2 (x86-64 CPUs without AVX-512);
//   avx512   intrinsics, 16 elements per instruction (one 1×16 block per register),
//            Philox draws for 16 groups at a time.
// Auto picks the best the CPU has, at run time.
#include <cstdint>

#include "nibble/quant/quantizer.hpp"

namespace nibble::quant_impl {

enum class Kernel : uint8_t { Auto, Generic, Avx2, Avx512 };

// Whether this CPU (and build) can run kernel k; Auto and Generic always can.
bool kernel_available(Kernel k);
// Forces a kernel for later calls (tests and benchmarks); Auto picks the fastest
// available. Returns the previous setting. Throws when k is not available.
Kernel set_kernel(Kernel k);
// The kernel that Auto resolves to on this CPU.
Kernel resolved_kernel();

// Where the results go: the dequantized values (quantize_dequantize), or the packed
// codes and scale bytes (quantize). Pointers not needed are null. values may alias x.
struct Output {
  float* values = nullptr;
  uint8_t* codes = nullptr;   // rows*cols/2 bytes
  uint8_t* scales = nullptr;  // scale_rows*scale_cols bytes
};
struct TensorScale {
  float amax = 0.0f;   // max|x| (also computed for mxfp4: it validates the input)
  float s_dec = 1.0f;  // 1 / S_enc (1 for mxfp4)
};

// Validates the shape and the input (throws NonFiniteValue with the first bad index
// before writing anything), then quantizes. The public functions are thin wrappers.
TensorScale run(const float* x, int64_t rows, int64_t cols, const QuantSpec& spec, const Output& out);

// max|x| over n values; throws NonFiniteValue naming the first NaN/Inf.
float tensor_amax_fast(const float* x, int64_t n);

// The scale bytes, s_b and element multipliers e_b of n blocks with amaxes amax[i], under
// the tensor encode scale s_enc (nvfp4 / int4; ignored for mxfp4), as kernel k computes
// them (tests: every e4m3 / e8m0 rounding case without building matrices).
void block_scales(Kernel k, const QuantSpec& spec, float s_enc, const float* amax, int64_t n,
                  uint8_t* bytes, float* sb, float* mul);

// The SR uniforms u of the 64 consecutive elements i0 .. i0+63 (i0 a multiple of 4) with
// the given kernel (tests: the Philox counter of a group index that crosses 2^32).
void philox_uniforms64(Kernel k, uint64_t seed, uint32_t stream, uint64_t i0, float* u);

}  // namespace nibble::quant_impl
