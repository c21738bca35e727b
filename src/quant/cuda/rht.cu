// CUDA twin of src/quant/rht.cpp: the random Hadamard transform with float64 butterflies in
// the CPU's stage order and a single rounding to fp32, so the result is bit-identical to the
// CPU reference.
#include <algorithm>
#include <cmath>

#include "core/cuda/check.cuh"
#include "nibble/cuda.hpp"
#include "nibble/quant/rht.hpp"
#include "quant/cuda/rht_butterfly.cuh"

namespace nibble::cuda {

namespace {

// One n-block per group of min(n, 32) lanes (rht_butterfly.cuh); loads and stores coalesced.
template <int N, bool kInverse>
__global__ void rht_kernel(float* __restrict__ x, int64_t nblocks, const float* __restrict__ signs, double scale) {
  constexpr int kLanes = RhtLanes<N>::kLanes, kPerLane = RhtLanes<N>::kPerLane;
  const int64_t g = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t blk = g / kLanes;
  const int lane = static_cast<int>(g % kLanes);
  const bool live = blk < nblocks;  // dead lanes still take part in the shuffles
  float* p = x + (live ? blk : 0) * N;
  double t[kPerLane];
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int pos = lane + kLanes * i;
    const double v = live ? static_cast<double>(p[pos]) : 0.0;
    t[i] = kInverse ? v : v * static_cast<double>(signs[pos]);
  }
  rht_butterflies<N>(t, lane);
  if (!live) return;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int pos = lane + kLanes * i;
    p[pos] = kInverse ? static_cast<float>(t[i] * scale * static_cast<double>(signs[pos])) : static_cast<float>(t[i] * scale);
  }
}

template <bool kInverse>
void launch_rht(float* d_x, int64_t rows, int64_t cols, int n, const float* d_signs, cudaStream_t st) {
  NIBBLE_CHECK(rht_size_valid(n) && cols % n == 0, "rht n=", n, " cols=", cols);
  const int64_t nblocks = rows * (cols / n);
  if (nblocks == 0) return;
  const double scale = 1.0 / std::sqrt(static_cast<double>(n));
  constexpr int kThreads = 256;
  const int64_t threads = nblocks * std::min(n, 32);
  const unsigned grid = static_cast<unsigned>((threads + kThreads - 1) / kThreads);
  switch (n) {
    case 16: rht_kernel<16, kInverse><<<grid, kThreads, 0, st>>>(d_x, nblocks, d_signs, scale); break;
    case 32: rht_kernel<32, kInverse><<<grid, kThreads, 0, st>>>(d_x, nblocks, d_signs, scale); break;
    case 64: rht_kernel<64, kInverse><<<grid, kThreads, 0, st>>>(d_x, nblocks, d_signs, scale); break;
    default: rht_kernel<128, kInverse><<<grid, kThreads, 0, st>>>(d_x, nblocks, d_signs, scale); break;
  }
  NIBBLE_CUDA_CHECK_LAUNCH();
}

}  // namespace

void rht_forward(float* d_x, int64_t rows, int64_t cols, int n, const float* d_signs, void* stream) {
  launch_rht<false>(d_x, rows, cols, n, d_signs, as_stream(stream));
}
void rht_inverse(float* d_x, int64_t rows, int64_t cols, int n, const float* d_signs, void* stream) {
  launch_rht<true>(d_x, rows, cols, n, d_signs, as_stream(stream));
}

std::vector<float> rht_forward_host(const float* x, int64_t rows, int64_t cols, int n,
                                    const std::vector<float>& signs, bool inverse) {
  validate_rht(n, cols, signs);
  const size_t sz = static_cast<size_t>(rows * cols);
  DeviceBuffer<float> dx(sz), ds(signs.size());
  dx.upload(x);
  ds.upload(signs.data());
  if (inverse) rht_inverse(dx.get(), rows, cols, n, ds.get(), nullptr);
  else rht_forward(dx.get(), rows, cols, n, ds.get(), nullptr);
  NIBBLE_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<float> y(sz);
  dx.download(y.data());
  return y;
}

}  // namespace nibble::cuda
