// CUDA twin of ops::rope_forward/backward (src/ops/rope.cpp). The cos/sin table is computed on
// the host with the CPU's expressions (same libm calls, so the same doubles); the rotation runs
// in float64 with the CPU's products and one rounding to float, so results are bit-identical.
#include <cmath>
#include <cstdint>
#include <vector>

#include "core/cuda/check.cuh"
#include "ops/cuda/device_util.cuh"
#include "ops/cuda/ops_cuda.hpp"

namespace nibble::cuda::ops {

namespace {

constexpr int kThreads = 256;

// One thread per W consecutive pairs (i, i + d/2) of one head of one row.
template <int W, class T>
__global__ void rope_kernel(T* __restrict__ x, int64_t ld, int64_t t, int64_t h, int64_t half,
                            const double* __restrict__ cos_sin, bool inverse, int64_t total) {
  const int64_t groups = half / W;
  for (int64_t g = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; g < total;
       g += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i0 = (g % groups) * W;
    const int64_t rest = g / groups;
    const int64_t head = rest % h, row = rest / h;
    const int64_t pos = row % t;
    T* v = x + row * ld + head * 2 * half + i0;
    const double* cs = cos_sin + 2 * (pos * half + i0);
    float a[W], b[W];
    dev::load<W>(v, a);
    dev::load<W>(v + half, b);
#pragma unroll
    for (int l = 0; l < W; ++l) {
      const double c = cs[2 * l];
      const double s = inverse ? -cs[2 * l + 1] : cs[2 * l + 1];  // the CPU's sign · sin, exact
      const double x1 = static_cast<double>(a[l]), x2 = static_cast<double>(b[l]);
      a[l] = __double2float_rn(__dsub_rn(__dmul_rn(x1, c), __dmul_rn(x2, s)));
      b[l] = __double2float_rn(__dadd_rn(__dmul_rn(x2, c), __dmul_rn(x1, s)));
    }
    dev::store<W>(v, a);
    dev::store<W>(v + half, b);
  }
}

}  // namespace

// The expressions of the CPU's table (src/ops/rope.cpp) verbatim: std::pow for the inverse
// frequencies, one product for θ, std::cos / std::sin.
void rope_table(double* host_cos_sin, int64_t t, int64_t d, double base) {
  if (d <= 0 || d % 2 != 0) fail("rope: head dimension ", d, " must be even and positive");
  if (!(base > 0.0)) fail("rope: base ", base, " must be positive");
  if (t < 0) fail("rope: sequence length ", t, " must not be negative");
  const int64_t half = d / 2;
  std::vector<double> inv_freq(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i)
    inv_freq[static_cast<size_t>(i)] = std::pow(base, -2.0 * static_cast<double>(i) / static_cast<double>(d));
  for (int64_t p = 0; p < t; ++p)
    for (int64_t i = 0; i < half; ++i) {
      const double theta = static_cast<double>(p) * inv_freq[static_cast<size_t>(i)];
      host_cos_sin[2 * (p * half + i)] = std::cos(theta);
      host_cos_sin[2 * (p * half + i) + 1] = std::sin(theta);
    }
}

namespace {
template <class T>
void rope_launch(T* x, int64_t ld, int64_t b, int64_t t, int64_t h, int64_t d, const double* cos_sin, bool inverse,
                 cudaStream_t stream) {
  if (d <= 0 || d % 2 != 0) fail("rope: head dimension ", d, " must be even and positive");
  if (b <= 0 || t <= 0 || h <= 0) return;
  if (ld < h * d) fail("rope: row stride ", ld, " is shorter than ", h, " heads of ", d);
  const int64_t half = d / 2;
  // Widest access that every head start, every half offset and the row stride keep aligned.
  int w = 1;
  if (half % 4 == 0 && ld % 4 == 0 && dev::aligned_vec(x, 4)) w = 4;
  else if (half % 2 == 0 && ld % 2 == 0 && dev::aligned_vec(x, 2)) w = 2;
  const int64_t total = b * t * h * (half / w);
  const unsigned grid = dev::grid_for(total, kThreads);
  switch (w) {
    case 4: rope_kernel<4, T><<<grid, kThreads, 0, stream>>>(x, ld, t, h, half, cos_sin, inverse, total); break;
    case 2: rope_kernel<2, T><<<grid, kThreads, 0, stream>>>(x, ld, t, h, half, cos_sin, inverse, total); break;
    default: rope_kernel<1, T><<<grid, kThreads, 0, stream>>>(x, ld, t, h, half, cos_sin, inverse, total); break;
  }
  NIBBLE_CUDA_CHECK_LAUNCH();
}
}  // namespace

void rope_apply(float* x, int64_t ld, int64_t b, int64_t t, int64_t h, int64_t d, const double* cos_sin,
                bool inverse, cudaStream_t stream) {
  rope_launch(x, ld, b, t, h, d, cos_sin, inverse, stream);
}
void rope_apply(bf16* x, int64_t ld, int64_t b, int64_t t, int64_t h, int64_t d, const double* cos_sin,
                bool inverse, cudaStream_t stream) {
  rope_launch(x, ld, b, t, h, d, cos_sin, inverse, stream);
}

}  // namespace nibble::cuda::ops
