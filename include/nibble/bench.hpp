#pragma once
// Measurements behind `nibble bench` (benchmarks, never tests):
//  - the device copy bandwidth (the ceiling of every memory-bound kernel) and the quantizer
//    pipeline's throughput as a share of it;
//  - GEMMs: cuBLASLt bf16 alone (the ceiling) and each recipe's full linear layer (operand
//    transforms, quantization and the three GEMMs) in TFLOP/s and as a share of it;
//  - (in the CLI) end-to-end training tokens/s and MFU per recipe and model.
#include <cstdint>
#include <string>
#include <vector>

#include "nibble/json.hpp"

namespace nibble::bench {

// {"copy_gb_per_s": ..., "results": [{"op", "ms", "gb_per_s", "pct_of_copy"}]} on a
// [rows, cols] fp32 matrix. Throws without CUDA.
Json gpu_quantizer_bench(int64_t rows, int64_t cols);

// One linear layer [tokens, in] → [tokens, out] per shape: cuBLASLt bf16 fprop alone, and
// per recipe the layer's forward (fprop) and forward+backward (three GEMMs) with every
// operand transform, in TFLOP/s (2·M·N·K per GEMM) and % of the bf16 GEMM's rate.
struct GemmShape {
  std::string name;
  int64_t tokens, in, out;
};
Json gpu_gemm_bench(const std::vector<GemmShape>& shapes, const std::vector<std::string>& recipes);

// The GPU randomized SVD of metis's dY split (SPEC §4.3) piece by piece on [rows, cols] fp32
// matrices at rank k (l = k + 8): each piece's median ms, how many times one SVD runs it
// ("per_svd"; 0 for alternatives that are not used, -1 for the whole SVD), and the whole SVD.
struct SpectralShape {
  std::string name;
  int64_t rows, cols;
  int rank;
};
Json gpu_spectral_bench(const std::vector<SpectralShape>& shapes);

// Dense bf16 tensor-core peak of the current GPU in FLOP/s (for MFU); 0 when unknown.
double gpu_bf16_peak_flops();

}  // namespace nibble::bench
