// GPU randomized SVD (see spectral_cuda.hpp).
#include "nn/cuda/spectral_cuda.hpp"
#include "nn/cuda/spectral_parts.cuh"

#include <cublas_v2.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/cuda/check.cuh"
#include "nibble/error.hpp"
#include "nibble/philox.hpp"

namespace nibble::cuda {
namespace spectral_parts {

cublasHandle_t handle(cudaStream_t st) {
  static cublasHandle_t h = [] {
    cublasHandle_t x;
    NIBBLE_CUBLAS_V2_CHECK(cublasCreate(&x));
    NIBBLE_CUBLAS_V2_CHECK(cublasSetMathMode(x, CUBLAS_PEDANTIC_MATH));  // fp32 stays fp32 (no TF32)
    return x;
  }();
  NIBBLE_CUBLAS_V2_CHECK(cublasSetStream(h, st));
  return h;
}

// Row-major C[M,N] = op(A)·op(B) is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ: swap the operands.
void dgemm_rm(cudaStream_t st, bool ta, bool tb, int64_t m, int64_t n, int64_t k, const double* a, int64_t lda,
              const double* b, int64_t ldb, double* c, int64_t ldc) {
  const double one = 1.0, zero = 0.0;
  NIBBLE_CUBLAS_V2_CHECK(cublasDgemm(handle(st), tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                                     static_cast<int>(n), static_cast<int>(m), static_cast<int>(k), &one, b,
                                     static_cast<int>(ldb), a, static_cast<int>(lda), &zero, c, static_cast<int>(ldc)));
}

__global__ void to_double_kernel(const float* x, double* y, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) y[i] = x[i];
}
__global__ void to_float_kernel(const double* x, float* y, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) y[i] = static_cast<float>(x[i]);
}
// Ω[j, t] = philox_normal(seed, stream, j·l + t): the CPU's Box–Muller on the same uniforms.
__global__ void omega_kernel(double* o, int64_t n, uint64_t seed, uint32_t stream) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  o[i] = philox_normal_hd(seed, stream, static_cast<uint64_t>(i));
}
__global__ void scale_columns_kernel(const float* x, const float* s, float* out, int64_t rows, int64_t cols, float sign) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < rows * cols) out[i] = sign * x[i] * s[i % cols];
}

unsigned grid_for(int64_t n) { return static_cast<unsigned>(std::max<int64_t>((n + 255) / 256, 1)); }

void to_double(cudaStream_t st, const float* x, double* y, int64_t n) {
  to_double_kernel<<<grid_for(n), 256, 0, st>>>(x, y, n);
  NIBBLE_CUDA_CHECK_LAUNCH();
}
void fill_omega(cudaStream_t st, double* o, int64_t n, uint64_t seed, uint32_t stream) {
  omega_kernel<<<grid_for(n), 256, 0, st>>>(o, n, seed, stream);
  NIBBLE_CUDA_CHECK_LAUNCH();
}

// Upper-triangular R with RᵀR = G (l×l, row-major), by Cholesky in one block, in shared memory;
// a pivot that is not safely positive (a rank-deficient subspace, e.g. an all-zero gradient) is
// replaced by a tiny one so that the null directions come out as (near-)zero columns, which
// carry σ = 0. Right-looking: step p subtracts r[p,i]·r[p,c] from every trailing entry, so each
// entry sees its subtractions in the order p = 0, 1, ... as a sequential left-looking loop does
// (the host loop this replaced; unfused, as everywhere here: the same R bit for bit, checked on
// the host). It runs on the device so that an orthonormalisation needs no host round trip (those
// round trips and the host arithmetic between them were most of a metis step).
__global__ void cholesky_upper_kernel(const double* g, int l, double* r) {
  extern __shared__ double a[];
  __shared__ double floor_s, pivot_s;
  const int tid = threadIdx.x, nt = blockDim.x;
  for (int idx = tid; idx < l * l; idx += nt) a[idx] = idx % l >= idx / l ? g[idx] : 0.0;
  if (tid == 0) {
    double tr = 0;
    for (int i = 0; i < l; ++i) tr = __dadd_rn(tr, g[i * l + i]);
    floor_s = __dmul_rn(fmax(tr, 1e-300), 1e-14);
  }
  __syncthreads();
  for (int j = 0; j < l; ++j) {
    if (tid == 0) {
      const double d = a[j * l + j];
      pivot_s = d > floor_s ? sqrt(d) : sqrt(floor_s);
      a[j * l + j] = pivot_s;
    }
    __syncthreads();
    for (int c = j + 1 + tid; c < l; c += nt) a[j * l + c] = __ddiv_rn(a[j * l + c], pivot_s);
    __syncthreads();
    const int n = l - j - 1;
    for (int idx = tid; idx < n * n; idx += nt) {
      const int i = j + 1 + idx / n, c = j + 1 + idx % n;
      if (c >= i) a[i * l + c] = __dsub_rn(a[i * l + c], __dmul_rn(a[j * l + i], a[j * l + c]));
    }
    __syncthreads();
  }
  for (int idx = tid; idx < l * l; idx += nt) r[idx] = a[idx];
}

// The shared memory of cholesky_upper_kernel for l×l: checked (a clear error when the device
// cannot give it) and, beyond the default 48 KiB, granted. Called before any work of a call.
void ensure_cholesky_fits(int64_t l) {
  const size_t bytes = static_cast<size_t>(l * l) * sizeof(double);
  if (bytes <= 48 * 1024) return;
  int dev = 0, optin = 0;
  NIBBLE_CUDA_CHECK(cudaGetDevice(&dev));
  NIBBLE_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  if (bytes + 64 > static_cast<size_t>(optin))  // + the kernel's two static doubles
    fail("spectral split: rank + oversample = ", l, " needs its ", l, "x", l,
         " float64 Cholesky factor in one block's shared memory (", bytes, " bytes; this GPU allows ", optin,
         "): use a smaller spectral_rank");
  NIBBLE_CUDA_CHECK(cudaFuncSetAttribute(cholesky_upper_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(bytes)));
}

void cholesky_upper_device(cudaStream_t st, const double* g, int64_t l, double* r, int threads) {
  cholesky_upper_kernel<<<1, threads, static_cast<size_t>(l * l) * sizeof(double), st>>>(g, static_cast<int>(l), r);
  NIBBLE_CUDA_CHECK_LAUNCH();
}

// dst = src R⁻¹ for row-major src, dst [m, l] and R upper [l, l]: in column-major terms
// dstᵀ = R⁻ᵀ srcᵀ, and the row-major R read column-major is Rᵀ (lower): one triangular solve.
void solve_upper_right(cudaStream_t st, const double* src, int64_t m, int64_t l, const double* r, double* dst) {
  if (dst != src)
    NIBBLE_CUDA_CHECK(cudaMemcpyAsync(dst, src, static_cast<size_t>(m * l) * sizeof(double), cudaMemcpyDeviceToDevice, st));
  const double one = 1.0;
  NIBBLE_CUBLAS_V2_CHECK(cublasDtrsm(handle(st), CUBLAS_SIDE_LEFT, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N,
                                     CUBLAS_DIAG_NON_UNIT, static_cast<int>(l), static_cast<int>(m), &one, r,
                                     static_cast<int>(l), dst, static_cast<int>(l)));
}

// CholeskyQR2 of y [m, l] (device, row-major) into q, on the stream without host round trips.
// With want_r, also returns R (row-major, upper) with y = q R: the one sync of the call.
std::vector<double> orth(cudaStream_t st, const double* y, int64_t m, int64_t l, double* q, double* tmp,
                         const OrthScratch& sc, bool want_r) {
  const double* src = y;
  for (int pass = 0; pass < 2; ++pass) {
    dgemm_rm(st, true, false, l, l, m, src, l, src, l, sc.gram, l);  // G = srcᵀ src
    cholesky_upper_device(st, sc.gram, l, sc.r[pass]);
    double* dst = pass == 0 ? tmp : q;
    solve_upper_right(st, src, m, l, sc.r[pass], dst);
    src = dst;
  }
  if (!want_r) return {};
  std::vector<double> r0(static_cast<size_t>(l * l)), r1(static_cast<size_t>(l * l));
  NIBBLE_CUDA_CHECK(cudaMemcpyAsync(r0.data(), sc.r[0], r0.size() * 8, cudaMemcpyDeviceToHost, st));
  NIBBLE_CUDA_CHECK(cudaMemcpyAsync(r1.data(), sc.r[1], r1.size() * 8, cudaMemcpyDeviceToHost, st));
  NIBBLE_CUDA_CHECK(cudaStreamSynchronize(st));
  // R = R₁ R₀ (both upper triangular)
  std::vector<double> rtot(static_cast<size_t>(l * l), 0.0);
  for (int64_t i = 0; i < l; ++i)
    for (int64_t j = i; j < l; ++j) {
      double v = 0;
      for (int64_t p = i; p <= j; ++p) v += r1[i * l + p] * r0[p * l + j];
      rtot[i * l + j] = v;
    }
  return rtot;
}

}  // namespace spectral_parts

using namespace spectral_parts;

void randomized_svd_device(const float* g, int64_t rows, int64_t cols, const SpectralSpec& spec, DeviceLowRank& lr,
                           cudaStream_t st) {
  const int64_t mn = std::min(rows, cols);
  if (spec.rank < 1 || spec.rank > mn) fail("spectral rank ", spec.rank, " must be between 1 and min(rows, cols) = ", mn);
  const int64_t k = spec.rank, l = std::min<int64_t>(k + spec.oversample, mn);
  ensure_cholesky_fits(l);
  double* gd = lr.work[0].as<double>(static_cast<size_t>(rows * cols));
  // Ω [cols, l]; later the same buffer holds Q [rows, l]
  double* omega = lr.work[1].as<double>(static_cast<size_t>(std::max(rows, cols) * l));
  double* y = lr.work[2].as<double>(static_cast<size_t>(rows * l));
  double* z = lr.work[3].as<double>(static_cast<size_t>(cols * l));
  double* q = lr.work[4].as<double>(static_cast<size_t>(std::max(rows, cols) * l));
  double* tmp = lr.work[5].as<double>(static_cast<size_t>(std::max(rows, cols) * l + 3 * l * l + std::max(rows, cols) * k));
  double* small = tmp + std::max(rows, cols) * l;  // the Gram matrix, later the small factors
  const OrthScratch sc{small, {small + l * l, small + 2 * l * l}};
  double* prod = small + 3 * l * l;
  to_double(st, g, gd, rows * cols);
  fill_omega(st, omega, cols * l, spec.seed, spec.stream);
  dgemm_rm(st, false, false, rows, l, cols, gd, cols, omega, l, y, l);  // Y = G Ω
  for (int it = 0; it < spec.power_iters; ++it) {
    orth(st, y, rows, l, q, tmp, sc, false);
    dgemm_rm(st, true, false, cols, l, rows, gd, cols, q, l, z, l);  // Z = Gᵀ Q
    orth(st, z, cols, l, q, tmp, sc, false);
    dgemm_rm(st, false, false, rows, l, cols, gd, cols, q, l, y, l);  // Y = G Z
  }
  orth(st, y, rows, l, omega, tmp, sc, false);                     // Q [rows, l] (Ω's buffer is free)
  double* qy = omega;
  dgemm_rm(st, true, false, cols, l, rows, gd, cols, qy, l, z, l);  // Bᵀ = Gᵀ Q [cols, l]
  const std::vector<double> r = orth(st, z, cols, l, q, tmp, sc, true);  // Bᵀ = Q_z R
  // r row-major upper → column-major for the small SVD
  std::vector<double> rc(static_cast<size_t>(l * l));
  for (int64_t i = 0; i < l; ++i)
    for (int64_t j = 0; j < l; ++j) rc[j * l + i] = r[i * l + j];
  std::vector<double> ur, vk;
  std::vector<float> sk;
  spectral_small_svd(rc, l, k, ur, vk, sk);
  // U = Q vk [rows, k], V = Q_z ur [cols, k]: the small factors as row-major [l, k].
  std::vector<double> vk_rm(static_cast<size_t>(l * k)), ur_rm(static_cast<size_t>(l * k));
  for (int64_t t = 0; t < l; ++t)
    for (int64_t c = 0; c < k; ++c) {
      vk_rm[t * k + c] = vk[c * l + t];
      ur_rm[t * k + c] = ur[c * l + t];
    }
  lr.rows = rows;
  lr.cols = cols;
  lr.rank = static_cast<int>(k);
  float* u = lr.u.as<float>(static_cast<size_t>(rows * k));
  float* v = lr.v.as<float>(static_cast<size_t>(cols * k));
  float* s = lr.s.as<float>(static_cast<size_t>(k));
  NIBBLE_CUDA_CHECK(cudaMemcpyAsync(small, vk_rm.data(), vk_rm.size() * 8, cudaMemcpyHostToDevice, st));
  dgemm_rm(st, false, false, rows, k, l, qy, l, small, k, prod, k);
  to_float_kernel<<<grid_for(rows * k), 256, 0, st>>>(prod, u, rows * k);
  NIBBLE_CUDA_CHECK(cudaStreamSynchronize(st));
  NIBBLE_CUDA_CHECK(cudaMemcpyAsync(small, ur_rm.data(), ur_rm.size() * 8, cudaMemcpyHostToDevice, st));
  dgemm_rm(st, false, false, cols, k, l, q, l, small, k, prod, k);
  to_float_kernel<<<grid_for(cols * k), 256, 0, st>>>(prod, v, cols * k);
  NIBBLE_CUDA_CHECK(cudaMemcpyAsync(s, sk.data(), sk.size() * 4, cudaMemcpyHostToDevice, st));
  NIBBLE_CUDA_CHECK(cudaStreamSynchronize(st));  // the host vectors die here
  NIBBLE_CUDA_CHECK_LAUNCH();
}

void sgemm_rm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
              const float* b, int64_t ldb, float beta, float* c, int64_t ldc, cudaStream_t st) {
  NIBBLE_CUBLAS_V2_CHECK(cublasSgemm(handle(st), tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                                     static_cast<int>(n), static_cast<int>(m), static_cast<int>(k), &alpha, b,
                                     static_cast<int>(ldb), a, static_cast<int>(lda), &beta, c, static_cast<int>(ldc)));
}

void scale_columns(const float* x, const float* s, float* out, int64_t rows, int64_t cols, float sign, cudaStream_t st) {
  scale_columns_kernel<<<grid_for(rows * cols), 256, 0, st>>>(x, s, out, rows, cols, sign);
  NIBBLE_CUDA_CHECK_LAUNCH();
}

}  // namespace nibble::cuda
