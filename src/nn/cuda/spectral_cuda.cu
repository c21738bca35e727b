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

// The factors of one CholeskyQR pass, in one block, in shared memory: the upper-triangular R with
// RᵀR = g (l×l, row-major) and its inverse (so that the pass's solve is a GEMM: a cuBLAS
// triangular solve of a [16384, 72] block took as long as the rest of the pass). A pivot that is
// not safely positive (a rank-deficient subspace, e.g. an all-zero gradient) is replaced by a
// tiny one so that the null directions come out as (near-)zero columns, which carry σ = 0.
//
// The kernel is latency-bound (one SM, l dependent steps), so each step has one barrier and a
// short critical path: step j reads row j as it stands and scales its entries by the pivot's
// reciprocal on the fly while it updates the rows below; row j is stored scaled one step later,
// when nothing reads it; and the thread that finishes the next diagonal entry computes the next
// reciprocal pivot at once, before the barrier. Each entry of R sees r[p,i]·r[p,c] subtracted in
// the order p = 0, 1, ... as in the sequential loop of SM90_Spectral's reference, bit for bit.
//
// R⁻¹: the same row operations applied to the identity give W = R⁻ᵀ (lower), in the same steps
// at no extra barrier, when W fits in shared memory too (l ≤ 119 on sm_90); otherwise one warp
// per column by back substitution afterwards, the column's entries in registers.
constexpr int kMaxL = 192;  // registers per lane for a column of R⁻¹ in the fallback: kMaxL / 32
__global__ void cholesky_inverse_kernel(const double* g, int l, double* r, double* rinv, bool w_shared) {
  extern __shared__ double a[];  // [l, ld], the l reciprocal pivots, then W [l, ld] if w_shared
  const int ld = l | 1;           // an odd row stride: a warp reading down a column hits distinct banks
  double* inv_piv = a + l * ld;
  double* w = w_shared && rinv ? inv_piv + l : nullptr;
  __shared__ double floor_s;
  const int tid = threadIdx.x, nt = blockDim.x, lane = tid % 32, nw = nt / 32;
  for (int idx = tid; idx < l * l; idx += nt) {
    const int i = idx / l, c = idx % l;
    a[i * ld + c] = c >= i ? g[idx] : 0.0;
    if (w) w[i * ld + c] = c == i ? 1.0 : 0.0;
  }
  if (tid == 0) {
    double tr = 0;
    for (int i = 0; i < l; ++i) tr = __dadd_rn(tr, g[i * l + i]);
    floor_s = __dmul_rn(fmax(tr, 1e-300), 1e-14);
    inv_piv[0] = __drcp_rn(g[0] > floor_s ? __dsqrt_rn(g[0]) : __dsqrt_rn(floor_s));
  }
  __syncthreads();
  for (int j = 0; j < l; ++j) {
    const double ip = inv_piv[j];
    if (j > 0) {  // row j − 1 is final: nothing reads it in this step
      const int pr = j - 1;
      const double ipr = inv_piv[pr];
      for (int c = pr + tid; c < l; c += nt) a[pr * ld + c] = c == pr ? __drcp_rn(ipr) : __dmul_rn(a[pr * ld + c], ipr);
      if (w)
        for (int c = tid; c <= pr; c += nt) w[pr * ld + c] = __dmul_rn(w[pr * ld + c], ipr);
    }
    // the rows below: a warp per row (dealt round-robin), its lanes along it; row j + 1's
    // diagonal is its warp 0's lane 0's first entry, whose pivot that lane computes straight away
    for (int i = j + 1 + tid / 32; i < l; i += nw) {
      const double rji = __dmul_rn(a[j * ld + i], ip);
      for (int c = i + lane; c < l; c += 32) {
        const double v = __dsub_rn(a[i * ld + c], __dmul_rn(rji, __dmul_rn(a[j * ld + c], ip)));
        a[i * ld + c] = v;
        if (c == j + 1 && i == j + 1) inv_piv[j + 1] = __drcp_rn(v > floor_s ? __dsqrt_rn(v) : __dsqrt_rn(floor_s));
      }
      if (w)
        for (int c = lane; c <= j; c += 32) w[i * ld + c] = __dsub_rn(w[i * ld + c], __dmul_rn(rji, __dmul_rn(w[j * ld + c], ip)));
    }
    __syncthreads();
  }
  {
    const int pr = l - 1;
    if (tid == 0) a[pr * ld + pr] = __drcp_rn(inv_piv[pr]);
    if (w)
      for (int c = tid; c <= pr; c += nt) w[pr * ld + c] = __dmul_rn(w[pr * ld + c], inv_piv[pr]);
  }
  __syncthreads();
  for (int idx = tid; idx < l * l; idx += nt) r[idx] = a[idx / l * ld + idx % l];
  if (!rinv) return;  // the factor alone (bench)
  if (w) {
    for (int idx = tid; idx < l * l; idx += nt) rinv[idx] = w[idx % l * ld + idx / l];  // R⁻¹ = Wᵀ
    return;
  }
  constexpr int kPer = kMaxL / 32;
  for (int c = tid / 32; c < l; c += nw) {
    double x[kPer];
#pragma unroll
    for (int q = 0; q < kPer; ++q) x[q] = lane + 32 * q == c ? 1.0 : 0.0;
    for (int i = c; i >= 0; --i) {
      const int owner = i % 32, slot = i / 32;
      double bi = 0.0;
#pragma unroll
      for (int q = 0; q < kPer; ++q)
        if (q == slot) bi = x[q];
      bi = __shfl_sync(0xffffffffu, bi, owner);
      const double xi = __dmul_rn(bi, inv_piv[i]);
#pragma unroll
      for (int q = 0; q < kPer; ++q) {
        const int p = lane + 32 * q;
        if (p == i) x[q] = xi;
        else if (p < i) x[q] = __dsub_rn(x[q], __dmul_rn(xi, a[p * ld + i]));
      }
    }
#pragma unroll
    for (int q = 0; q < kPer; ++q) {
      const int p = lane + 32 * q;
      if (p < l) rinv[p * l + c] = x[q];
    }
  }
}

// Shared memory of cholesky_inverse_kernel for l×l: the factor and the pivots, and W when
// with_w (+ the kernel's static double).
size_t cholesky_shared_bytes(int64_t l, bool with_w) {
  return static_cast<size_t>((with_w ? 2 : 1) * l * (l | 1) + l + 1) * sizeof(double);
}

int max_shared_per_block() {
  static const int optin = [] {
    int dev = 0, v = 0;
    NIBBLE_CUDA_CHECK(cudaGetDevice(&dev));
    NIBBLE_CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    return v;
  }();
  return optin;
}

bool inverse_in_shared(int64_t l) {
  return cholesky_shared_bytes(l, true) <= static_cast<size_t>(max_shared_per_block());
}

void ensure_cholesky_fits(int64_t l) {
  if (l > kMaxL)
    fail("spectral split: rank + oversample = ", l, " is more than the GPU Cholesky's ", kMaxL,
         ": use a smaller spectral_rank");
  const size_t bytes = cholesky_shared_bytes(l, inverse_in_shared(l));
  if (bytes > static_cast<size_t>(max_shared_per_block()))
    fail("spectral split: rank + oversample = ", l, " needs its ", l, "x", l,
         " float64 Cholesky factor in one block's shared memory (", bytes, " bytes; this GPU allows ",
         max_shared_per_block(), "): use a smaller spectral_rank");
  const size_t dynamic = bytes - sizeof(double);  // less the kernel's static double
  if (dynamic > 48 * 1024)
    NIBBLE_CUDA_CHECK(cudaFuncSetAttribute(cholesky_inverse_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(dynamic)));
}

void cholesky_inverse_device(cudaStream_t st, const double* g, int64_t l, double* r, double* rinv, int threads) {
  const bool ws = inverse_in_shared(l);
  cholesky_inverse_kernel<<<1, threads, cholesky_shared_bytes(l, ws) - sizeof(double), st>>>(g, static_cast<int>(l), r,
                                                                                              rinv, ws);
  NIBBLE_CUDA_CHECK_LAUNCH();
}

std::vector<double> orth(cudaStream_t st, const double* y, int64_t m, int64_t l, double* q, double* tmp,
                         const OrthScratch& sc, int passes, bool want_r) {
  if (passes < 1 || passes > 2) fail("orth: passes must be 1 or 2, not ", passes);
  const double* src = y;
  for (int pass = 0; pass < passes; ++pass) {
    dgemm_rm(st, true, false, l, l, m, src, l, src, l, sc.gram, l);  // G = srcᵀ src
    cholesky_inverse_device(st, sc.gram, l, sc.r[pass], sc.rinv);
    double* dst = pass + 1 == passes ? q : tmp;
    dgemm_rm(st, false, false, m, l, l, src, l, sc.rinv, l, dst, l);  // dst = src R⁻¹
    src = dst;
  }
  if (!want_r) return {};
  std::vector<double> r0(static_cast<size_t>(l * l)), r1;
  NIBBLE_CUDA_CHECK(cudaMemcpyAsync(r0.data(), sc.r[0], r0.size() * 8, cudaMemcpyDeviceToHost, st));
  if (passes == 2) {
    r1.resize(r0.size());
    NIBBLE_CUDA_CHECK(cudaMemcpyAsync(r1.data(), sc.r[1], r1.size() * 8, cudaMemcpyDeviceToHost, st));
  }
  NIBBLE_CUDA_CHECK(cudaStreamSynchronize(st));
  if (passes == 1) return r0;
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
  double* tmp = lr.work[5].as<double>(static_cast<size_t>(std::max(rows, cols) * l + 4 * l * l + std::max(rows, cols) * k));
  double* small = tmp + std::max(rows, cols) * l;  // the Gram matrix, later the small factors
  const OrthScratch sc{small, {small + l * l, small + 2 * l * l}, small + 3 * l * l};
  double* prod = small + 4 * l * l;
  to_double(st, g, gd, rows * cols);
  fill_omega(st, omega, cols * l, spec.seed, spec.stream);
  dgemm_rm(st, false, false, rows, l, cols, gd, cols, omega, l, y, l);  // Y = G Ω
  // Inside the power iterations one CholeskyQR pass per iteration, of Y only: it has to keep
  // the basis well enough conditioned for the next two products (Y = G Gᵀ Q squares the
  // spread of σ over the subspace; in float64 that loses only directions far below what a 4-bit
  // residual resolves), not orthonormal, and the subspace is the same whatever the basis (the
  // CPU reference orthonormalises Z as well, with Householder). The two bases the factors are
  // built from get two passes (CholeskyQR2: orthonormal to rounding).
  for (int it = 0; it < spec.power_iters; ++it) {
    orth(st, y, rows, l, q, tmp, sc, 1, false);
    dgemm_rm(st, true, false, cols, l, rows, gd, cols, q, l, z, l);  // Z = Gᵀ Q
    dgemm_rm(st, false, false, rows, l, cols, gd, cols, z, l, y, l);  // Y = G Z
  }
  orth(st, y, rows, l, omega, tmp, sc, 2, false);                  // Q [rows, l] (Ω's buffer is free)
  double* qy = omega;
  dgemm_rm(st, true, false, cols, l, rows, gd, cols, qy, l, z, l);  // Bᵀ = Gᵀ Q [cols, l]
  const std::vector<double> r = orth(st, z, cols, l, q, tmp, sc, 2, true);  // Bᵀ = Q_z R
  // r row-major upper → column-major for the small SVD
  std::vector<double> rc(static_cast<size_t>(l * l));
  for (int64_t i = 0; i < l; ++i)
    for (int64_t j = 0; j < l; ++j) rc[j * l + i] = r[i * l + j];
  std::vector<double> ur, vk;
  std::vector<float> sk;
  spectral_small_svd(rc, l, k, ur, vk, sk);
  // U = Q vk [rows, k], V = Q_z ur [cols, k]. Both small factors go up in one copy, as row-major
  // [l, k] each, vk then ur, into `small` (4 l² doubles, k ≤ l), so nothing has to wait between
  // the U and V products. (A copy from pageable host memory already waits for the stream, so
  // the explicit sync this replaced cost little: run 62 measured no change in a metis step.)
  std::vector<double> factors(static_cast<size_t>(2 * l * k));
  for (int64_t t = 0; t < l; ++t)
    for (int64_t c = 0; c < k; ++c) {
      factors[t * k + c] = vk[c * l + t];
      factors[(l + t) * k + c] = ur[c * l + t];
    }
  lr.rows = rows;
  lr.cols = cols;
  lr.rank = static_cast<int>(k);
  float* u = lr.u.as<float>(static_cast<size_t>(rows * k));
  float* v = lr.v.as<float>(static_cast<size_t>(cols * k));
  float* s = lr.s.as<float>(static_cast<size_t>(k));
  NIBBLE_CUDA_CHECK(cudaMemcpyAsync(small, factors.data(), factors.size() * 8, cudaMemcpyHostToDevice, st));
  NIBBLE_CUDA_CHECK(cudaMemcpyAsync(s, sk.data(), sk.size() * 4, cudaMemcpyHostToDevice, st));
  dgemm_rm(st, false, false, rows, k, l, qy, l, small, k, prod, k);
  to_float_kernel<<<grid_for(rows * k), 256, 0, st>>>(prod, u, rows * k);
  // prod is free again once U is converted (same stream)
  dgemm_rm(st, false, false, cols, k, l, q, l, small + l * k, k, prod, k);
  to_float_kernel<<<grid_for(cols * k), 256, 0, st>>>(prod, v, cols * k);
  NIBBLE_CUDA_CHECK(cudaStreamSynchronize(st));  // callers may read U, S, V with a copy on another stream
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
