// ops::exp_f32, the exponential of the float softmax and SiLU: accuracy against float64 exp on
// a sweep of floats, special values, and vectorised loops giving the scalar bits.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "nibble/ops/ops.hpp"

using namespace nibble;

namespace {
// A loop the compiler vectorises (the ops' pattern) next to one it may not (volatile).
void exp_loop(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = ops::exp_f32(x[i]);
}
}  // namespace

TEST(OpsExp, WithinOneUlpOfFloat64OverTheWholeRange) {
  double worst = 0;
  float worst_x = 0;
  int64_t count = 0;
  uint32_t bits;
  const float lo = -86.6f, hi = 88.72f;
  for (float x = lo; x < hi; ++count) {
    const double ref = std::exp(static_cast<double>(x));
    const double rel = std::fabs(static_cast<double>(ops::exp_f32(x)) - ref) / ref;
    if (rel > worst) {
      worst = rel;
      worst_x = x;
    }
    std::memcpy(&bits, &x, 4);
    bits = x < 0 ? (bits - 997 > 0x80000000u ? bits - 997 : 0) : bits + 997;  // every 997th float
    std::memcpy(&x, &bits, 4);
  }
  EXPECT_GT(count, 2000000);
  EXPECT_LT(worst, 1.2e-7) << "at x = " << worst_x;
}

TEST(OpsExp, SpecialValues) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(ops::exp_f32(0.0f), 1.0f);
  EXPECT_EQ(ops::exp_f32(-0.0f), 1.0f);
  EXPECT_EQ(ops::exp_f32(inf), inf);
  EXPECT_EQ(ops::exp_f32(89.0f), inf);
  EXPECT_EQ(ops::exp_f32(-inf), 0.0f);
  EXPECT_EQ(ops::exp_f32(-100.0f), 0.0f);
  EXPECT_TRUE(std::isnan(ops::exp_f32(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_TRUE(std::isnan(ops::exp_f32(-std::numeric_limits<float>::quiet_NaN())));
  const float top = ops::exp_f32(88.72283f);  // just below FLT_MAX
  EXPECT_TRUE(std::isfinite(top));
  EXPECT_NEAR(top / std::exp(static_cast<double>(88.72283f)), 1.0, 2e-7);
  EXPECT_NEAR(ops::exp_f32(-86.5f) / std::exp(static_cast<double>(-86.5f)), 1.0, 2e-7);  // smallest normal results
  EXPECT_NEAR(ops::exp_f32(1.0f), 2.718281828459045, 3e-7);
}

TEST(OpsExp, VectorisedLoopGivesTheScalarBits) {
  std::vector<float> x(1001), y(1001);
  for (size_t i = 0; i < x.size(); ++i) x[i] = -90.0f + 0.18f * static_cast<float>(i);
  x[17] = std::numeric_limits<float>::quiet_NaN();
  x[18] = std::numeric_limits<float>::infinity();
  exp_loop(x.data(), y.data(), static_cast<int64_t>(x.size()));
  for (size_t i = 0; i < x.size(); ++i) {
    volatile float xi = x[i];
    const float s = ops::exp_f32(xi);
    if (std::isnan(s)) {
      ASSERT_TRUE(std::isnan(y[i])) << i;
    } else {
      ASSERT_EQ(y[i], s) << i << " x=" << x[i];
    }
  }
}
