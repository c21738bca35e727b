#pragma once
// The spectral split of SPEC §4.3 on the GPU (metis): randomized_svd (quant/spectral.hpp) with
// the same Gaussian test matrix Ω (Philox, element-indexed), the same subspace iterations and
// the same small SVD (spectral_small_svd, on the host in float64); the tall products run as
// float64 cuBLAS GEMMs and the orthonormalisations as CholeskyQR instead of Householder QR (per
// pass: the l×l Gram matrix, its Cholesky factor and inverse in one block's shared memory, and a
// GEMM by the inverse), all on the stream: only the last R and the small SVD's factors cross to
// the host, once per call. In each power iteration one pass, of the [rows, l] block only; for
// the two final bases two (CholeskyQR2). The factors equal the CPU's up to rounding (and column signs, which cancel in
// U S Vᵀ). l = rank + oversample is limited by shared memory (l·(l | 1) + l doubles: l up to 169 on
// sm_90; up to 119 the inverse is built in the factorization's steps, beyond in a second phase).
#include <cuda_runtime.h>

#include <cstdint>

#include "core/cuda/scratch.cuh"
#include "nibble/quant/spectral.hpp"

namespace nibble::cuda {

struct DeviceLowRank {
  int64_t rows = 0, cols = 0;
  int rank = 0;
  DeviceScratch u;  // [rows, rank] fp32
  DeviceScratch s;  // [rank] fp32
  DeviceScratch v;  // [cols, rank] fp32
  DeviceScratch work[6];
};

// Factors of g [rows, cols] (fp32, device) into lr (its buffers grow as needed).
void randomized_svd_device(const float* g, int64_t rows, int64_t cols, const SpectralSpec& spec, DeviceLowRank& lr,
                           cudaStream_t stream);

// Row-major fp32 GEMM through cuBLAS (pedantic fp32, no TF32): C[M,N] = alpha·op(A)·op(B) + beta·C,
// op(A) [M,K], op(B) [K,N]; lda, ldb, ldc are row strides.
void sgemm_rm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
              const float* b, int64_t ldb, float beta, float* c, int64_t ldc, cudaStream_t stream);

// x[r, c] *= s[c] (the columns of U or V scaled by Σ), out of place.
void scale_columns(const float* x, const float* s, float* out, int64_t rows, int64_t cols, float sign, cudaStream_t stream);

}  // namespace nibble::cuda
