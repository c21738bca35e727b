// CUDA twin of ops::rmsnorm_forward/backward (src/ops/rmsnorm.cpp). The float64 sums (Σx²,
// Σ dy·w·x, the dw column sums) run in a fixed order of their own, so they can differ from the
// CPU's in the last bits of the double; everything around them is the CPU's arithmetic in the
// CPU's order (a row whose rstd / coefficient rounds to the same float gives the CPU's bits).
//
// Forward and dx: one warp per row. dw: rows are cut into chunks, a first kernel writes each
// chunk's float64 column sums to the scratch, a second adds them in chunk order onto dw. No
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
constexpr int kColThreads = 128;

// Enough chunks (≤ 256) to fill the GPU in the partial-sum kernel, few enough that the final
// in-order sum per column stays short. A function of n alone: the summation order depends
// only on the shape.
int64_t rows_per_chunk(int64_t n) { return std::max<int64_t>(16, (n + 255) / 256); }
int64_t chunk_count(int64_t n) { return n > 0 ? (n + rows_per_chunk(n) - 1) / rows_per_chunk(n) : 0; }

unsigned row_grid(int64_t n) { return dev::grid_for(n, kWarpsPerBlock, int64_t(1) << 20); }

template <int W>
__global__ void __launch_bounds__(kRowThreads)
    rmsnorm_forward_kernel(const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ y,
                           float* __restrict__ rstd, int64_t n, int64_t c, float eps) {
  const int lane = threadIdx.x & 31;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5); r < n;
       r += static_cast<int64_t>(gridDim.x) * kWarpsPerBlock) {
    const float* xr = x + r * c;
    double ss = 0.0;
    for (int64_t j = lane * W; j < c; j += 32 * W) {
      float v[W];
      dev::load<W>(xr + j, v);
#pragma unroll
      for (int l = 0; l < W; ++l) ss += static_cast<double>(v[l]) * static_cast<double>(v[l]);
    }
    ss = dev::warp_sum(ss);
    const double ms = ss / static_cast<double>(c);
    const float rr = static_cast<float>(1.0 / sqrt(ms + static_cast<double>(eps)));
    if (lane == 0) rstd[r] = rr;
    float* yr = y + r * c;
    for (int64_t j = lane * W; j < c; j += 32 * W) {
      float v[W], wv[W];
      dev::load<W>(xr + j, v);
      dev::load<W>(w + j, wv);
#pragma unroll
      for (int l = 0; l < W; ++l) v[l] = __fmul_rn(__fmul_rn(v[l], rr), wv[l]);
      dev::store<W>(yr + j, v);
    }
  }
}

// partials[chunk, col] = Σ_{rows of the chunk, in order} dy·x·r (float64, the CPU's product).
template <int W>
__global__ void __launch_bounds__(kColThreads)
    rmsnorm_dw_partial_kernel(const float* __restrict__ dy, const float* __restrict__ x,
                              const float* __restrict__ rstd, double* __restrict__ partials, int64_t n, int64_t c,
                              int64_t rows) {
  const int64_t j = (static_cast<int64_t>(blockIdx.x) * kColThreads + threadIdx.x) * W;
  if (j >= c) return;
  const int64_t chunk = blockIdx.y;
  const int64_t r0 = chunk * rows, r1 = r0 + rows < n ? r0 + rows : n;
  double acc[W];
#pragma unroll
  for (int l = 0; l < W; ++l) acc[l] = 0.0;
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

// dw[col] = float(double(dw[col]) + Σ_chunks partials[chunk, col]) — the CPU's final step.
__global__ void rmsnorm_dw_final_kernel(const double* __restrict__ partials, float* __restrict__ dw, int64_t c,
                                        int64_t chunks) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= c) return;
  double acc = 0.0;
  for (int64_t k = 0; k < chunks; ++k) acc += partials[k * c + j];
  dw[j] = static_cast<float>(static_cast<double>(dw[j]) + acc);
}

// dx = r·dy·w − x·coef with coef = float(r³·Σ dy·w·x / c). dx may alias dy: each lane reads its
// own elements of the row before it writes them (the dot product pass reads the whole row first).
template <int W>
__global__ void __launch_bounds__(kRowThreads)
    rmsnorm_dx_kernel(const float* dy, const float* __restrict__ x, const float* __restrict__ w,
                      const float* __restrict__ rstd, float* dx, int64_t n, int64_t c) {
  const int lane = threadIdx.x & 31;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5); r < n;
       r += static_cast<int64_t>(gridDim.x) * kWarpsPerBlock) {
    const float* dyr = dy + r * c;
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
      dev::store<W>(dxr + j, d);
    }
  }
}

// The partial sums are float64 kept in a float scratch: start at the first 8-byte boundary
// (the one float of slack counted in rmsnorm_partials_floats covers the shift).
double* partials_base(float* p) {
  return reinterpret_cast<double*>((reinterpret_cast<uintptr_t>(p) + 7) & ~static_cast<uintptr_t>(7));
}

}  // namespace

void rmsnorm_forward(const float* x, const float* w, float* y, float* rstd, int64_t n, int64_t c, float eps,
                     cudaStream_t stream) {
  if (n < 0 || c <= 0) fail("rmsnorm_forward: bad shape n=", n, " c=", c);
  if (n == 0) return;
  const bool vec = c % 4 == 0 && dev::aligned(x, 16) && dev::aligned(w, 16) && dev::aligned(y, 16);
  if (vec) rmsnorm_forward_kernel<4><<<row_grid(n), kRowThreads, 0, stream>>>(x, w, y, rstd, n, c, eps);
  else rmsnorm_forward_kernel<1><<<row_grid(n), kRowThreads, 0, stream>>>(x, w, y, rstd, n, c, eps);
  NIBBLE_CUDA_CHECK_LAUNCH();
}

int64_t rmsnorm_partials_floats(int64_t n, int64_t c) {
  return 2 * chunk_count(std::max<int64_t>(n, 0)) * std::max<int64_t>(c, 0) + 1;
}

void rmsnorm_backward(const float* dy, const float* x, const float* w, const float* rstd, float* dx, float* dw,
                      float* partials, int64_t n, int64_t c, cudaStream_t stream) {
  if (n < 0 || c <= 0) fail("rmsnorm_backward: bad shape n=", n, " c=", c);
  const int64_t rows = rows_per_chunk(n), chunks = chunk_count(n);
  NIBBLE_CHECK(chunks <= 256, "rmsnorm_backward: ", chunks, " row chunks");
  double* part = partials_base(partials);
  // dw first: dx may overwrite dy.
  if (n > 0) {
    const bool vec = c % 4 == 0 && dev::aligned(dy, 16) && dev::aligned(x, 16);
    const int W = vec ? 4 : 1;
    const dim3 grid(static_cast<unsigned>((c / W + kColThreads - 1) / kColThreads), static_cast<unsigned>(chunks));
    if (vec) rmsnorm_dw_partial_kernel<4><<<grid, kColThreads, 0, stream>>>(dy, x, rstd, part, n, c, rows);
    else rmsnorm_dw_partial_kernel<1><<<grid, kColThreads, 0, stream>>>(dy, x, rstd, part, n, c, rows);
    NIBBLE_CUDA_CHECK_LAUNCH();
  }
  // Also with n = 0, as on the CPU (dw + 0.0 turns −0 into +0).
  rmsnorm_dw_final_kernel<<<static_cast<unsigned>((c + 255) / 256), 256, 0, stream>>>(part, dw, c, chunks);
  NIBBLE_CUDA_CHECK_LAUNCH();
  if (n > 0) {
    const bool vec = c % 4 == 0 && dev::aligned(dy, 16) && dev::aligned(x, 16) && dev::aligned(w, 16) &&
                     dev::aligned(dx, 16);
    if (vec) rmsnorm_dx_kernel<4><<<row_grid(n), kRowThreads, 0, stream>>>(dy, x, w, rstd, dx, n, c);
    else rmsnorm_dx_kernel<1><<<row_grid(n), kRowThreads, 0, stream>>>(dy, x, w, rstd, dx, n, c);
    NIBBLE_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace nibble::cuda::ops
