// SPEC §6 statistics on the device (see stats_cuda.hpp). Every sum is float64 and deterministic:
// fixed grids, per-thread sums in a fixed order, block reductions in a fixed tree, and the
// partials combined in index order (on the host, or by one thread per column).
#include "nn/cuda/stats_cuda.hpp"

#include <cuda_bf16.h>

#include <algorithm>
#include <array>

#include "core/cuda/check.cuh"
#include "nibble/error.hpp"

namespace nibble::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kErrorBlocks = 1024;  // error sums: a fixed grid, so a fixed summation order
constexpr int64_t kChunkRows = 128; // column sums: rows per partial

__device__ inline float load(const float* p, int64_t i) { return p[i]; }
__device__ inline float load(const __nv_bfloat16* p, int64_t i) { return __bfloat162float(p[i]); }

// Sums (or maxima) of kN doubles per thread over the block, into out[kN·blockIdx.x + j].
template <int kN>
__device__ void block_reduce(double (&v)[kN], const bool (&is_max)[kN], double* out) {
  __shared__ double sh[kN][kThreads];
  for (int j = 0; j < kN; ++j) sh[j][threadIdx.x] = v[j];
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s)
      for (int j = 0; j < kN; ++j) {
        const double a = sh[j][threadIdx.x], b = sh[j][threadIdx.x + s];
        sh[j][threadIdx.x] = is_max[j] ? (b > a ? b : a) : a + b;
      }
    __syncthreads();
  }
  if (threadIdx.x == 0)
    for (int j = 0; j < kN; ++j) out[kN * blockIdx.x + j] = sh[j][0];
}

// Σx², Σ(x − x̂)², Σ|x|, Σ(|x̂| − |x|), x̂ = stored · scale (in float, as the host decoded it).
template <class T>
__global__ void error_sums_kernel(const float* x, const T* xhat, const float* tensor_scale, int64_t n, double* part) {
  const float scale = tensor_scale ? tensor_scale[1] : 1.0f;
  double v[4] = {0, 0, 0, 0};
  for (int64_t i = blockIdx.x * int64_t{kThreads} + threadIdx.x; i < n; i += int64_t{kThreads} * gridDim.x) {
    float h = load(xhat, i);
    if (tensor_scale) h *= scale;
    const double a = x[i], b = h, e = a - b;
    v[0] += a * a;
    v[1] += e * e;
    v[2] += fabs(a);
    v[3] += fabs(b) - fabs(a);
  }
  constexpr bool kAllSums[4] = {false, false, false, false};
  block_reduce<4>(v, kAllSums, part);
}

// Per chunk of kChunkRows rows and per column k: Σ_t w_t x[t, k] (w_t = 1 without weights), and
// with sq, Σ_t x[t, k]². Threads run along the columns, so a warp reads one row's consecutive
// floats.
__global__ void column_partials_kernel(const float* x, int64_t rows, int64_t cols, const double* weight, double* sum,
                                       double* sq) {
  const int64_t k = blockIdx.x * int64_t{kThreads} + threadIdx.x;
  if (k >= cols) return;
  const int64_t t0 = blockIdx.y * kChunkRows, t1 = t0 + kChunkRows < rows ? t0 + kChunkRows : rows;
  double s = 0, q = 0;
  for (int64_t t = t0; t < t1; ++t) {
    const double v = x[t * cols + k];
    s += weight ? v * weight[t] : v;
    q += v * v;
  }
  sum[blockIdx.y * cols + k] = s;
  if (sq) sq[blockIdx.y * cols + k] = q;
}

// out[k] = Σ_c part[c, k] over the chunks in order.
__global__ void sum_chunks_kernel(const double* part, int64_t chunks, int64_t cols, double* out) {
  const int64_t k = blockIdx.x * int64_t{kThreads} + threadIdx.x;
  if (k >= cols) return;
  double s = 0;
  for (int64_t c = 0; c < chunks; ++c) s += part[c * cols + k];
  out[k] = s;
}

// y[t] = x_t · v, a warp per row (lanes stride the row, then a fixed shuffle tree).
__global__ void row_dot_kernel(const float* x, int64_t rows, int64_t cols, const double* v, double* y) {
  const int64_t t = blockIdx.x * int64_t{kThreads / 32} + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (t >= rows) return;
  double s = 0;
  for (int64_t k = lane; k < cols; k += 32) s += static_cast<double>(x[t * cols + k]) * v[k];
  for (int o = 16; o > 0; o >>= 1) s += __shfl_down_sync(0xffffffffu, s, o);
  if (lane == 0) y[t] = s;
}

// Per (row, 1×block block): the block's amax in X and in X − 1μᵀ; per CUDA block the maxima
// and sums of those.
__global__ void amax_kernel(const float* x, int64_t rows, int64_t cols, int64_t block, const double* mu, double* part) {
  const int64_t per_row = (cols + block - 1) / block, n = rows * per_row;
  double v[4] = {0, 0, 0, 0};
  for (int64_t i = blockIdx.x * int64_t{kThreads} + threadIdx.x; i < n; i += int64_t{kThreads} * gridDim.x) {
    const int64_t t = i / per_row, k0 = (i % per_row) * block, k1 = k0 + block < cols ? k0 + block : cols;
    double ba = 0, bc = 0;
    for (int64_t k = k0; k < k1; ++k) {
      const double a = fabs(static_cast<double>(x[t * cols + k]));
      const double c = fabs(static_cast<double>(x[t * cols + k]) - mu[k]);
      ba = a > ba ? a : ba;
      bc = c > bc ? c : bc;
    }
    v[0] = ba > v[0] ? ba : v[0];
    v[1] = bc > v[1] ? bc : v[1];
    v[2] += ba;
    v[3] += bc;
  }
  constexpr bool kOps[4] = {true, true, false, false};
  block_reduce<4>(v, kOps, part);
}

int grid_for(int64_t n, int cap) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(cap, (n + kThreads - 1) / kThreads)));
}

// n doubles from the device into s.host.
const double* fetch(const double* d, int64_t n, StatsScratch& s, cudaStream_t st) {
  s.host.resize(static_cast<size_t>(n));
  NIBBLE_CUDA_CHECK(cudaMemcpyAsync(s.host.data(), d, static_cast<size_t>(n) * sizeof(double), cudaMemcpyDeviceToHost, st));
  NIBBLE_CUDA_CHECK(cudaStreamSynchronize(st));
  return s.host.data();
}

}  // namespace

ErrorStats error_stats_device(const float* x, const void* xhat, GemmDtype xhat_type, const float* tensor_scale,
                              int64_t n, StatsScratch& s, cudaStream_t st) {
  if (n <= 0) return error_stats_from_sums(0, 0, 0, 0);
  const int grid = grid_for(n, kErrorBlocks);
  double* part = s.part.as<double>(static_cast<size_t>(4 * grid));
  if (xhat_type == GemmDtype::BF16)
    error_sums_kernel<<<grid, kThreads, 0, st>>>(x, static_cast<const __nv_bfloat16*>(xhat), tensor_scale, n, part);
  else
    error_sums_kernel<<<grid, kThreads, 0, st>>>(x, static_cast<const float*>(xhat), tensor_scale, n, part);
  NIBBLE_CUDA_CHECK_LAUNCH();
  const double* h = fetch(part, 4 * grid, s, st);
  double sum[4] = {0, 0, 0, 0};
  for (int b = 0; b < grid; ++b)
    for (int j = 0; j < 4; ++j) sum[j] += h[4 * b + j];
  return error_stats_from_sums(sum[0], sum[1], sum[2], sum[3]);
}

AnisotropyStats anisotropy_stats_device(const float* x, int64_t rows, int64_t cols, int block, int power_iters,
                                        StatsScratch& s, cudaStream_t st, uint64_t seed) {
  if (rows < 1 || cols < 1) fail("anisotropy stats need a non-empty matrix, got [", rows, ", ", cols, "]");
  const int64_t chunks = (rows + kChunkRows - 1) / kChunkRows;
  // the chunks are the column kernels' grid y (at most 65535)
  if (chunks > 65535) fail("anisotropy stats on the device: ", rows, " rows is more than ", 65535 * kChunkRows);
  const dim3 col_grid(static_cast<unsigned>((cols + kThreads - 1) / kThreads), static_cast<unsigned>(chunks));
  const unsigned col_blocks = static_cast<unsigned>((cols + kThreads - 1) / kThreads);
  // part: two [chunks, cols] arrays; vec: v and the column results (2 × cols); rowvec: Xv
  double* part = s.part.as<double>(static_cast<size_t>(2 * chunks * cols));
  double* vec = s.vec.as<double>(static_cast<size_t>(2 * cols));
  double* dv = vec;
  double* dw = vec + cols;
  double* xv = s.rowvec.as<double>(static_cast<size_t>(rows));

  AnisotropyPasses p;
  p.moments = [&](std::vector<double>& colsum, double& fro2) {
    column_partials_kernel<<<col_grid, kThreads, 0, st>>>(x, rows, cols, nullptr, part, part + chunks * cols);
    NIBBLE_CUDA_CHECK_LAUNCH();
    sum_chunks_kernel<<<col_blocks, kThreads, 0, st>>>(part, chunks, cols, dv);
    sum_chunks_kernel<<<col_blocks, kThreads, 0, st>>>(part + chunks * cols, chunks, cols, dw);
    NIBBLE_CUDA_CHECK_LAUNCH();
    const double* h = fetch(vec, 2 * cols, s, st);
    std::copy(h, h + cols, colsum.begin());
    fro2 = 0;
    for (int64_t k = 0; k < cols; ++k) fro2 += h[cols + k];
  };
  p.gram = [&](const std::vector<double>& v, std::vector<double>& w) {
    NIBBLE_CUDA_CHECK(cudaMemcpyAsync(dv, v.data(), static_cast<size_t>(cols) * sizeof(double), cudaMemcpyHostToDevice, st));
    row_dot_kernel<<<static_cast<unsigned>((rows + kThreads / 32 - 1) / (kThreads / 32)), kThreads, 0, st>>>(x, rows, cols, dv, xv);
    NIBBLE_CUDA_CHECK_LAUNCH();
    column_partials_kernel<<<col_grid, kThreads, 0, st>>>(x, rows, cols, xv, part, nullptr);
    NIBBLE_CUDA_CHECK_LAUNCH();
    sum_chunks_kernel<<<col_blocks, kThreads, 0, st>>>(part, chunks, cols, dw);
    NIBBLE_CUDA_CHECK_LAUNCH();
    // w (cols entries, as anisotropy_stats_with sized it) and Xv (rows) back: ‖Xv‖² summed here in row order
    NIBBLE_CUDA_CHECK(cudaMemcpyAsync(w.data(), dw, static_cast<size_t>(cols) * sizeof(double), cudaMemcpyDeviceToHost, st));
    const double* y = fetch(xv, rows, s, st);
    double sigma2 = 0;
    for (int64_t t = 0; t < rows; ++t) sigma2 += y[t] * y[t];
    return sigma2;
  };
  p.amax = [&](const std::vector<double>& mu) {
    NIBBLE_CUDA_CHECK(cudaMemcpyAsync(dv, mu.data(), static_cast<size_t>(cols) * sizeof(double), cudaMemcpyHostToDevice, st));
    const int64_t n = rows * ((cols + block - 1) / block);
    const int grid = grid_for(n, kErrorBlocks);
    double* ap = part;  // 4 × grid ≤ 2 × chunks × cols
    if (4 * int64_t{grid} > 2 * chunks * cols) ap = s.part.as<double>(static_cast<size_t>(4 * grid));
    amax_kernel<<<grid, kThreads, 0, st>>>(x, rows, cols, block, dv, ap);
    NIBBLE_CUDA_CHECK_LAUNCH();
    const double* h = fetch(ap, 4 * grid, s, st);
    std::array<double, 4> a{0, 0, 0, 0};
    for (int b = 0; b < grid; ++b) {
      a[0] = std::max(a[0], h[4 * b]);
      a[1] = std::max(a[1], h[4 * b + 1]);
      a[2] += h[4 * b + 2];
      a[3] += h[4 * b + 3];
    }
    return a;
  };
  return anisotropy_stats_with(rows, cols, block, power_iters, seed, p);
}

}  // namespace nibble::cuda
