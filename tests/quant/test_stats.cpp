// Diagnostics of SPEC §6 on hand-computed examples and on matrices with a known structure.
#include "nibble/quant/stats.hpp"

#include <gtest/gtest.h>
#ifdef _OPENMP
#include <omp.h>
#endif

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

// n spans several of error_stats' chunks (and a partial last one, and a lane remainder):
// x = 1 everywhere, x̂ = x but x̂₀ = 3 and x̂_{n−1} = 0 → ‖x‖² = Σ|x| = n, ‖x − x̂‖² = 5,
// Σ(|x̂| − |x|) = 2 − 1 = 1. An error at either end of the range, or a chunk dropped or
// counted twice, shows.
TEST(StatsError, ManyChunks) {
  const int64_t n = 3 * 65536 + 7;
  std::vector<float> x(static_cast<size_t>(n), 1.0f), xh = x;
  xh.front() = 3.0f;
  xh.back() = 0.0f;
  const ErrorStats s = error_stats(x.data(), xh.data(), n);
  const double dn = static_cast<double>(n);
  EXPECT_NEAR(s.snr_db, 10.0 * std::log10(dn / 5.0), 1e-12);
  EXPECT_NEAR(s.rel_err, std::sqrt(5.0 / dn), 1e-15);
  EXPECT_NEAR(s.shrinkage, 1.0 / dn, 1e-18);
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

// Largest eigenvalue of a symmetric n×n matrix (cyclic Jacobi in float64, to machine
// precision) and its unit eigenvector.
double jacobi_top_eigen(std::vector<double> a, int n, std::vector<double>& top) {
  std::vector<double> v(static_cast<size_t>(n * n), 0.0);
  double fro2 = 0;
  for (int i = 0; i < n; ++i) v[i * n + i] = 1.0;
  for (double e : a) fro2 += e * e;
  for (int sweep = 0; sweep < 50; ++sweep) {
    double off = 0;
    for (int p = 0; p < n; ++p)
      for (int q = p + 1; q < n; ++q) off += a[p * n + q] * a[p * n + q];
    if (off <= 1e-34 * fro2) break;
    for (int p = 0; p < n; ++p)
      for (int q = p + 1; q < n; ++q) {
        if (a[p * n + q] == 0.0) continue;
        // P = rotation in (p, q) with P_pp = P_qq = c, P_pq = s, P_qp = −s; A ← PᵀAP zeroes a_pq.
        const double theta = (a[q * n + q] - a[p * n + p]) / (2.0 * a[p * n + q]);
        const double t = (theta >= 0 ? 1.0 : -1.0) / (std::abs(theta) + std::sqrt(theta * theta + 1.0));
        const double c = 1.0 / std::sqrt(t * t + 1.0), sn = t * c;
        for (int k = 0; k < n; ++k) {  // columns p, q of A and of V
          const double akp = a[k * n + p], akq = a[k * n + q];
          a[k * n + p] = c * akp - sn * akq;
          a[k * n + q] = sn * akp + c * akq;
          const double vkp = v[k * n + p], vkq = v[k * n + q];
          v[k * n + p] = c * vkp - sn * vkq;
          v[k * n + q] = sn * vkp + c * vkq;
        }
        for (int k = 0; k < n; ++k) {  // rows p, q of A
          const double apk = a[p * n + k], aqk = a[q * n + k];
          a[p * n + k] = c * apk - sn * aqk;
          a[q * n + k] = sn * apk + c * aqk;
        }
      }
  }
  int best = 0;
  for (int i = 1; i < n; ++i)
    if (a[i * n + i] > a[best * n + best]) best = i;
  top.resize(static_cast<size_t>(n));
  for (int k = 0; k < n; ++k) top[k] = v[k * n + best];
  return a[best * n + best];
}

// The power iteration's stopping rule against an exact σ₁²: X [1000, 16] (four row chunks)
// with column scales 1, 0.92, 0.7, ... and a small mean, so σ₂²/σ₁² ≈ 0.96 and the iteration
// needs hundreds of rounds. The reference is the top eigenpair of XᵀX (formed in float64
// from the float X, so both see the same matrix) by Jacobi. Looser rules fail here: stopping
// when the vector moves by < 1e-5, or when the quotient moves by < 1e-10 relative, leaves
// σ₁² off by 2–3e-9 relative and cos(μ, v₁) by ~5e-5 (tried).
TEST(StatsAnisotropy, TopSingularValueMatchesJacobi) {
  const int64_t T = 1000, K = 16;
  std::vector<float> x(static_cast<size_t>(T * K));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t k = 0; k < K; ++k) {
      const double scale = k == 0 ? 1.0 : k == 1 ? 0.92 : 0.7 * std::pow(0.9, static_cast<double>(k - 2));
      const double mean = 0.05 * philox_normal(5, 2, static_cast<uint64_t>(k));
      x[t * K + k] = static_cast<float>(mean + scale * philox_normal(5, 1, static_cast<uint64_t>(t * K + k)));
    }
  std::vector<double> gram(static_cast<size_t>(K * K), 0.0), mu(static_cast<size_t>(K), 0.0);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < K; ++i) {
      mu[i] += x[t * K + i] / static_cast<double>(T);
      for (int64_t j = 0; j < K; ++j) gram[i * K + j] += static_cast<double>(x[t * K + i]) * x[t * K + j];
    }
  double trace = 0;
  for (int64_t i = 0; i < K; ++i) trace += gram[i * K + i];
  std::vector<double> v1;
  const double lambda1 = jacobi_top_eigen(gram, static_cast<int>(K), v1);
  // the reference itself: G v₁ = λ₁ v₁ to rounding, and the gap the test is about
  double resid = 0;
  for (int64_t i = 0; i < K; ++i) {
    double gv = 0;
    for (int64_t j = 0; j < K; ++j) gv += gram[i * K + j] * v1[j];
    resid += (gv - lambda1 * v1[i]) * (gv - lambda1 * v1[i]);
  }
  ASSERT_LT(std::sqrt(resid), 1e-12 * lambda1);
  std::vector<double> deflated = gram, v2;
  for (int64_t i = 0; i < K; ++i)
    for (int64_t j = 0; j < K; ++j) deflated[i * K + j] -= lambda1 * v1[i] * v1[j];
  const double rho = jacobi_top_eigen(deflated, static_cast<int>(K), v2) / lambda1;
  ASSERT_GT(rho, 0.9);
  ASSERT_LT(rho, 0.99);
  double mu_v1 = 0, mu2 = 0;
  for (int64_t k = 0; k < K; ++k) {
    mu_v1 += mu[k] * v1[k];
    mu2 += mu[k] * mu[k];
  }

  const AnisotropyStats s = anisotropy_stats(x.data(), T, K, 16, 5000);
  const double top1 = lambda1 / trace;
  EXPECT_NEAR(s.top1_energy_share, top1, 1e-9 * top1);
  EXPECT_NEAR(s.cos_mu_v1, std::abs(mu_v1) / std::sqrt(mu2), 1e-6);
  // It stopped on the rule, not on the round limit: 5000 and 2000 rounds give the same bits.
  EXPECT_EQ(anisotropy_stats(x.data(), T, K, 16, 2000).top1_energy_share, s.top1_energy_share);
  // ... and the problem is not an easy one: 100 rounds are still visibly off.
  EXPECT_GT(std::abs(anisotropy_stats(x.data(), T, K, 16, 100).top1_energy_share - top1), 1e-6 * top1);
}

// Sums over rows run in fixed chunks combined in a fixed order: 1, 2 or 3 threads give the
// same bits (X spans five row chunks, the error a dozen element chunks).
TEST(StatsAnisotropy, SameBitsOnAnyThreadCount) {
#ifndef _OPENMP
  GTEST_SKIP() << "built without OpenMP";
#else
  const int64_t T = 1100, K = 700;
  std::vector<float> x(static_cast<size_t>(T * K)), xh(x.size());
  for (int64_t i = 0; i < T * K; ++i) {
    x[i] = static_cast<float>(0.3 * (i % K < 5 ? 4.0 : 1.0) + philox_normal(9, 1, static_cast<uint64_t>(i)));
    xh[i] = std::round(x[i] * 4.0f) / 4.0f;
  }
  const int saved = omp_get_max_threads();
  std::vector<AnisotropyStats> a;
  std::vector<ErrorStats> e;
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    a.push_back(anisotropy_stats(x.data(), T, K, 16, 10));
    e.push_back(error_stats(x.data(), xh.data(), T * K));
  }
  omp_set_num_threads(saved);
  for (size_t i = 1; i < a.size(); ++i) {
    EXPECT_EQ(a[i].mean_energy_share, a[0].mean_energy_share);
    EXPECT_EQ(a[i].top1_energy_share, a[0].top1_energy_share);
    EXPECT_EQ(a[i].cos_mu_v1, a[0].cos_mu_v1);
    EXPECT_EQ(a[i].amax_inflation, a[0].amax_inflation);
    EXPECT_EQ(a[i].block_amax_inflation, a[0].block_amax_inflation);
    EXPECT_EQ(e[i].snr_db, e[0].snr_db);
    EXPECT_EQ(e[i].rel_err, e[0].rel_err);
    EXPECT_EQ(e[i].shrinkage, e[0].shrinkage);
  }
#endif
}

// σ₁² ≥ T‖μ‖² holds for the estimate even when a single round runs: X = 1μᵀ + noise with the
// mean about half the energy, where one round from a random start alone returns about 1/K of it.
TEST(StatsAnisotropy, CappedIterationKeepsTopShareAboveMeanShare) {
  const int64_t T = 2000, K = 64;
  std::vector<float> x(static_cast<size_t>(T * K));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t k = 0; k < K; ++k)
      x[t * K + k] = static_cast<float>((k % 3 == 0 ? 1.7 : 0.0) + philox_normal(21, 1, static_cast<uint64_t>(t * K + k)));
  const AnisotropyStats one = anisotropy_stats(x.data(), T, K, 16, 1);
  const AnisotropyStats full = anisotropy_stats(x.data(), T, K, 16, 100);
  EXPECT_GT(one.mean_energy_share, 0.4);
  EXPECT_GE(one.top1_energy_share, one.mean_energy_share);
  EXPECT_GE(full.top1_energy_share, one.top1_energy_share);
  EXPECT_GT(full.cos_mu_v1, 0.99);  // the mean dominates: v₁ ≈ μ/‖μ‖
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
