// SM90_Stats: --stats-every's device statistics (nn/cuda/stats_cuda.cu) against the CPU's
// (quant/stats.cpp) on the same tensors. The arithmetic between the passes is shared code, so
// only the order of the float64 sums differs: agreement to ~1e-12 relative, except where the
// power iteration's 1e-8 stopping test lands on the other side for a different last bit, which
// moves σ₁² by far less than 1e-9 relative. Skipped, not passed, without a GPU.
#include <gtest/gtest.h>

#include "support/gpu.hpp"

#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <vector>

#include "nibble/dtype.hpp"
#include "nibble/quant/stats.hpp"
#include "nibble/quant/synthetic.hpp"
#include "nn/cuda/stats_cuda.hpp"
#include "support/device_buffers.hpp"

using namespace nibble;

namespace {

double rel(double a, double b) { return a == b ? 0.0 : std::fabs(a - b) / std::max(std::fabs(a), std::fabs(b)); }

}  // namespace

TEST(SM90_Stats, AnisotropyOnTheDeviceMatchesTheCpu) {
  REQUIRE_GPU();
  cuda::StatsScratch scratch;
  cudaStream_t stream = nullptr;  // a stream of its own, as the engine's
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  struct Case {
    SyntheticKind kind;
    int64_t rows, cols;
    int block;
  };
  // a rank-one mean plus heavy tails (converges early), plain Gaussian (runs to the round cap),
  // odd shapes: rows not a multiple of the chunk, cols not a multiple of the block or a warp
  for (const Case c : {Case{SyntheticKind::Activations, 4096, 768, 16}, Case{SyntheticKind::Gaussian, 1000, 300, 16},
                       Case{SyntheticKind::StudentT3, 777, 770, 32}, Case{SyntheticKind::Laplace, 130, 33, 16},
                       Case{SyntheticKind::Gaussian, 5, 1, 16}}) {  // one column: the amax partials outgrow the rest
    const std::vector<float> x = synthetic_matrix(c.kind, c.rows, c.cols, 7);
    float* dx = to_device(x);
    const AnisotropyStats h = anisotropy_stats(x.data(), c.rows, c.cols, c.block, kStatsEveryPowerIters, 3);
    const AnisotropyStats g = cuda::anisotropy_stats_device(dx, c.rows, c.cols, c.block, kStatsEveryPowerIters, scratch,
                                                            stream, 3);
    std::printf("  %4lld x %4lld: mean share %.6f / %.6f, top-1 %.6f / %.6f, cos %.6f / %.6f, amax %.4f / %.4f\n",
                static_cast<long long>(c.rows), static_cast<long long>(c.cols), h.mean_energy_share,
                g.mean_energy_share, h.top1_energy_share, g.top1_energy_share, h.cos_mu_v1, g.cos_mu_v1,
                h.amax_inflation, g.amax_inflation);
    EXPECT_LT(rel(h.mean_energy_share, g.mean_energy_share), 1e-12);
    EXPECT_LT(rel(h.top1_energy_share, g.top1_energy_share), 1e-9);
    EXPECT_LT(std::fabs(h.cos_mu_v1 - g.cos_mu_v1), 1e-6);
    EXPECT_LT(rel(h.amax_inflation, g.amax_inflation), 1e-12);
    EXPECT_LT(rel(h.block_amax_inflation, g.block_amax_inflation), 1e-12);
    EXPECT_GT(g.mean_energy_share, 0.0);
    cudaFree(dx);
  }
  cudaStreamDestroy(stream);
}

TEST(SM90_Stats, ErrorStatisticsOnTheDeviceMatchTheCpu) {
  REQUIRE_GPU();
  cuda::StatsScratch scratch;
  const int64_t n = 1000 * 777;
  const std::vector<float> x = synthetic_matrix(SyntheticKind::StudentT3, 1000, 777, 11);
  // x̂ stored as bf16 with a decode scale in tensor[1] (as the GEMM's operands are), and as fp32
  const float tensor[2] = {0.0f, 0.375f};
  std::vector<uint16_t> q(static_cast<size_t>(n));
  std::vector<float> qf(static_cast<size_t>(n)), xhat(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    q[i] = bf16_from_float(x[i] / tensor[1]);
    xhat[i] = bf16_to_float(q[i]) * tensor[1];  // what the device decodes, in float
    qf[i] = bf16_to_float(q[i]);
  }
  float* dx = to_device(x);
  uint16_t* dq = to_device(q);
  float* dqf = to_device(qf);
  float* dt = to_device(std::vector<float>(tensor, tensor + 2));
  const ErrorStats h = error_stats(x.data(), xhat.data(), n);
  const ErrorStats g = cuda::error_stats_device(dx, dq, cuda::GemmDtype::BF16, dt, n, scratch, nullptr);
  std::printf("  bf16 x̂: snr %.9f / %.9f dB, shrinkage %.3e / %.3e\n", h.snr_db, g.snr_db, h.shrinkage, g.shrinkage);
  EXPECT_LT(std::fabs(h.snr_db - g.snr_db), 1e-9);
  EXPECT_LT(rel(h.rel_err, g.rel_err), 1e-12);
  EXPECT_LT(std::fabs(h.shrinkage - g.shrinkage), 1e-12);
  // fp32 x̂ without a scale: x̂ = the decoded bf16 values themselves
  const ErrorStats h2 = error_stats(x.data(), qf.data(), n);
  const ErrorStats g2 = cuda::error_stats_device(dx, dqf, cuda::GemmDtype::FP32, nullptr, n, scratch, nullptr);
  EXPECT_LT(std::fabs(h2.snr_db - g2.snr_db), 1e-9);
  EXPECT_LT(std::fabs(h2.shrinkage - g2.shrinkage), 1e-12);
  // fp32 x̂ with a scale: the stored values are the decoded bf16 ones, so x̂ is xhat again
  const ErrorStats g4 = cuda::error_stats_device(dx, dqf, cuda::GemmDtype::FP32, dt, n, scratch, nullptr);
  EXPECT_LT(std::fabs(h.snr_db - g4.snr_db), 1e-9);
  EXPECT_LT(std::fabs(h.shrinkage - g4.shrinkage), 1e-12);
  // an exact x̂: +inf dB on both
  const ErrorStats g3 = cuda::error_stats_device(dx, dx, cuda::GemmDtype::FP32, nullptr, n, scratch, nullptr);
  EXPECT_TRUE(std::isinf(g3.snr_db) && g3.snr_db > 0);
  for (void* p : {static_cast<void*>(dx), static_cast<void*>(dq), static_cast<void*>(dqf), static_cast<void*>(dt)})
    cudaFree(p);
}
