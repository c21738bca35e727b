#pragma once
// GEMMs of the CUDA backend through cuBLASLt: bf16 (or fp32) operands, fp32 accumulation, the
// operands' tensor scales applied as alpha (SPEC §5: a 4-bit GEMM on Hopper is a bf16 GEMM of
// the exactly dequantized values q·s_b).
#include <cuda_runtime.h>

#include <cstdint>

namespace nibble::cuda {

// The element type of a stored tensor (GEMM operands, outputs, activations).
enum class GemmDtype : uint8_t { BF16, FP32 };
inline size_t dtype_bytes(GemmDtype t) { return t == GemmDtype::BF16 ? 2 : 4; }

// An operand of C[M,N] = A·Bᵀ (K the reduction dim), row-major in memory: `k_major` when it is
// stored [rows, K] with K contiguous (the "TN" layout), else stored [K, rows] — the transposed
// copy that a wgrad or dgrad would otherwise have to write, read by the GEMM itself instead.
struct GemmOperand {
  const void* p = nullptr;
  GemmDtype dtype = GemmDtype::BF16;
  bool k_major = true;
};
// D = alpha·A·Bᵀ + (c ? C : 0), row-major [M, N] of `dtype`; c may equal d (accumulate) or be
// another tensor of the same type and shape (a residual added in the GEMM's epilogue).
struct GemmOutput {
  void* d = nullptr;
  GemmDtype dtype = GemmDtype::FP32;
  const void* c = nullptr;
};

// A and B must have the same dtype. d_alpha: a device float (nullptr = 1). Deterministic: the
// algorithm is fixed per shape and layout, and reductions that sum in an unspecified order
// (cuBLASLt's in-place split-K) are excluded.
void gemm(const GemmOperand& a, const GemmOperand& b, const GemmOutput& out, int64_t m, int64_t n, int64_t k,
          const float* d_alpha, cudaStream_t stream);

// C[M,N] (fp32) = alpha · A[M,K] · B[N,K]ᵀ (both K-major, of dtype dt), or C += ... when accumulate.
void gemm_nt(GemmDtype dt, const void* a, const void* b, float* c, int64_t m, int64_t n, int64_t k,
             const float* d_alpha, bool accumulate, cudaStream_t stream);

}  // namespace nibble::cuda
