// Diagnostics of SPEC §6 on hand-computed examples and on matrices with a known structure.
#include "nibble/quant/stats.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "nibble/error.hpp"
#include "nibble/quant/spectral.hpp"

namespace nibble {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

TEST(StatsError, HandExample) {
  // x = [1, -2, 3, -4], x̂ = [1, -2, 2, -4]: ‖x‖² = 30, ‖x − x̂‖² = 1, Σ|x| = 10,
  // Σ(|x̂| − |x|) = −1.  snr = 10 log10 30, rel = 1/√30, shrinkage = −0.1.
  const float x[] = {1, -2, 3, -4}, xh[] = {1, -2, 2, -4};
  const ErrorStats s = error_stats(x, xh, 4);
  EXPECT_NEAR(s.snr_db, 14.771212547196624, 1e-12);
  EXPECT_NEAR(s.rel_err, 0.18257418583505536, 1e-15);
  EXPECT_NEAR(s.shrinkage, -0.1, 1e-15);
}

TEST(StatsError, HalvedMagnitudes) {
  // x̂ = x / 2: ‖e‖² = ‖x‖²/4 → snr = 10 log10 4, rel = 0.5, shrinkage = −0.5.
  const float x[] = {0.5f, -8, 3, 1, 0, -2}, xh[] = {0.25f, -4, 1.5f, 0.5f, 0, -1};
  const ErrorStats s = error_stats(x, xh, 6);
  EXPECT_NEAR(s.snr_db, 6.020599913279624, 1e-12);
  EXPECT_NEAR(s.rel_err, 0.5, 1e-15);
  EXPECT_NEAR(s.shrinkage, -0.5, 1e-15);
}

TEST(StatsError, ExactAndZeroInputs) {
  const float x[] = {1, -2, 3}, z[] = {0, 0, 0};
  const ErrorStats exact = error_stats(x, x, 3);
  EXPECT_EQ(exact.snr_db, kInf);
  EXPECT_EQ(exact.rel_err, 0.0);
  EXPECT_EQ(exact.shrinkage, 0.0);
  const ErrorStats zero = error_stats(z, z, 3);
  EXPECT_EQ(zero.snr_db, kInf);
  EXPECT_EQ(zero.rel_err, 0.0);
  EXPECT_EQ(zero.shrinkage, 0.0);
  // Everything quantized to zero: no signal left, all magnitude lost.
  const ErrorStats flushed = error_stats(x, z, 3);
  EXPECT_NEAR(flushed.snr_db, 0.0, 1e-15);
  EXPECT_NEAR(flushed.rel_err, 1.0, 1e-15);
  EXPECT_NEAR(flushed.shrinkage, -1.0, 1e-15);
}

TEST(StatsError, JsonNamesAndInfinityAsNull) {
  const float x[] = {1, -2, 3, -4}, xh[] = {1, -2, 2, -4};
  const Json j = Json::parse(error_stats(x, xh, 4).to_json().dump());
  EXPECT_NEAR(j.at("snr_db").as_double(), 14.771212547196624, 1e-9);
  EXPECT_NEAR(j.at("rel_err").as_double(), 0.18257418583505536, 1e-12);
  EXPECT_NEAR(j.at("shrinkage").as_double(), -0.1, 1e-12);
  const Json e = Json::parse(error_stats(x, x, 4).to_json().dump());
  EXPECT_TRUE(e.at("snr_db").is_null());
  EXPECT_EQ(e.at("rel_err").as_double(), 0.0);
}

TEST(StatsHistogram, HandBuiltMatrix) {
  QuantizedMatrix q;
  q.rows = 2;
  q.cols = 4;
  // element 2i in the low nibble: codes 1,2 | 1,15 | 0,0 | 15,7
  q.codes = {0x21, 0xF1, 0x00, 0x7F};
  const auto h = code_histogram(q);
  const std::array<int64_t, 16> expect = {2, 2, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2};
  EXPECT_EQ(h, expect);
  const Json j = Json::parse(code_histogram_json(h).dump());
  ASSERT_TRUE(j.is_array());
  ASSERT_EQ(j.size(), 16u);
  for (int c = 0; c < 16; ++c) {
    EXPECT_TRUE(j.as_array()[c].is_int());
    EXPECT_EQ(j.as_array()[c].as_int64(), expect[c]) << "code " << c;
  }
}

TEST(StatsHistogram, OddCountIgnoresThePaddingNibble) {
  QuantizedMatrix q;
  q.rows = 1;
  q.cols = 3;
  q.codes = {0x98, 0xE9};  // 8, 9, 9 and an unused high nibble 14
  const auto h = code_histogram(q);
  EXPECT_EQ(h[8], 1);
  EXPECT_EQ(h[9], 2);
  EXPECT_EQ(h[14], 0);
  int64_t total = 0;
  for (int64_t c : h) total += c;
  EXPECT_EQ(total, 3);
}

TEST(StatsHistogram, TooFewCodeBytesIsAnError) {
  QuantizedMatrix q;
  q.rows = 2;
  q.cols = 4;
  q.codes = {0x00, 0x11, 0x22};
  EXPECT_THROW(code_histogram(q), Error);
}

// X = 1μᵀ + N with μ = (3, 0) and noise N whose columns sum to zero:
//   rows (4, 1), (2, 1), (4, −1), (2, −1);  N = rows (±1, ±1).
//   ‖X‖² = 44, T‖μ‖² = 36 → mean share 9/11;  XᵀX = diag(40, 4) → top1 = 40/44, v₁ = e₁ ∥ μ.
//   max|X| = 4, max|X_c| = 1; row-block (block 2) amax: X 4, 2, 4, 2 → 3, X_c 1 → ratio 3;
//   block 1: mean|X| = 2, mean|X_c| = 1 → ratio 2.
TEST(StatsAnisotropy, MeanPlusCentredNoise) {
  const float x[] = {4, 1, 2, 1, 4, -1, 2, -1};
  const AnisotropyStats s = anisotropy_stats(x, 4, 2, 2);
  EXPECT_NEAR(s.mean_energy_share, 9.0 / 11.0, 1e-14);
  EXPECT_NEAR(s.top1_energy_share, 10.0 / 11.0, 1e-12);
  EXPECT_NEAR(s.cos_mu_v1, 1.0, 1e-10);
  EXPECT_NEAR(s.amax_inflation, 4.0, 1e-15);
  EXPECT_NEAR(s.block_amax_inflation, 3.0, 1e-15);
  EXPECT_NEAR(anisotropy_stats(x, 4, 2, 1).block_amax_inflation, 2.0, 1e-15);
}

// Noise-dominated: μ = (1, 0), rows (1, ±3): ‖X‖² = 40, T‖μ‖² = 4 → 0.1; XᵀX = diag(4, 36)
// → top1 = 0.9 with v₁ = e₂ ⊥ μ; X_c = rows (0, ±3): both amax ratios 3/3 = 1.
TEST(StatsAnisotropy, NoiseDominated) {
  const float x[] = {1, 3, 1, -3, 1, 3, 1, -3};
  const AnisotropyStats s = anisotropy_stats(x, 4, 2, 2);
  EXPECT_NEAR(s.mean_energy_share, 0.1, 1e-15);
  EXPECT_NEAR(s.top1_energy_share, 0.9, 1e-12);
  EXPECT_NEAR(s.cos_mu_v1, 0.0, 1e-8);
  EXPECT_NEAR(s.amax_inflation, 1.0, 1e-15);
  EXPECT_NEAR(s.block_amax_inflation, 1.0, 1e-15);
}

// Blocks of 2 along rows of 3 columns: a full block and a partial one per row.
// X rows (1, 2, 6), (3, 2, 0): μ = (2, 2, 3), X_c rows (−1, 0, 3), (1, 0, −3).
// block amax X: 2, 6, 3, 0 → mean 11/4; X_c: 1, 3, 1, 3 → mean 2; ratio 11/8.
TEST(StatsAnisotropy, PartialBlocksAndAmax) {
  const float x[] = {1, 2, 6, 3, 2, 0};
  const AnisotropyStats s = anisotropy_stats(x, 2, 3, 2);
  EXPECT_NEAR(s.amax_inflation, 2.0, 1e-15);
  EXPECT_NEAR(s.block_amax_inflation, 11.0 / 8.0, 1e-15);
  // ‖X‖² = 1 + 4 + 36 + 9 + 4 = 54, T‖μ‖² = 2·17 = 34.
  EXPECT_NEAR(s.mean_energy_share, 34.0 / 54.0, 1e-14);
}

TEST(StatsAnisotropy, RankOneMeanMatrix) {
  const int64_t T = 8, K = 16;
  std::vector<float> x(static_cast<size_t>(T * K));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t k = 0; k < K; ++k) x[t * K + k] = static_cast<float>(0.25 * k - 1.5);
  const AnisotropyStats s = anisotropy_stats(x.data(), T, K, 4);
  EXPECT_NEAR(s.mean_energy_share, 1.0, 1e-14);
  EXPECT_NEAR(s.top1_energy_share, 1.0, 1e-12);
  EXPECT_NEAR(s.cos_mu_v1, 1.0, 1e-12);
  EXPECT_EQ(s.amax_inflation, kInf);  // X_c = 0 exactly
  EXPECT_EQ(s.block_amax_inflation, kInf);
  EXPECT_TRUE(Json::parse(s.to_json().dump()).at("amax_inflation").is_null());
}

// X = U diag(s) Vᵀ with orthonormal U [T, 3], V [K, 3] (Gram–Schmidt of Philox normals):
//   top1 = s₁² / Σ s²;  μ = (1/T) Σ_i s_i (1ᵀu_i) v_i, so
//   mean share = (1/T) Σ s_i² (1ᵀu_i)² / Σ s²  and  cos(μ, v₁) = |s₁ 1ᵀu₁| / √(Σ s_i² (1ᵀu_i)²).
TEST(StatsAnisotropy, KnownSpectrum) {
  const int64_t T = 64, K = 32, r = 3;
  const double sv[r] = {4, 2, 1};
  auto orthonormal = [](int64_t n, uint32_t stream) {
    std::vector<double> a(static_cast<size_t>(n * r));
    for (int64_t i = 0; i < n * r; ++i) a[i] = philox_normal(77, stream, static_cast<uint64_t>(i));
    for (int64_t c = 0; c < r; ++c) {
      for (int pass = 0; pass < 2; ++pass)
        for (int64_t p = 0; p < c; ++p) {
          double d = 0;
          for (int64_t i = 0; i < n; ++i) d += a[i * r + p] * a[i * r + c];
          for (int64_t i = 0; i < n; ++i) a[i * r + c] -= d * a[i * r + p];
        }
      double nn = 0;
      for (int64_t i = 0; i < n; ++i) nn += a[i * r + c] * a[i * r + c];
      for (int64_t i = 0; i < n; ++i) a[i * r + c] /= std::sqrt(nn);
    }
    return a;
  };
  const std::vector<double> u = orthonormal(T, 1), v = orthonormal(K, 2);
  std::vector<float> x(static_cast<size_t>(T * K));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t k = 0; k < K; ++k) {
      double acc = 0;
      for (int64_t i = 0; i < r; ++i) acc += u[t * r + i] * sv[i] * v[k * r + i];
      x[t * K + k] = static_cast<float>(acc);
    }
  double ssum = 0, proj = 0, ones_u[r] = {0, 0, 0};
  for (int64_t i = 0; i < r; ++i) {
    ssum += sv[i] * sv[i];
    for (int64_t t = 0; t < T; ++t) ones_u[i] += u[t * r + i];
    proj += sv[i] * sv[i] * ones_u[i] * ones_u[i];
  }
  const AnisotropyStats s = anisotropy_stats(x.data(), T, K, 16);
  EXPECT_NEAR(s.top1_energy_share, 16.0 / 21.0, 1e-6);
  EXPECT_NEAR(s.mean_energy_share, proj / T / ssum, 1e-6);
  EXPECT_NEAR(s.cos_mu_v1, std::abs(sv[0] * ones_u[0]) / std::sqrt(proj), 1e-5);
}

TEST(StatsAnisotropy, ZeroMatrixIsFinite) {
  const std::vector<float> x(6 * 32, 0.0f);
  const AnisotropyStats s = anisotropy_stats(x.data(), 6, 32, 16);
  EXPECT_EQ(s.mean_energy_share, 0.0);
  EXPECT_EQ(s.top1_energy_share, 0.0);
  EXPECT_EQ(s.cos_mu_v1, 0.0);
  EXPECT_EQ(s.amax_inflation, 1.0);
  EXPECT_EQ(s.block_amax_inflation, 1.0);
  const std::string dump = s.to_json().dump();
  EXPECT_EQ(dump.find("null"), std::string::npos) << dump;
  EXPECT_EQ(dump.find("nan"), std::string::npos) << dump;
}

TEST(StatsAnisotropy, BadArgumentsAreErrors) {
  const float x[] = {1, 2, 3, 4};
  EXPECT_THROW(anisotropy_stats(x, 2, 2, 0), Error);
  EXPECT_THROW(anisotropy_stats(x, 0, 2, 2), Error);
}

}  // namespace
}  // namespace nibble
