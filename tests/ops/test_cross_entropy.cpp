// Softmax cross-entropy: a hand-computed 2×3 example, ignored rows, the bad-target error, the
// float64 gradient check, stability, in-place gradients.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "nibble/error.hpp"
#include "nibble/ops/ops.hpp"
#include "support/random_data.hpp"

using namespace nibble;
using nibble::testing::random_vec;

namespace {
}  // namespace

TEST(OpsCrossEntropy, HandComputedTwoByThree) {
  // Row 0: logits (1, 2, 3), target 2: loss = log(e + e² + e³) − 3 = 0.40760596444438013.
  // Row 1: logits (1, 1, 1), target 0: loss = log 3. Mean 0.753109126556245.
  const std::vector<double> logits = {1, 2, 3, 1, 1, 1};
  const std::vector<int32_t> tg = {2, 0};
  std::vector<double> d(6);
  EXPECT_NEAR(ops::cross_entropy(logits.data(), tg.data(), d.data(), 2, 3), 0.753109126556245, 1e-15);
  const double expect[6] = {0.04501528658519023, 0.12236423552739883, 0.33262047788741095 - 0.5,
                            1.0 / 6 - 0.5,       1.0 / 6,             1.0 / 6};
  for (int i = 0; i < 6; ++i) EXPECT_NEAR(d[i], expect[i], 1e-15) << i;
  const std::vector<float> lf(logits.begin(), logits.end());
  std::vector<float> df(6);
  EXPECT_NEAR(ops::cross_entropy(lf.data(), tg.data(), df.data(), 2, 3), 0.753109126556245, 1e-7);
  for (int i = 0; i < 6; ++i) EXPECT_NEAR(df[i], expect[i], 1e-7) << i;
  EXPECT_NEAR(ops::cross_entropy<float>(lf.data(), tg.data(), nullptr, 2, 3), 0.753109126556245, 1e-7);
}

TEST(OpsCrossEntropy, IgnoredRowsCountNeitherInLossNorInGradient) {
  const std::vector<double> logits = {1, 2, 3, 5, -1, 0, 1, 1, 1};
  const std::vector<int32_t> tg = {2, -1, 0};
  std::vector<double> d(9, 42.0);
  EXPECT_NEAR(ops::cross_entropy(logits.data(), tg.data(), d.data(), 3, 3), 0.753109126556245, 1e-15);
  for (int j = 3; j < 6; ++j) EXPECT_EQ(d[j], 0.0);
  EXPECT_NEAR(d[0], 0.04501528658519023, 1e-15);  // divided by n_valid = 2, not 3
  const std::vector<int32_t> none = {-1, -1, -1};
  EXPECT_EQ(ops::cross_entropy(logits.data(), none.data(), d.data(), 3, 3), 0.0);
  for (double v : d) EXPECT_EQ(v, 0.0);
}

TEST(OpsCrossEntropy, TargetOutsideVocabularyNamesRowAndValue) {
  const std::vector<float> logits(12, 0.0f);
  std::vector<float> d(12, 7.0f);
  for (int32_t bad : {4, -2}) {
    const std::vector<int32_t> tg = {0, 3, bad};
    try {
      ops::cross_entropy(logits.data(), tg.data(), d.data(), 3, 4);
      FAIL() << "no error for target " << bad;
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("row 2"), std::string::npos) << msg;
      EXPECT_NE(msg.find("is " + std::to_string(bad)), std::string::npos) << msg;
    }
    for (float v : d) EXPECT_EQ(v, 7.0f);  // nothing written
  }
}

TEST(OpsCrossEntropy, Float64GradientCheck) {
  const int64_t n = 4, v = 5;
  auto x = random_vec(n * v, 1, -3, 3);
  const std::vector<int32_t> tg = {3, -1, 0, 4};
  auto loss = [&] { return ops::cross_entropy<double>(x.data(), tg.data(), nullptr, n, v); };
  std::vector<double> d(n * v);
  ops::cross_entropy(x.data(), tg.data(), d.data(), n, v);
  for (int64_t i = 0; i < n * v; ++i) {
    const double x0 = x[i], h = 1e-6 * std::max(1.0, std::fabs(x0));
    x[i] = x0 + h;
    const double lp = loss();
    x[i] = x0 - h;
    const double lm = loss();
    x[i] = x0;
    EXPECT_NEAR((lp - lm) / (2 * h), d[i], 1e-7 * std::max(1.0, std::fabs(d[i]))) << i;
  }
}

TEST(OpsCrossEntropy, HugeLogitsAreStableAndGradientMayOverwriteLogits) {
  // Shifted by 1000 the exponentials would overflow without the max subtraction.
  const int64_t n = 300, v = 1000;  // parallel path
  auto x = random_vec(n * v, 2, -5, 5);
  std::vector<int32_t> tg(n);
  for (int64_t i = 0; i < n; ++i) tg[i] = static_cast<int32_t>((i * 37) % v);
  std::vector<double> d(n * v);
  const double l0 = ops::cross_entropy(x.data(), tg.data(), d.data(), n, v);
  std::vector<float> xf(n * v);
  for (int64_t i = 0; i < n * v; ++i) xf[i] = static_cast<float>(x[i] + 1000.0);
  const double lf = ops::cross_entropy(xf.data(), tg.data(), xf.data(), n, v);  // in place
  EXPECT_NEAR(lf, l0, 1e-3);  // float logits near 1000 carry ~3e-5 absolute error each
  double dmax = 0;
  for (int64_t i = 0; i < n * v; ++i) dmax = std::max(dmax, std::fabs(double(xf[i]) - d[i]));
  EXPECT_LT(dmax, 1e-7);
  EXPECT_TRUE(std::isfinite(lf));
}
