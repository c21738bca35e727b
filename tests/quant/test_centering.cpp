// Mean-bias removal (SPEC §4.2): the three centred GEMMs with the exact rank-one
// corrections reproduce the plain products when Q is the identity, and the rank-one
// mean is carried exactly even when the quantizer is real.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "nibble/philox.hpp"
#include "nibble/quant/centering.hpp"
#include "nibble/quant/quantizer.hpp"

using namespace nibble;

namespace {

std::vector<float> biased(int64_t rows, int64_t cols, uint64_t seed, float bias) {
  // rows share a strong per-column mean (the "mean bias"), plus noise
  std::vector<float> x(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      x[static_cast<size_t>(r * cols + c)] =
          bias * (1.0f + 0.5f * std::sin(static_cast<float>(c))) + (2 * philox_uniform(seed, 0, static_cast<uint64_t>(r * cols + c)) - 1);
  return x;
}

// float64 reference: C[i][j] = Σ_l A(i,l) B(j,l) with explicit index maps.
template <class FA, class FB>
std::vector<double> ref(int64_t m, int64_t n, int64_t r, FA a, FB b) {
  std::vector<double> c(static_cast<size_t>(m * n), 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j)
      for (int64_t l = 0; l < r; ++l) c[static_cast<size_t>(i * n + j)] += a(i, l) * b(j, l);
  return c;
}

const FakeQuant kIdentity = [](float*, int64_t, int64_t) {};

void expect_close(const std::vector<float>& got, const std::vector<double>& want, double rel) {
  double scale = 0;
  for (double w : want) scale = std::max(scale, std::fabs(w));
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], want[i], rel * scale) << i;
}

}  // namespace

// T = 48 tokens, K = 32 in-features, N = 16 out-features.
constexpr int64_t T = 48, K = 32, N = 16;

TEST(Centering, ColumnMeanIsFloat64Accurate) {
  std::vector<float> x = {1e8f, 1.0f, 1e8f, 3.0f, -2e8f, 5.0f};  // [3, 2]
  const std::vector<float> mu = column_mean(x.data(), 3, 2);
  EXPECT_EQ(mu[0], 0.0f);
  EXPECT_EQ(mu[1], 3.0f);
}

TEST(Centering, FpropIdentityReproducesProduct) {
  const auto x = biased(T, K, 1, 5.0f), w = biased(N, K, 2, 0.3f);
  const auto y = centered_fprop(x.data(), w.data(), T, K, N, kIdentity, kIdentity);
  expect_close(y, ref(T, N, K, [&](int64_t i, int64_t l) { return double(x[size_t(i * K + l)]); },
                      [&](int64_t j, int64_t l) { return double(w[size_t(j * K + l)]); }),
               1e-6);
}

TEST(Centering, DgradIdentityReproducesProduct) {
  const auto dy = biased(T, N, 3, 2.0f), w = biased(N, K, 4, 0.3f);
  const auto dx = centered_dgrad(dy.data(), w.data(), T, K, N, kIdentity, kIdentity);
  // dX[t][k] = Σ_n dY[t][n] W[n][k]
  expect_close(dx, ref(T, K, N, [&](int64_t i, int64_t l) { return double(dy[size_t(i * N + l)]); },
                       [&](int64_t j, int64_t l) { return double(w[size_t(l * K + j)]); }),
               1e-6);
}

TEST(Centering, WgradIdentityReproducesProduct) {
  const auto dy = biased(T, N, 5, 2.0f), x = biased(T, K, 6, 5.0f);
  const auto dw = centered_wgrad(dy.data(), x.data(), T, K, N, kIdentity, kIdentity);
  // dW[n][k] = Σ_t dY[t][n] X[t][k]
  expect_close(dw, ref(N, K, T, [&](int64_t i, int64_t l) { return double(dy[size_t(l * N + i)]); },
                       [&](int64_t j, int64_t l) { return double(x[size_t(l * K + j)]); }),
               1e-6);
}

TEST(Centering, RankOneMeanIsExactUnderRealQuantizer) {
  // X = 1 μᵀ: X_c = 0, so Q(X_c) = 0 and Y = 1 (W μ)ᵀ exactly, whatever Q does.
  std::vector<float> x(static_cast<size_t>(T * K));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t k = 0; k < K; ++k) x[size_t(t * K + k)] = 0.25f * static_cast<float>(k % 7) - 0.5f;
  const auto w = biased(N, K, 8, 0.1f);
  const FakeQuant nvfp4 = [](float* p, int64_t r, int64_t c) {
    quantize_dequantize(p, r, c, QuantSpec::for_format(Format::NVFP4), p);
  };
  const auto y = centered_fprop(x.data(), w.data(), T, K, N, kIdentity, nvfp4);
  // reference with the *unquantized* W in the correction and Q(W) never touching the mean
  const std::vector<float> mu(x.begin(), x.begin() + K);
  const auto corr = fprop_correction(w.data(), N, K, mu.data());
  for (int64_t t = 0; t < T; ++t)
    for (int64_t n = 0; n < N; ++n) ASSERT_EQ(y[size_t(t * N + n)], corr[size_t(n)]);
}

TEST(Centering, CentringReducesQuantizationErrorOfBiasedActivations) {
  const auto x = biased(T, K, 9, 8.0f), w = biased(N, K, 10, 0.0f);
  const FakeQuant nvfp4 = [](float* p, int64_t r, int64_t c) {
    quantize_dequantize(p, r, c, QuantSpec::for_format(Format::NVFP4), p);
  };
  const auto exact = ref(T, N, K, [&](int64_t i, int64_t l) { return double(x[size_t(i * K + l)]); },
                         [&](int64_t j, int64_t l) { return double(w[size_t(j * K + l)]); });
  const auto centred = centered_fprop(x.data(), w.data(), T, K, N, nvfp4, kIdentity);
  // uncentred: quantize X directly
  std::vector<float> xq = x;
  nvfp4(xq.data(), T, K);
  double e_c = 0, e_u = 0;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t n = 0; n < N; ++n) {
      double yu = 0;
      for (int64_t k = 0; k < K; ++k) yu += double(xq[size_t(t * K + k)]) * w[size_t(n * K + k)];
      e_u += std::pow(yu - exact[size_t(t * N + n)], 2);
      e_c += std::pow(centred[size_t(t * N + n)] - exact[size_t(t * N + n)], 2);
    }
  EXPECT_LT(e_c, 0.5 * e_u);
}
