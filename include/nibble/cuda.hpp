#pragma once
// The CUDA backend's host-side API (no CUDA headers here: callers need not be compiled by
// nvcc). In a build without CUDA, device_count() is 0 and everything else throws.
#include <cstdint>
#include <string>
#include <vector>

#include "nibble/quant/quantizer.hpp"

namespace nibble::cuda {

bool built_with_cuda();
int device_count();          // 0 without a driver or GPU; never throws
std::string device_summary(); // "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs, 79.1 GiB)"
// Makes GPU `ordinal` this process's device (a data-parallel rank's LOCAL_RANK); throws naming
// the ordinal and the device count when there is no such GPU.
void select_device(int ordinal);

// ---- quantizers on device memory (stream: a cudaStream_t, nullptr = default) --------------
// Scratch: 16 bytes of device memory the tensor-amax reduction uses (amax, non-finite flag).
struct QuantScratch;
QuantScratch* make_quant_scratch();
void free_quant_scratch(QuantScratch* s);

// Fused quantize + dequantize of a row-major [rows, cols] fp32 matrix (d_out may alias
// d_x). Bit-identical to nibble::quantize_dequantize on the CPU.
void quantize_dequantize(const float* d_x, int64_t rows, int64_t cols, const QuantSpec& spec,
                         float* d_out, QuantScratch* scratch, void* stream = nullptr);
// Packed codes (rows*cols/2 bytes) and block scales (scale_rows*scale_cols bytes); the
// tensor amax and S_dec land in d_tensor[0], d_tensor[1] (nvfp4/int4; 0 and 1 for mxfp4).
void quantize_packed(const float* d_x, int64_t rows, int64_t cols, const QuantSpec& spec,
                     uint8_t* d_codes, uint8_t* d_scales, float* d_tensor, QuantScratch* scratch,
                     void* stream = nullptr);
// A GEMM operand (SPEC §5): q·s_b for every element (exact in bf16; fp32 when !bf16) into
// d_out ([rows, cols] bf16 or fp32), with the tensor amax and S_dec in d_tensor[0], d_tensor[1]
// for the GEMM's alpha (mxfp4: 0 and 1). dequantize(quantize(x)) = d_out · S_dec.
// amax_ready: the tensor amax was already folded into the scratch by the kernel that produced
// d_x (after reset_quant_scratch), so the quantizer reads d_x once instead of twice.
void quantize_for_gemm(const float* d_x, int64_t rows, int64_t cols, const QuantSpec& spec, bool bf16,
                       void* d_out, float* d_tensor, QuantScratch* scratch, void* stream = nullptr,
                       bool amax_ready = false);
void reset_quant_scratch(QuantScratch* scratch, void* stream = nullptr);
// The scratch's device-side amax slot (an AmaxSlot*, src/quant/cuda/amax.cuh) for producers.
void* quant_scratch_slot(QuantScratch* scratch);
// Throws nibble::Error naming the first problem if the last quantization saw NaN/Inf.
void check_finite(QuantScratch* scratch, void* stream = nullptr);

// RHT along the last axis (float64 butterflies, one rounding: bit-identical to the CPU).
void rht_forward(float* d_x, int64_t rows, int64_t cols, int n, const float* d_signs,
                 void* stream = nullptr);
void rht_inverse(float* d_x, int64_t rows, int64_t cols, int n, const float* d_signs,
                 void* stream = nullptr);

// ---- host-memory conveniences (copy in, run, copy out) for tests and tools ----------------
std::vector<float> quantize_dequantize_host(const float* x, int64_t rows, int64_t cols,
                                            const QuantSpec& spec);
QuantizedMatrix quantize_host(const float* x, int64_t rows, int64_t cols, const QuantSpec& spec);
std::vector<float> rht_forward_host(const float* x, int64_t rows, int64_t cols, int n,
                                    const std::vector<float>& signs, bool inverse = false);

}  // namespace nibble::cuda
