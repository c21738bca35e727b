// Random Hadamard transform (SPEC §4.1): orthonormality, agreement with the dense matrix,
// inverse, GEMM invariance, Philox signs, validation.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "nibble/error.hpp"
#include "nibble/philox.hpp"
#include "nibble/quant/rht.hpp"

using namespace nibble;

namespace {
std::vector<float> randn(size_t n, uint64_t seed) {
  std::vector<float> x(n);
  for (size_t i = 0; i < n; ++i) x[i] = 4.0f * philox_uniform(seed, 0, i) - 2.0f;
  return x;
}
}  // namespace

TEST(Rht, MatrixIsOrthonormalForEverySize) {
  for (int n : {16, 32, 64, 128}) {
    const std::vector<float> d = rht_signs(n, 3, 0);
    const std::vector<double> m = rht_matrix(n, d.data());
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < n; ++j) {
        double s = 0;
        for (int l = 0; l < n; ++l) s += m[static_cast<size_t>(i * n + l)] * m[static_cast<size_t>(j * n + l)];
        ASSERT_NEAR(s, i == j ? 1.0 : 0.0, 1e-12) << n << " " << i << " " << j;
      }
  }
}

TEST(Rht, SylvesterEntriesByHand) {
  // H_2 = [[1, 1], [1, -1]]; H_16 entry (i, j) = (-1)^popcount(i & j) / 4.
  std::vector<float> ones(16, 1.0f);
  const std::vector<double> m = rht_matrix(16, ones.data());
  EXPECT_EQ(m[0], 0.25);
  EXPECT_EQ(m[1 * 16 + 1], -0.25);
  EXPECT_EQ(m[3 * 16 + 5], -0.25);  // 3 & 5 = 1: one bit
  EXPECT_EQ(m[3 * 16 + 3], 0.25);   // two bits
  // forward of e_0 with d = 1 is the first column: all 0.25
  std::vector<float> x(16, 0.0f);
  x[0] = 1.0f;
  rht_forward(x.data(), 1, 16, 16, ones.data());
  for (float v : x) EXPECT_EQ(v, 0.25f);
}

TEST(Rht, ForwardMatchesDenseFloat64ProductRoundedOnce) {
  for (int n : {16, 32, 64, 128}) {
    const int64_t rows = 3, cols = 2 * n;
    std::vector<float> x = randn(static_cast<size_t>(rows * cols), 7), y = x;
    const std::vector<float> d = rht_signs(n, 5, 2);
    rht_forward(y.data(), rows, cols, n, d.data());
    const std::vector<double> m = rht_matrix(n, d.data());
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t b = 0; b < cols / n; ++b)
        for (int i = 0; i < n; ++i) {
          double s = 0;
          for (int j = 0; j < n; ++j)
            s += m[static_cast<size_t>(i * n + j)] * x[static_cast<size_t>(r * cols + b * n + j)];
          ASSERT_EQ(y[static_cast<size_t>(r * cols + b * n + i)], static_cast<float>(s)) << n;
        }
  }
}

TEST(Rht, InverseRecoversInput) {
  for (int n : {16, 32, 64, 128}) {
    std::vector<float> x = randn(static_cast<size_t>(4 * 256), 9), y = x;
    const std::vector<float> d = rht_signs(n, 1, 1);
    rht_forward(y.data(), 4, 256, n, d.data());
    double diff = 0;
    for (size_t i = 0; i < x.size(); ++i) diff = std::max(diff, std::fabs(static_cast<double>(y[i]) - x[i]));
    EXPECT_GT(diff, 0.01);  // it did transform
    rht_inverse(y.data(), 4, 256, n, d.data());
    for (size_t i = 0; i < x.size(); ++i) ASSERT_NEAR(y[i], x[i], 1e-6) << i;
  }
}

TEST(Rht, GemmProductIsInvariant) {
  // (X H D)(W H D)ᵀ = X Wᵀ when both operands use the same (n, d) along K.
  const int64_t t = 5, k = 64, nout = 3;
  std::vector<float> x = randn(static_cast<size_t>(t * k), 1), w = randn(static_cast<size_t>(nout * k), 2);
  std::vector<float> xr = x, wr = w;
  const std::vector<float> d = rht_signs(32, 4, 0);
  rht_forward(xr.data(), t, k, 32, d.data());
  rht_forward(wr.data(), nout, k, 32, d.data());
  for (int64_t i = 0; i < t; ++i)
    for (int64_t j = 0; j < nout; ++j) {
      double a = 0, b = 0;
      for (int64_t l = 0; l < k; ++l) {
        a += static_cast<double>(x[static_cast<size_t>(i * k + l)]) * w[static_cast<size_t>(j * k + l)];
        b += static_cast<double>(xr[static_cast<size_t>(i * k + l)]) * wr[static_cast<size_t>(j * k + l)];
      }
      EXPECT_NEAR(a, b, 1e-5);
    }
}

TEST(Rht, PhiloxSignsFollowSpec) {
  const std::vector<float> d = rht_signs(64, 77, 3);
  int neg = 0;
  for (int j = 0; j < 64; ++j) {
    EXPECT_EQ(d[static_cast<size_t>(j)], (philox_word(77, 3, static_cast<uint64_t>(j)) & 1) ? -1.0f : 1.0f);
    neg += d[static_cast<size_t>(j)] < 0;
  }
  EXPECT_GT(neg, 10);
  EXPECT_LT(neg, 54);
}

TEST(Rht, Validation) {
  std::vector<float> d(16, 1.0f);
  EXPECT_THROW(validate_rht(8, 64, std::vector<float>(8, 1.0f)), Error);
  EXPECT_THROW(validate_rht(16, 40, d), Error);
  EXPECT_THROW(validate_rht(16, 64, std::vector<float>(15, 1.0f)), Error);
  d[3] = 0.5f;
  EXPECT_THROW(validate_rht(16, 64, d), Error);
  d[3] = -1.0f;
  EXPECT_NO_THROW(validate_rht(16, 64, d));
}
