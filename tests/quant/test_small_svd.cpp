// small_svd (Golub–Kahan–Reinsch) against matrices whose SVD is known by construction or by
// hand, and the branches of the QR iteration: a zero on the bidiagonal's diagonal inside a
// block (clear_row), at its end (clear_column), a zero matrix, rank one, clustered values.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "nibble/quant/small_svd.hpp"

namespace nibble {
namespace {

using Mat = std::vector<double>;  // column-major n × n

double at(const Mat& m, int64_t n, int64_t i, int64_t j) { return m[static_cast<size_t>(j * n + i)]; }

// max |U diag(σ) Vᵀ − a| / max |a| (or absolute when a = 0)
double reconstruction_error(const SmallSvd& s, const Mat& a) {
  const int64_t n = s.n;
  double err = 0, amax = 0;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double x = 0;
      for (int64_t k = 0; k < n; ++k) x += at(s.u, n, i, k) * s.sigma[k] * at(s.v, n, j, k);
      err = std::max(err, std::abs(x - at(a, n, i, j)));
      amax = std::max(amax, std::abs(at(a, n, i, j)));
    }
  return amax > 0 ? err / amax : err;
}

// max |QᵀQ − I|
double orthonormality_error(const Mat& q, int64_t n) {
  double err = 0;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double d = 0;
      for (int64_t k = 0; k < n; ++k) d += at(q, n, k, i) * at(q, n, k, j);
      err = std::max(err, std::abs(d - (i == j ? 1.0 : 0.0)));
    }
  return err;
}

void expect_valid(const SmallSvd& s, const Mat& a, double tol) {
  EXPECT_LT(reconstruction_error(s, a), tol);
  EXPECT_LT(orthonormality_error(s.u, s.n), tol);
  EXPECT_LT(orthonormality_error(s.v, s.n), tol);
  for (int64_t i = 0; i < s.n; ++i) {
    EXPECT_GE(s.sigma[i], 0.0) << i;
    if (i > 0) {
      EXPECT_LE(s.sigma[i], s.sigma[i - 1]) << i;
    }
  }
}

// A random orthogonal matrix by modified Gram–Schmidt on Gaussian columns (independent of the
// Householder reflections small_svd uses).
Mat random_orthogonal(int64_t n, uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> nd;
  Mat q(static_cast<size_t>(n * n));
  for (double& x : q) x = nd(rng);
  for (int64_t j = 0; j < n; ++j) {
    double* c = q.data() + j * n;
    for (int pass = 0; pass < 2; ++pass)
      for (int64_t p = 0; p < j; ++p) {
        const double* o = q.data() + p * n;
        double d = 0;
        for (int64_t i = 0; i < n; ++i) d += o[i] * c[i];
        for (int64_t i = 0; i < n; ++i) c[i] -= d * o[i];
      }
    double nn = 0;
    for (int64_t i = 0; i < n; ++i) nn += c[i] * c[i];
    for (int64_t i = 0; i < n; ++i) c[i] /= std::sqrt(nn);
  }
  return q;
}

Mat compose(const Mat& u, const std::vector<double>& sigma, const Mat& v, int64_t n) {
  Mat a(static_cast<size_t>(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j)
      for (int64_t k = 0; k < n; ++k) a[j * n + i] += at(u, n, i, k) * sigma[k] * at(v, n, j, k);
  return a;
}

TEST(SmallSvd, TwoByTwoByHand) {
  // a = [[3, 0], [4, 5]]: aᵀa = [[25, 20], [20, 25]], eigenvalues 45 and 5, so σ = 3√5 and √5;
  // v₁ = (1, 1)/√2, u₁ = a v₁ / σ₁ = (1, 3)/√10.
  const Mat a = {3, 4, 0, 5};
  const SmallSvd s = small_svd(a, 2);
  EXPECT_NEAR(s.sigma[0], 3 * std::sqrt(5.0), 1e-14);
  EXPECT_NEAR(s.sigma[1], std::sqrt(5.0), 1e-14);
  EXPECT_NEAR(std::abs(at(s.v, 2, 0, 0)), 1 / std::sqrt(2.0), 1e-14);
  EXPECT_NEAR(std::abs(at(s.u, 2, 0, 0)), 1 / std::sqrt(10.0), 1e-14);
  EXPECT_NEAR(std::abs(at(s.u, 2, 1, 0)), 3 / std::sqrt(10.0), 1e-14);
  expect_valid(s, a, 1e-14);
}

TEST(SmallSvd, KnownConstructionIsRecovered) {
  // σ graded over twelve decades plus a cluster of four equal values; the vectors of the
  // distinct values must come back up to sign.
  for (int64_t n : {1, 3, 17, 40, 72}) {
    std::vector<double> sigma(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) sigma[i] = std::pow(10.0, -12.0 * static_cast<double>(i) / std::max<int64_t>(n - 1, 1));
    if (n >= 17)
      for (int64_t i = 5; i < 9; ++i) sigma[i] = sigma[4] * 0.5;
    const Mat u = random_orthogonal(n, 11), v = random_orthogonal(n, 12);
    const Mat a = compose(u, sigma, v, n);
    const SmallSvd s = small_svd(a, n);
    expect_valid(s, a, 1e-13);
    for (int64_t i = 0; i < n; ++i) {
      EXPECT_NEAR(s.sigma[i], sigma[i], 1e-14 * sigma[0]) << "n = " << n << ", i = " << i;
      const bool distinct = n < 17 || i < 4 || i >= 9;
      if (!distinct || sigma[i] < 1e-6) continue;  // a vector is only determined to ~eps σ₀/gap
      double du = 0, dv = 0;
      for (int64_t t = 0; t < n; ++t) {
        du += at(s.u, n, t, i) * at(u, n, t, i);
        dv += at(s.v, n, t, i) * at(v, n, t, i);
      }
      EXPECT_NEAR(std::abs(du), 1.0, 1e-9) << "n = " << n << ", i = " << i;
      EXPECT_NEAR(du * dv, std::abs(du * dv), 1e-9) << "u and v flip sign together";
    }
  }
}

TEST(SmallSvd, ZeroDiagonalInsideTheBlock) {
  // The shift matrix (ones on the superdiagonal) is already bidiagonal with d = 0: σ = 1 (n − 1
  // times) and 0, reached only through the zero-diagonal chase.
  const int64_t n = 6;
  Mat a(static_cast<size_t>(n * n), 0.0);
  for (int64_t i = 0; i + 1 < n; ++i) a[(i + 1) * n + i] = 1.0;
  const SmallSvd s = small_svd(a, n);
  expect_valid(s, a, 1e-14);
  for (int64_t i = 0; i + 1 < n; ++i) EXPECT_NEAR(s.sigma[i], 1.0, 1e-14) << i;
  EXPECT_NEAR(s.sigma[n - 1], 0.0, 1e-14);

  // A zero between non-zero diagonal entries (d = 2, 0, 3, 1; e = 1, 2, 0.5): the chase mixes
  // rows with non-zero entries. Orthonormal U and V, σ ≥ 0 sorted and a = U Σ Vᵀ define the SVD,
  // so expect_valid is the whole check; det a = 0 makes one σ zero.
  const Mat b = {2, 0, 0, 0, 1, 0, 0, 0, 0, 2, 3, 0, 0, 0, 0.5, 1};
  const SmallSvd t = small_svd(b, 4);
  expect_valid(t, b, 1e-14);
  EXPECT_NEAR(t.sigma[3], 0.0, 1e-14);
  EXPECT_GT(t.sigma[2], 0.1);
}

TEST(SmallSvd, ZeroAtTheEndOfTheDiagonal) {
  // [[1, 1, 0], [0, 1, 1], [0, 0, 0]]: rank 2, d₂ = 0 at the block's end. aaᵀ = [[2, 1, 0],
  // [1, 2, 0], [0, 0, 0]] has eigenvalues 3, 1, 0, so σ = √3, 1, 0.
  const Mat a = {1, 0, 0, 1, 1, 0, 0, 1, 0};
  const SmallSvd s = small_svd(a, 3);
  expect_valid(s, a, 1e-14);
  EXPECT_NEAR(s.sigma[0], std::sqrt(3.0), 1e-14);
  EXPECT_NEAR(s.sigma[1], 1.0, 1e-14);
  EXPECT_NEAR(s.sigma[2], 0.0, 1e-14);
}

TEST(SmallSvd, RankOneAndZero) {
  const int64_t n = 10;
  std::vector<double> x(n), y(n);
  double nx = 0, ny = 0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::sin(1.0 + static_cast<double>(i));
    y[i] = 1.0 + 0.1 * static_cast<double>(i * i);
    nx += x[i] * x[i];
    ny += y[i] * y[i];
  }
  Mat a(static_cast<size_t>(n * n));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) a[j * n + i] = x[i] * y[j];
  const SmallSvd s = small_svd(a, n);
  expect_valid(s, a, 1e-13);
  EXPECT_NEAR(s.sigma[0], std::sqrt(nx * ny), 1e-13 * std::sqrt(nx * ny));
  for (int64_t i = 1; i < n; ++i) EXPECT_LT(s.sigma[i], 1e-14 * s.sigma[0]) << i;
  double du = 0;
  for (int64_t t = 0; t < n; ++t) du += at(s.u, n, t, 0) * x[t] / std::sqrt(nx);
  EXPECT_NEAR(std::abs(du), 1.0, 1e-13);

  const Mat zero(static_cast<size_t>(n * n), 0.0);
  const SmallSvd z = small_svd(zero, n);
  expect_valid(z, zero, 1e-15);
  for (double v : z.sigma) EXPECT_EQ(v, 0.0);
}

TEST(SmallSvd, FrobeniusNormIsKeptOnATriangularFactor) {
  // The shape it serves: an upper-triangular R with rows decaying like a converged subspace's.
  // Σσ² = ‖R‖²_F is an identity independent of the algorithm.
  const int64_t n = 72;
  std::mt19937_64 rng(3);
  std::normal_distribution<double> nd;
  Mat a(static_cast<size_t>(n * n), 0.0);
  double f2 = 0;
  for (int64_t j = 0; j < n; ++j)
    for (int64_t i = 0; i <= j; ++i) {
      a[j * n + i] = nd(rng) * std::pow(0.9, static_cast<double>(i));
      f2 += a[j * n + i] * a[j * n + i];
    }
  const SmallSvd s = small_svd(a, n);
  expect_valid(s, a, 1e-13);
  double s2 = 0;
  for (double v : s.sigma) s2 += v * v;
  EXPECT_NEAR(s2, f2, 1e-12 * f2);
}

TEST(SmallSvd, ExtremeScalesKeepTheirAccuracy) {
  // The QR shift squares entries: without scaling, 1e200 overflows and 1e-200 underflows and the
  // iteration never converges. Scaled by a power of two inside, both come out as at scale 1.
  const int64_t n = 17;
  std::vector<double> sigma(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) sigma[i] = std::pow(10.0, -6.0 * static_cast<double>(i) / (n - 1));
  const Mat u = random_orthogonal(n, 21), v = random_orthogonal(n, 22);
  for (double scale : {1e200, 1e-200, 1e-305}) {
    std::vector<double> scaled = sigma;
    for (double& x : scaled) x *= scale;
    const Mat a = compose(u, scaled, v, n);
    const SmallSvd s = small_svd(a, n);
    expect_valid(s, a, 1e-13);
    for (int64_t i = 0; i < n; ++i) EXPECT_NEAR(s.sigma[i] / scale, sigma[i], 1e-13) << "scale " << scale << ", i = " << i;
  }
}

TEST(SmallSvd, ManyKindsOfRandomMatrices) {
  // A property sweep over sizes and structures (triangular, identity, rank-deficient, graded over
  // 19 decades, the shift, sparse): orthonormal factors, σ ≥ 0 sorted and a = U Σ Vᵀ each time.
  std::mt19937_64 rng(5);
  std::normal_distribution<double> nd;
  std::uniform_int_distribution<int> size(1, 60);
  for (int trial = 0; trial < 140; ++trial) {
    const int64_t n = size(rng);
    const int kind = trial % 7;
    Mat a(static_cast<size_t>(n * n), 0.0);
    for (int64_t j = 0; j < n; ++j)
      for (int64_t i = 0; i < n; ++i) {
        double x = nd(rng);
        if (kind == 1 && i > j) x = 0;
        if (kind == 2) x = i == j ? 1.0 : 0.0;
        if (kind == 3 && j >= n / 3) x = 0;
        if (kind == 4) x *= std::pow(10.0, -static_cast<double>(i % 20));
        if (kind == 5) x = j == i + 1 ? 1.0 : 0.0;
        if (kind == 6 && (i + j) % 5 != 0) x = 0;
        a[j * n + i] = x;
      }
    SCOPED_TRACE("n = " + std::to_string(n) + ", kind " + std::to_string(kind));
    expect_valid(small_svd(a, n), a, 1e-12);
  }
}

TEST(SmallSvd, NonFiniteInputComesBackAsNaN) {
  Mat a = {1, 2, 3, 4};
  a[2] = std::numeric_limits<double>::infinity();
  const SmallSvd s = small_svd(a, 2);
  for (double v : s.sigma) EXPECT_TRUE(std::isnan(v));
  for (double v : s.u) EXPECT_TRUE(std::isnan(v));
}

}  // namespace
}  // namespace nibble
