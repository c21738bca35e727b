// AdamW against hand-computed steps, weight decay, bias correction; global norm and the small
// vector updates.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "nibble/error.hpp"
#include "nibble/ops/ops.hpp"

using namespace nibble;

TEST(OpsAdamW, TwoStepsMatchHandComputedValues) {
  // lr 0.01, β = (0.9, 0.999), eps 1e-8, wd 0.1. Step 1: m̂ = g, v̂ = g², so the Adam term is
  // g/(|g| + eps) ≈ sign(g): p1 = p − 0.01·(sign(g) + 0.1·p). Step 2 by hand (float64):
  //   m = 0.9·m1 + 0.1·g2, v = 0.999·v1 + 0.001·g2², m̂ = m/0.19, v̂ = v/0.001999.
  // m and v carry the relative error of 1 − 0.999f (1.3e-5) in fp32.
  std::vector<float> p = {1.0f, -2.0f, 0.5f}, m(3, 0.0f), v(3, 0.0f);
  const std::vector<float> g1 = {0.1f, -0.2f, 0.3f}, g2 = {0.4f, 0.0f, -0.1f};
  ops::adamw_update(p.data(), g1.data(), m.data(), v.data(), 3, 0.01f, 0.9f, 0.999f, 1e-8f, 0.1f, 1);
  const double p1[3] = {0.9890000009999999, -1.9880000005, 0.4895000003333333};
  const double m1[3] = {0.01, -0.02, 0.03}, v1[3] = {1e-5, 4e-5, 9e-5};
  for (int i = 0; i < 3; ++i) {
    EXPECT_NEAR(p[i], p1[i], 5e-7) << i;
    EXPECT_NEAR(m[i], m1[i], 3e-5 * std::fabs(m1[i])) << i;
    EXPECT_NEAR(v[i], v1[i], 3e-5 * v1[i]) << i;
  }
  ops::adamw_update(p.data(), g2.data(), m.data(), v.data(), 3, 0.01f, 0.9f, 0.999f, 1e-8f, 0.1f, 2);
  const double p2[3] = {0.9791672363965117, -1.979311418432056, 0.48500831479247475};
  const double m2[3] = {0.049, -0.018, 0.017}, v2[3] = {1.6999e-4, 3.996e-5, 9.991e-5};
  for (int i = 0; i < 3; ++i) {
    EXPECT_NEAR(p[i], p2[i], 5e-7) << i;
    EXPECT_NEAR(m[i], m2[i], 3e-5 * std::fabs(m2[i])) << i;
    EXPECT_NEAR(v[i], v2[i], 3e-5 * v2[i]) << i;
  }
}

TEST(OpsAdamW, BiasCorrectionAtStepOneGivesSignSteps) {
  // Without correction the first step would be lr·0.1·g/(sqrt(0.001)·|g|) ≈ 3.16·lr.
  std::vector<float> p = {0.0f, 0.0f, 0.0f}, m(3, 0.0f), v(3, 0.0f);
  const std::vector<float> g = {1e-3f, -5.0f, 42.0f};
  ops::adamw_update(p.data(), g.data(), m.data(), v.data(), 3, 0.1f, 0.9f, 0.95f, 1e-12f, 0.0f, 1);
  EXPECT_NEAR(p[0], -0.1f, 1e-6f);
  EXPECT_NEAR(p[1], 0.1f, 1e-6f);
  EXPECT_NEAR(p[2], -0.1f, 1e-6f);
}

TEST(OpsAdamW, DecoupledWeightDecayActsOnTheParameterNotTheGradient) {
  // g = 0, m = v = 0: the Adam term is 0/(0 + eps) = 0 and only p −= lr·wd·p remains.
  std::vector<float> p = {2.0f, -4.0f}, m(2, 0.0f), v(2, 0.0f), g(2, 0.0f);
  ops::adamw_update(p.data(), g.data(), m.data(), v.data(), 2, 0.5f, 0.9f, 0.999f, 1e-8f, 0.1f, 3);
  EXPECT_FLOAT_EQ(p[0], 2.0f - 0.5f * 0.1f * 2.0f);
  EXPECT_FLOAT_EQ(p[1], -4.0f + 0.5f * 0.1f * 4.0f);
  EXPECT_EQ(m[0], 0.0f);
  EXPECT_EQ(v[1], 0.0f);
}

TEST(OpsAdamW, LongVectorMatchesScalarFloat64Formula) {
  const int64_t n = 100003;  // crosses the parallel threshold
  std::vector<float> p(n), g(n), m(n), v(n);
  for (int64_t i = 0; i < n; ++i) {
    p[i] = std::sin(0.001f * i);
    g[i] = std::cos(0.37f * i) * 0.01f;
    m[i] = 0.001f * std::sin(1.3f * i);
    v[i] = 1e-6f * (1.0f + std::cos(0.7f * i));
  }
  std::vector<float> p0 = p, m0 = m, v0 = v;
  ops::adamw_update(p.data(), g.data(), m.data(), v.data(), n, 3e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, 7);
  const double bc1 = 1 - std::pow(0.9, 7), bc2 = 1 - std::pow(0.95, 7);
  for (int64_t i = 0; i < n; i += 97) {
    const double mm = 0.9 * m0[i] + 0.1 * g[i], vv = 0.95 * v0[i] + 0.05 * double(g[i]) * g[i];
    const double pp = p0[i] - 3e-4 * ((mm / bc1) / (std::sqrt(vv / bc2) + 1e-8) + 0.1 * p0[i]);
    ASSERT_NEAR(p[i], pp, 1e-6) << i;
    ASSERT_NEAR(m[i], mm, 1e-8) << i;
  }
}

TEST(OpsAdamW, VectorAndScalarTailGiveTheSameBits) {
  // 8 vector lanes then a scalar tail of 7 holding the same inputs as lanes 0..6.
  for (int rep = 0; rep < 50; ++rep) {
    std::vector<float> p(15), g(15), m(15), v(15);
    for (int i = 0; i < 8; ++i) {
      const float s = static_cast<float>(rep * 8 + i);
      p[i] = std::sin(1.7f * s);
      g[i] = 0.03f * std::cos(2.3f * s);
      m[i] = 0.01f * std::sin(0.9f * s);
      v[i] = 1e-4f * (1.1f + std::sin(0.4f * s));
    }
    for (int i = 8; i < 15; ++i) {
      p[i] = p[i - 8];
      g[i] = g[i - 8];
      m[i] = m[i - 8];
      v[i] = v[i - 8];
    }
    ops::adamw_update(p.data(), g.data(), m.data(), v.data(), 15, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, rep + 1);
    for (int i = 8; i < 15; ++i) {
      ASSERT_EQ(p[i], p[i - 8]) << rep << " " << i;
      ASSERT_EQ(m[i], m[i - 8]) << rep << " " << i;
      ASSERT_EQ(v[i], v[i - 8]) << rep << " " << i;
    }
  }
}

TEST(OpsAdamW, StepZeroIsRejected) {
  float p = 0, g = 0, m = 0, v = 0;
  EXPECT_THROW(ops::adamw_update(&p, &g, &m, &v, 1, 0.1f, 0.9f, 0.999f, 1e-8f, 0.0f, 0), Error);
}

TEST(OpsGlobalNorm, SumsSquaresOverSeveralBuffersInFloat64) {
  std::vector<float> a = {3.0f, 4.0f}, b = {12.0f}, c;
  const float* bufs[3] = {a.data(), b.data(), c.data()};
  const int64_t sizes[3] = {2, 1, 0};
  EXPECT_DOUBLE_EQ(ops::global_norm(bufs, sizes, 3), 13.0);
  // Many small values: a float32 running sum would drift; float64 stays within 1e-12.
  std::vector<float> big(3000001, 1e-3f);
  const float* b2[1] = {big.data()};
  const int64_t s2[1] = {static_cast<int64_t>(big.size())};
  const double expect = std::sqrt(static_cast<double>(big.size()) * double(1e-3f) * double(1e-3f));
  EXPECT_NEAR(ops::global_norm(b2, s2, 1), expect, 1e-12 * expect);
}

TEST(OpsGlobalNorm, ScaleAndAddInplace) {
  std::vector<float> x = {1.0f, -2.0f, 0.5f};
  ops::scale_inplace(x.data(), 3, 4.0f);
  EXPECT_EQ(x, (std::vector<float>{4.0f, -8.0f, 2.0f}));
  std::vector<double> y = {1.0, 2.0}, z = {0.25, -3.0};
  ops::add_inplace(y.data(), z.data(), 2);
  EXPECT_EQ(y, (std::vector<double>{1.25, -1.0}));
  std::vector<float> big(200000, 1.0f), ones(200000, 2.0f);
  ops::add_inplace(big.data(), ones.data(), static_cast<int64_t>(big.size()));
  for (float f : big) ASSERT_EQ(f, 3.0f);
}
