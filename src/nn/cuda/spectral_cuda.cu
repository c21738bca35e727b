// GPU randomized SVD (see spectral_cuda.hpp).
#include "nn/cuda/spectral_cuda.hpp"

#include <cublas_v2.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <vector>

#include "core/cuda/check.cuh"
#include "nibble/error.hpp"
#include "nibble/philox.hpp"

namespace nibble::cuda {
namespace {

#define NIBBLE_CUBLAS_V2_CHECK(call)                                                                   \
  do {                                                                                                 \
    const cublasStatus_t st_ = (call);                                                                 \
    if (st_ != CUBLAS_STATUS_SUCCESS) ::nibble::fail("cuBLAS error ", static_cast<int>(st_), " in ", #call); \
  } while (0)

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

// Upper-triangular R with RᵀR = G (l×l, row-major), by Cholesky; a pivot that is not safely
// positive (a rank-deficient subspace, e.g. an all-zero gradient) is replaced by a tiny one so
// that the null directions come out as (near-)zero columns, which carry σ = 0.
std::vector<double> cholesky_upper(std::vector<double> g, int64_t l) {
  double tr = 0;
  for (int64_t i = 0; i < l; ++i) tr += g[i * l + i];
  const double floor = std::max(tr, 1e-300) * 1e-14;
  std::vector<double> r(static_cast<size_t>(l * l), 0.0);
  for (int64_t j = 0; j < l; ++j) {
    double d = g[j * l + j];
    for (int64_t p = 0; p < j; ++p) d -= r[p * l + j] * r[p * l + j];
    d = d > floor ? std::sqrt(d) : std::sqrt(floor);
    r[j * l + j] = d;
    for (int64_t c = j + 1; c < l; ++c) {
      double v = g[j * l + c];
      for (int64_t p = 0; p < j; ++p) v -= r[p * l + j] * r[p * l + c];
      r[j * l + c] = v / d;
    }
  }
  return r;
}

// Inverse of an upper-triangular l×l matrix (row-major), by back substitution.
std::vector<double> inverse_upper(const std::vector<double>& r, int64_t l) {
  std::vector<double> inv(static_cast<size_t>(l * l), 0.0);
  for (int64_t c = 0; c < l; ++c) {
    inv[c * l + c] = 1.0 / r[c * l + c];
    for (int64_t i = c - 1; i >= 0; --i) {
      double v = 0;
      for (int64_t p = i + 1; p <= c; ++p) v += r[i * l + p] * inv[p * l + c];
      inv[i * l + c] = -v / r[i * l + i];
    }
  }
  return inv;
}

// CholeskyQR2 of y [m, l] (device, row-major) into q; returns R (row-major, upper) with y = q R.
std::vector<double> orth(cudaStream_t st, const double* y, int64_t m, int64_t l, double* q, double* tmp, double* small) {
  std::vector<double> rtot(static_cast<size_t>(l * l), 0.0);
  for (int64_t i = 0; i < l; ++i) rtot[i * l + i] = 1.0;
  const double* src = y;
  for (int pass = 0; pass < 2; ++pass) {
    dgemm_rm(st, true, false, l, l, m, src, l, src, l, small, l);  // G = srcᵀ src
    std::vector<double> g(static_cast<size_t>(l * l));
    NIBBLE_CUDA_CHECK(cudaMemcpyAsync(g.data(), small, g.size() * 8, cudaMemcpyDeviceToHost, st));
    NIBBLE_CUDA_CHECK(cudaStreamSynchronize(st));
    const std::vector<double> r = cholesky_upper(g, l);
    const std::vector<double> ri = inverse_upper(r, l);
    NIBBLE_CUDA_CHECK(cudaMemcpyAsync(small, ri.data(), ri.size() * 8, cudaMemcpyHostToDevice, st));
    double* dst = pass == 0 ? tmp : q;
    dgemm_rm(st, false, false, m, l, l, src, l, small, l, dst, l);  // dst = src R⁻¹
    NIBBLE_CUDA_CHECK(cudaStreamSynchronize(st));  // ri must outlive the copy
    src = dst;
    // rtot = r · rtot
    std::vector<double> nr(static_cast<size_t>(l * l), 0.0);
    for (int64_t i = 0; i < l; ++i)
      for (int64_t j = i; j < l; ++j) {
        double v = 0;
        for (int64_t p = i; p <= j; ++p) v += r[i * l + p] * rtot[p * l + j];
        nr[i * l + j] = v;
      }
    rtot = nr;
  }
  return rtot;
}

}  // namespace

void randomized_svd_device(const float* g, int64_t rows, int64_t cols, const SpectralSpec& spec, DeviceLowRank& lr,
                           cudaStream_t st) {
  const int64_t mn = std::min(rows, cols);
  if (spec.rank < 1 || spec.rank > mn) fail("spectral rank ", spec.rank, " must be between 1 and min(rows, cols) = ", mn);
  const int64_t k = spec.rank, l = std::min<int64_t>(k + spec.oversample, mn);
  double* gd = lr.work[0].as<double>(static_cast<size_t>(rows * cols));
  // Ω [cols, l]; later the same buffer holds Q [rows, l]
  double* omega = lr.work[1].as<double>(static_cast<size_t>(std::max(rows, cols) * l));
  double* y = lr.work[2].as<double>(static_cast<size_t>(rows * l));
  double* z = lr.work[3].as<double>(static_cast<size_t>(cols * l));
  double* q = lr.work[4].as<double>(static_cast<size_t>(std::max(rows, cols) * l));
  double* tmp = lr.work[5].as<double>(static_cast<size_t>(std::max(rows, cols) * l + l * l + std::max(rows, cols) * k));
  double* small = tmp + std::max(rows, cols) * l;
  double* prod = small + l * l;
  to_double_kernel<<<grid_for(rows * cols), 256, 0, st>>>(g, gd, rows * cols);
  omega_kernel<<<grid_for(cols * l), 256, 0, st>>>(omega, cols * l, spec.seed, spec.stream);
  NIBBLE_CUDA_CHECK_LAUNCH();
  dgemm_rm(st, false, false, rows, l, cols, gd, cols, omega, l, y, l);  // Y = G Ω
  for (int it = 0; it < spec.power_iters; ++it) {
    orth(st, y, rows, l, q, tmp, small);
    dgemm_rm(st, true, false, cols, l, rows, gd, cols, q, l, z, l);  // Z = Gᵀ Q
    orth(st, z, cols, l, q, tmp, small);
    dgemm_rm(st, false, false, rows, l, cols, gd, cols, q, l, y, l);  // Y = G Z
  }
  orth(st, y, rows, l, omega, tmp, small);                          // Q [rows, l] (Ω's buffer is free)
  double* qy = omega;
  dgemm_rm(st, true, false, cols, l, rows, gd, cols, qy, l, z, l);  // Bᵀ = Gᵀ Q [cols, l]
  const std::vector<double> r = orth(st, z, cols, l, q, tmp, small);  // Bᵀ = Q_z R
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
