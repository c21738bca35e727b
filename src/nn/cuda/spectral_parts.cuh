#pragma once
// The pieces of the GPU randomized SVD (spectral_cuda.cu), exposed to the library's own
// benchmarks (`nibble bench --only spectral` times each of them on the study's dY shapes) and
// tests; not part of the public interface. All work is queued on the given stream.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "nibble/error.hpp"

#define NIBBLE_CUBLAS_V2_CHECK(call)                                                                         \
  do {                                                                                                       \
    const cublasStatus_t st_ = (call);                                                                       \
    if (st_ != CUBLAS_STATUS_SUCCESS) ::nibble::fail("cuBLAS error ", static_cast<int>(st_), " in ", #call); \
  } while (0)

namespace nibble::cuda::spectral_parts {

// The cuBLAS handle of the spectral code (pedantic math: fp32 stays fp32), bound to st.
cublasHandle_t handle(cudaStream_t st);

// Row-major float64 C[m, n] = op(A)·op(B) (lda, ldb, ldc: row strides).
void dgemm_rm(cudaStream_t st, bool ta, bool tb, int64_t m, int64_t n, int64_t k, const double* a, int64_t lda,
              const double* b, int64_t ldb, double* c, int64_t ldc);

// y = x in float64; o[i] = philox_normal(seed, stream, i) (Ω).
void to_double(cudaStream_t st, const float* x, double* y, int64_t n);
void fill_omega(cudaStream_t st, double* o, int64_t n, uint64_t seed, uint32_t stream);

// Fails clearly when l×l doubles do not fit one block's shared memory; grants more than 48 KiB.
void ensure_cholesky_fits(int64_t l);

// The upper-triangular R (row-major l×l) with RᵀR = g and its inverse (unless rinv is null), by
// one block of `threads` (a multiple of 32).
void cholesky_inverse_device(cudaStream_t st, const double* g, int64_t l, double* r, double* rinv,
                             int threads = 1024);

// Device buffers of one orthonormalisation (l×l each): the Gram matrix, each pass's R, and the
// inverse of the current pass's R.
struct OrthScratch {
  double* gram;
  double* r[2];
  double* rinv;
};

// CholeskyQR of y [m, l] into q in 1 or 2 passes (2: CholeskyQR2, orthonormal to rounding),
// each pass the Gram matrix, its Cholesky factor and inverse, and src·R⁻¹ as a GEMM; tmp: an
// [m, l] scratch. With want_r, also returns the host copy of R (row-major upper, y = q R), which
// synchronises the stream.
std::vector<double> orth(cudaStream_t st, const double* y, int64_t m, int64_t l, double* q, double* tmp,
                         const OrthScratch& sc, int passes, bool want_r);

}  // namespace nibble::cuda::spectral_parts
