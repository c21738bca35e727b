// CUDA twin of ops::rmsnorm_forward/backward (src/ops/rmsnorm.cpp). The float64 sums (Σx²,
// Σ dy·w·x, the dw column sums) run in a fixed order of their own, so they can differ from the
// CPU's in the last bits of the double; everything around them is the CPU's arithmetic in the
// CPU's order (a row whose rstd / coefficient rounds to the same float gives the CPU's bits).
//
// Forward and dx: one warp per row. dw: rows are cut into chunks, a first kernel writes each
// chunk's float64 column sums to the scratch, a second adds them in a fixed tree onto dw. No
// atomics anywhere, so two runs give the same bits.
#include <algorithm>
#include <cstdint>

#include "core/cuda/check.cuh"
#include "ops/cuda/device_util.cuh"
#include "ops/cuda/ops_cuda.hpp"

namespace nibble::cuda::ops {

namespace {

constexpr int kRowThreads = 256;  // 8 warps, one row each
constexpr int kWarpsPerBlock = kRowThreads / 32;
constexpr int kColThreads = 64;

// Enough chunks (≤ 512) to fill the GPU in the partial-sum kernel, few enough that the
// partials stay small next to dy and x. A function of n alone: the summation order depends
// only on the shape.
constexpr int64_t kMaxChunks = 512;
int64_t rows_per_chunk(int64_t n) { return std::max<int64_t>(16, (n + kMaxChunks - 1) / kMaxChunks); }
int64_t chunk_count(int64_t n) { return n > 0 ? (n + rows_per_chunk(n) - 1) / rows_per_chunk(n) : 0; }

unsigned row_grid(int64_t n) { return dev::grid_for(n, kWarpsPerBlock, int64_t(1) << 20); }

// A lane's share of a row is elements lane·W + 32·W·it, it = 0, 1, ... With kIters > 0 (rows
// of at most 32·W·kIters floats) it is held in registers between the reduction and the
// elementwise pass, so the row is read from memory once; with kIters = 0 it is read again. Both
// visit the elements in the same order: the same sums, the same bits.
template <int W, int kIters, class Y>
__global__ void __launch_bounds__(kRowThreads)
    rmsnorm_forward_kernel(const float* __restrict__ x, const float* __restrict__ w, Y* __restrict__ y,
                           float* __restrict__ rstd, int64_t n, int64_t c, float eps) {
  const int lane = threadIdx.x & 31;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5); r < n;
       r += static_cast<int64_t>(gridDim.x) * kWarpsPerBlock) {
    const float* xr = x + r * c;
    Y* yr = y + r * c;
    double ss = 0.0;
    float xv[kIters > 0 ? kIters : 1][W];
    if constexpr (kIters > 0) {
#pragma unroll
      for (int it = 0; it < kIters; ++it) {
        const int64_t j = (static_cast<int64_t>(it) * 32 + lane) * W;
        if (j < c) {
          dev::load<W>(xr + j, xv[it]);
#pragma unroll
          for (int l = 0; l < W; ++l) ss += static_cast<double>(xv[it][l]) * static_cast<double>(xv[it][l]);
        }
      }
    } else {
      for (int64_t j = lane * W; j < c; j += 32 * W) {
        dev::load<W>(xr + j, xv[0]);
#pragma unroll
        for (int l = 0; l < W; ++l) ss += static_cast<double>(xv[0][l]) * static_cast<double>(xv[0][l]);
      }
    }
    ss = dev::warp_sum(ss);
    const double ms = ss / static_cast<double>(c);
    const float rr = static_cast<float>(1.0 / sqrt(ms + static_cast<double>(eps)));
    if (lane == 0) rstd[r] = rr;
    auto emit = [&](int64_t j, float (&v)[W]) {
      float wv[W];
      dev::load<W>(w + j, wv);
#pragma unroll
      for (int l = 0; l < W; ++l) v[l] = __fmul_rn(__fmul_rn(v[l], rr), wv[l]);
      dev::store<W>(yr + j, v);
    };
    if constexpr (kIters > 0) {
#pragma unroll
      for (int it = 0; it < kIters; ++it) {
        const int64_t j = (static_cast<int64_t>(it) * 32 + lane) * W;
        if (j < c) emit(j, xv[it]);
      }
    } else {
      for (int64_t j = lane * W; j < c; j += 32 * W) {
        dev::load<W>(xr + j, xv[0]);
        emit(j, xv[0]);
      }
    }
  }
}

// partials[chunk, col] = Σ_{rows of the chunk, in order} dy·x·r (float64, the CPU's product).
template <int W, class DY>
__global__ void __launch_bounds__(kColThreads)
    rmsnorm_dw_partial_kernel(const DY* __restrict__ dy, const float* __restrict__ x,
                              const float* __restrict__ rstd, double* __restrict__ partials, int64_t n, int64_t c,
                              int64_t rows) {
  const int64_t j = (static_cast<int64_t>(blockIdx.x) * kColThreads + threadIdx.x) * W;
  if (j >= c) return;
  const int64_t chunk = blockIdx.y;
  const int64_t r0 = chunk * rows, r1 = r0 + rows < n ? r0 + rows : n;
  double acc[W];
#pragma unroll
  for (int l = 0; l < W; ++l) acc[l] = 0.0;
#pragma unroll 4
  for (int64_t r = r0; r < r1; ++r) {
    float d[W], v[W];
    dev::load<W>(dy + r * c + j, d);
    dev::load<W>(x + r * c + j, v);
    const double rr = static_cast<double>(rstd[r]);
#pragma unroll
    for (int l = 0; l < W; ++l) acc[l] += static_cast<double>(d[l]) * static_cast<double>(v[l]) * rr;
  }
  double* out = partials + chunk * c + j;
#pragma unroll
  for (int l = 0; l < W; ++l) out[l] = acc[l];
}

// dw[col] = float(double(dw[col]) + Σ_chunks partials[chunk, col]) — the CPU's final step. A
// block covers 32 columns; its kFinalRows rows of threads each add every kFinalRows-th chunk in
// order, and the row totals are then added in row order: a fixed tree, with enough threads in
// flight to hide the latency of the loads.
constexpr int kFinalRows = 32;
__global__ void __launch_bounds__(32 * kFinalRows)
    rmsnorm_dw_final_kernel(const double* __restrict__ partials, float* __restrict__ dw, int64_t c, int64_t chunks) {
  __shared__ double total[kFinalRows][33];  // padded: the column reads below hit distinct banks
  const int64_t j = static_cast<int64_t>(blockIdx.x) * 32 + threadIdx.x;
  double acc = 0.0;
  if (j < c) {
#pragma unroll 4
    for (int64_t k = threadIdx.y; k < chunks; k += kFinalRows) acc += partials[k * c + j];
  }
  total[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y != 0 || j >= c) return;
  double sum = 0.0;
  for (int r = 0; r < kFinalRows; ++r) sum += total[r][threadIdx.x];
  dw[j] = static_cast<float>(static_cast<double>(dw[j]) + sum);
}

// dx = r·dy·w − x·coef with coef = float(r³·Σ dy·w·x / c), or dx += that value (accumulate: the
// residual stream's gradient, one IEEE add as ops::add_inplace would do it after). dx may
// alias dy: each lane reads its own elements of the row (all of them, in the dot product
// pass) before it writes them. The
// second pass reads the row again (mostly from L1): holding it in registers as the forward
// does measured slower on H100 (the register cost halves the occupancy).
template <int W, class DY>
__global__ void __launch_bounds__(kRowThreads)
    rmsnorm_dx_kernel(const DY* dy, const float* __restrict__ x, const float* __restrict__ w,
                      const float* __restrict__ rstd, float* dx, int64_t n, int64_t c, bool accumulate) {
  const int lane = threadIdx.x & 31;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5); r < n;
       r += static_cast<int64_t>(gridDim.x) * kWarpsPerBlock) {
    const DY* dyr = dy + r * c;
    const float* xr = x + r * c;
    double s = 0.0;
    for (int64_t j = lane * W; j < c; j += 32 * W) {
      float d[W], v[W], wv[W];
      dev::load<W>(dyr + j, d);
      dev::load<W>(xr + j, v);
      dev::load<W>(w + j, wv);
#pragma unroll
      for (int l = 0; l < W; ++l) s += static_cast<double>(d[l]) * static_cast<double>(wv[l]) * static_cast<double>(v[l]);
    }
    s = dev::warp_sum(s);
    const float rf = rstd[r];
    const double rd = static_cast<double>(rf);
    const float coef = static_cast<float>(rd * rd * rd * s / static_cast<double>(c));
    float* dxr = dx + r * c;
    for (int64_t j = lane * W; j < c; j += 32 * W) {
      float d[W], v[W], wv[W];
      dev::load<W>(dyr + j, d);
      dev::load<W>(xr + j, v);
      dev::load<W>(w + j, wv);
#pragma unroll
      for (int l = 0; l < W; ++l) d[l] = __fsub_rn(__fmul_rn(__fmul_rn(rf, d[l]), wv[l]), __fmul_rn(v[l], coef));
      if (accumulate) {
        float acc[W];
        dev::load<W>(dxr + j, acc);
#pragma unroll
        for (int l = 0; l < W; ++l) d[l] = __fadd_rn(acc[l], d[l]);
      }
      dev::store<W>(dxr + j, d);
    }
  }
}

// The partial sums are float64 kept in a float scratch: start at the first 8-byte boundary
// (the one float of slack counted in rmsnorm_partials_floats covers the shift).
double* partials_base(float* p) {
  return reinterpret_cast<double*>((reinterpret_cast<uintptr_t>(p) + 7) & ~static_cast<uintptr_t>(7));
}

template <class Y>
void forward_launch(const float* x, const float* w, Y* y, float* rstd, int64_t n, int64_t c, float eps,
                    cudaStream_t stream) {
  if (n < 0 || c <= 0) fail("rmsnorm_forward: bad shape n=", n, " c=", c);
  if (n == 0) return;
  const bool vec = c % 4 == 0 && dev::aligned(x, 16) && dev::aligned(w, 16) && dev::aligned_vec(y, 4);
  const unsigned grid = row_grid(n);
  if (vec && c <= 32 * 4 * 8) rmsnorm_forward_kernel<4, 8, Y><<<grid, kRowThreads, 0, stream>>>(x, w, y, rstd, n, c, eps);
  else if (vec && c <= 32 * 4 * 16) rmsnorm_forward_kernel<4, 16, Y><<<grid, kRowThreads, 0, stream>>>(x, w, y, rstd, n, c, eps);
  else if (vec) rmsnorm_forward_kernel<4, 0, Y><<<grid, kRowThreads, 0, stream>>>(x, w, y, rstd, n, c, eps);
  else rmsnorm_forward_kernel<1, 0, Y><<<grid, kRowThreads, 0, stream>>>(x, w, y, rstd, n, c, eps);
  NIBBLE_CUDA_CHECK_LAUNCH();
}

template <class DY>
void backward_launch(const DY* dy, const float* x, const float* w, const float* rstd, float* dx, float* dw,
                     float* partials, int64_t n, int64_t c, bool accumulate, cudaStream_t stream) {
  if (n < 0 || c <= 0) fail("rmsnorm_backward: bad shape n=", n, " c=", c);
  const int64_t rows = rows_per_chunk(n), chunks = chunk_count(n);
  NIBBLE_CHECK(chunks <= kMaxChunks, "rmsnorm_backward: ", chunks, " row chunks");
  double* part = partials_base(partials);
  // dw first: dx may overwrite dy.
  if (n > 0) {
    const bool vec = c % 4 == 0 && dev::aligned_vec(dy, 4) && dev::aligned(x, 16);
    const int W = vec ? 4 : 1;
    const dim3 grid(static_cast<unsigned>((c / W + kColThreads - 1) / kColThreads), static_cast<unsigned>(chunks));
    if (vec) rmsnorm_dw_partial_kernel<4, DY><<<grid, kColThreads, 0, stream>>>(dy, x, rstd, part, n, c, rows);
    else rmsnorm_dw_partial_kernel<1, DY><<<grid, kColThreads, 0, stream>>>(dy, x, rstd, part, n, c, rows);
    NIBBLE_CUDA_CHECK_LAUNCH();
  }
  // Also with n = 0, as on the CPU (dw + 0.0 turns −0 into +0).
  rmsnorm_dw_final_kernel<<<static_cast<unsigned>((c + 31) / 32), dim3(32, kFinalRows), 0, stream>>>(part, dw, c,
                                                                                                   chunks);
  NIBBLE_CUDA_CHECK_LAUNCH();
  if (n > 0) {
    const bool vec = c % 4 == 0 && dev::aligned_vec(dy, 4) && dev::aligned(x, 16) && dev::aligned(w, 16) &&
                     dev::aligned(dx, 16);
    if (vec) rmsnorm_dx_kernel<4, DY><<<row_grid(n), kRowThreads, 0, stream>>>(dy, x, w, rstd, dx, n, c, accumulate);
    else rmsnorm_dx_kernel<1, DY><<<row_grid(n), kRowThreads, 0, stream>>>(dy, x, w, rstd, dx, n, c, accumulate);
    NIBBLE_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace

void rmsnorm_forward(const float* x, const float* w, float* y, float* rstd, int64_t n, int64_t c, float eps,
                     cudaStream_t stream) {
  forward_launch(x, w, y, rstd, n, c, eps, stream);
}
void rmsnorm_forward(const float* x, const float* w, bf16* y, float* rstd, int64_t n, int64_t c, float eps,
                     cudaStream_t stream) {
  forward_launch(x, w, y, rstd, n, c, eps, stream);
}

int64_t rmsnorm_partials_floats(int64_t n, int64_t c) {
  return 2 * chunk_count(std::max<int64_t>(n, 0)) * std::max<int64_t>(c, 0) + 1;
}

void rmsnorm_backward(const float* dy, const float* x, const float* w, const float* rstd, float* dx, float* dw,
                      float* partials, int64_t n, int64_t c, cudaStream_t stream, bool accumulate) {
  backward_launch(dy, x, w, rstd, dx, dw, partials, n, c, accumulate, stream);
}
void rmsnorm_backward(const bf16* dy, const float* x, const float* w, const float* rstd, float* dx, float* dw,
                      float* partials, int64_t n, int64_t c, cudaStream_t stream, bool accumulate) {
  backward_launch(dy, x, w, rstd, dx, dw, partials, n, c, accumulate, stream);
}

}  // namespace nibble::cuda::ops
