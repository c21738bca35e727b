#pragma once
// GEMMs of the CUDA backend through cuBLASLt: bf16 (or fp32) operands, fp32 accumulation and
// output, the operands' tensor scales applied as alpha (SPEC §5: a 4-bit GEMM on Hopper is a
// bf16 GEMM of the exactly dequantized values q·s_b).
#include <cuda_runtime.h>

#include <cstdint>

namespace nibble::cuda {

enum class GemmDtype : uint8_t { BF16, FP32 };

// C[M,N] (fp32, row-major) = alpha · A[M,K] · B[N,K]ᵀ, or C += ... when accumulate. A and B are
// row-major with the reduction dim K contiguous (the "TN" layout, Hopper's fastest), of dtype
// dt. d_alpha: a device float (nullptr = 1). Deterministic: the algorithm is fixed per shape
// and reductions that sum in an unspecified order (cuBLASLt's in-place split-K) are excluded.
void gemm_nt(GemmDtype dt, const void* a, const void* b, float* c, int64_t m, int64_t n, int64_t k,
             const float* d_alpha, bool accumulate, cudaStream_t stream);

}  // namespace nibble::cuda
