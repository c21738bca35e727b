// Rotary embedding: explicit 2×2 rotations per pair, a hand example, the inverse, the float64
// gradient check, validation.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "nibble/error.hpp"
#include "nibble/ops/ops.hpp"
#include "support/random_data.hpp"

using namespace nibble;
using nibble::testing::random_vec;

namespace {
}  // namespace

TEST(OpsRope, HandExampleRotatesPairsHalfADimensionApart) {
  // D = 4, base = 100: frequencies (1, 0.1); position 2 rotates (x0, x2) by 2 rad and (x1, x3)
  // by 0.2 rad. Position 0 is the identity.
  std::vector<double> x = {9, 8, 7, 6, 0, 0, 0, 0, 1, 2, 3, 4};  // B=1, T=3, H=1, D=4
  ops::rope_forward(x.data(), 1, 3, 1, 4, 100.0);
  EXPECT_EQ(x[0], 9);
  EXPECT_EQ(x[3], 6);
  EXPECT_NEAR(x[8], -3.1440391170241875, 1e-15);
  EXPECT_NEAR(x[10], -0.33914308281574557, 1e-15);
  EXPECT_NEAR(x[9], 1.1654558325022384, 1e-15);
  EXPECT_NEAR(x[11], 4.317604972955089, 1e-15);
}

TEST(OpsRope, MatchesExplicitRotationAndRoundsOnceInFloat) {
  const int64_t b = 2, t = 5, h = 3, d = 8;
  const double base = 10000.0;
  const auto x0 = random_vec(b * t * h * d, 1);
  std::vector<double> x = x0;
  std::vector<float> xf(x0.begin(), x0.end());
  const std::vector<float> xf0 = xf;
  ops::rope_forward(x.data(), b, t, h, d, base);
  ops::rope_forward(xf.data(), b, t, h, d, base);
  for (int64_t bb = 0; bb < b; ++bb)
    for (int64_t pos = 0; pos < t; ++pos)
      for (int64_t hh = 0; hh < h; ++hh)
        for (int64_t i = 0; i < d / 2; ++i) {
          const int64_t o = ((bb * t + pos) * h + hh) * d;
          const double theta = pos * std::pow(base, -2.0 * i / d);
          const double c = std::cos(theta), s = std::sin(theta);
          // [y_i; y_{i+D/2}] = [[c, −s], [s, c]] · [x_i; x_{i+D/2}]
          EXPECT_NEAR(x[o + i], c * x0[o + i] - s * x0[o + i + d / 2], 1e-15);
          EXPECT_NEAR(x[o + i + d / 2], s * x0[o + i] + c * x0[o + i + d / 2], 1e-15);
          const double a = xf0[o + i], bv = xf0[o + i + d / 2];
          EXPECT_EQ(xf[o + i], static_cast<float>(a * c - bv * s));
          EXPECT_EQ(xf[o + i + d / 2], static_cast<float>(bv * c + a * s));
        }
}

TEST(OpsRope, BackwardIsTheInverseRotation) {
  const int64_t b = 1, t = 300, h = 2, d = 64;  // parallel path, long table
  const auto x0 = random_vec(b * t * h * d, 2);
  std::vector<double> x = x0;
  ops::rope_forward(x.data(), b, t, h, d, 500000.0);
  double moved = 0;
  for (size_t i = 0; i < x.size(); ++i) moved = std::max(moved, std::fabs(x[i] - x0[i]));
  EXPECT_GT(moved, 0.1);
  ops::rope_backward(x.data(), b, t, h, d, 500000.0);
  for (size_t i = 0; i < x.size(); ++i) ASSERT_NEAR(x[i], x0[i], 1e-14) << i;
}

TEST(OpsRope, Float64GradientCheck) {
  const int64_t b = 2, t = 4, h = 2, d = 6;
  auto x = random_vec(b * t * h * d, 3);
  const auto r = random_vec(x.size(), 4);
  auto loss = [&] {
    std::vector<double> y = x;
    ops::rope_forward(y.data(), b, t, h, d, 10000.0);
    double l = 0;
    for (size_t i = 0; i < y.size(); ++i) l += y[i] * r[i];
    return l;
  };
  std::vector<double> g = r;
  ops::rope_backward(g.data(), b, t, h, d, 10000.0);
  for (size_t i = 0; i < x.size(); ++i) {
    const double x0 = x[i], hh = 1e-6 * std::max(1.0, std::fabs(x0));
    x[i] = x0 + hh;
    const double lp = loss();
    x[i] = x0 - hh;
    const double lm = loss();
    x[i] = x0;
    EXPECT_NEAR((lp - lm) / (2 * hh), g[i], 1e-7 * std::max(1.0, std::fabs(g[i]))) << i;
  }
}

TEST(OpsRope, OddHeadDimensionIsRejected) {
  std::vector<float> x(6);
  EXPECT_THROW(ops::rope_forward(x.data(), 1, 2, 1, 3, 10000.0), Error);
}
