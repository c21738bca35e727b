// RMSNorm: forward by the formula, float64 gradient check of dx and dw (dw accumulates),
// float against float64.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "nibble/ops/ops.hpp"
#include "support/random_data.hpp"

using namespace nibble;
using nibble::testing::random_vec;

namespace {

// Central differences of loss() with respect to every element of x, against grad.
template <class F>
void expect_gradient(std::vector<double>& x, const std::vector<double>& grad, F&& loss, const char* what) {
  double gmax = 0;
  for (double g : grad) gmax = std::max(gmax, std::fabs(g));
  ASSERT_GT(gmax, 1e-2) << what << ": vanishing gradient, the check would prove nothing";
  for (size_t i = 0; i < x.size(); ++i) {
    const double x0 = x[i], h = 1e-6 * std::max(1.0, std::fabs(x0));
    x[i] = x0 + h;
    const double lp = loss();
    x[i] = x0 - h;
    const double lm = loss();
    x[i] = x0;
    EXPECT_NEAR((lp - lm) / (2 * h), grad[i], 1e-7 * std::max(1.0, std::fabs(grad[i]))) << what << "[" << i << "]";
  }
}
}  // namespace

TEST(OpsRmsNorm, ForwardMatchesFormula) {
  const int64_t n = 5, c = 7;
  const auto x = random_vec(n * c, 1, -3, 3), w = random_vec(c, 2, 0.5, 1.5);
  const double eps = 1e-5;
  std::vector<double> y(n * c), rstd(n);
  ops::rmsnorm_forward(x.data(), w.data(), y.data(), rstd.data(), n, c, eps);
  std::vector<float> xf(x.begin(), x.end()), wf(w.begin(), w.end()), yf(n * c), rf(n);
  ops::rmsnorm_forward(xf.data(), wf.data(), yf.data(), rf.data(), n, c, 1e-5f);
  for (int64_t i = 0; i < n; ++i) {
    double ss = 0;
    for (int64_t j = 0; j < c; ++j) ss += x[i * c + j] * x[i * c + j];
    const double r = 1.0 / std::sqrt(ss / c + eps);
    EXPECT_NEAR(rstd[i], r, 1e-14 * r);
    EXPECT_NEAR(rf[i], r, 1e-6 * r);
    for (int64_t j = 0; j < c; ++j) {
      const double expect = x[i * c + j] * r * w[j];
      EXPECT_NEAR(y[i * c + j], expect, 1e-14);
      EXPECT_NEAR(yf[i * c + j], expect, 3e-6 * std::max(1.0, std::fabs(expect)));
    }
  }
  // Hand example: x = (3, 4), w = (1, 2), eps = 0: rms = sqrt(12.5), y = (3, 8)/sqrt(12.5).
  const double xh[2] = {3, 4}, wh[2] = {1, 2};
  double yh[2], rh[1];
  ops::rmsnorm_forward(xh, wh, yh, rh, 1, 2, 0.0);
  EXPECT_DOUBLE_EQ(yh[0], 3 / std::sqrt(12.5));
  EXPECT_DOUBLE_EQ(yh[1], 8 / std::sqrt(12.5));
}

TEST(OpsRmsNorm, Float64GradientCheck) {
  // eps = 0.1 so that a misplaced eps shows in the gradient too.
  for (double eps : {1e-6, 0.1}) {
    const int64_t n = 3, c = 6;
    auto x = random_vec(n * c, 3, -2, 2), w = random_vec(c, 4, 0.5, 1.5);
    const auto r = random_vec(n * c, 5);
    auto loss = [&] {
      std::vector<double> y(n * c), rs(n);
      ops::rmsnorm_forward(x.data(), w.data(), y.data(), rs.data(), n, c, eps);
      double l = 0;
      for (int64_t i = 0; i < n * c; ++i) l += y[i] * r[i];
      return l;
    };
    std::vector<double> y(n * c), rs(n), dx(n * c);
    ops::rmsnorm_forward(x.data(), w.data(), y.data(), rs.data(), n, c, eps);
    const auto dw0 = random_vec(c, 6);
    std::vector<double> dw = dw0;
    ops::rmsnorm_backward(r.data(), x.data(), w.data(), rs.data(), dx.data(), dw.data(), n, c);
    std::vector<double> dw_step(c);
    for (int64_t j = 0; j < c; ++j) dw_step[j] = dw[j] - dw0[j];  // dw accumulates
    expect_gradient(x, dx, loss, "dx");
    expect_gradient(w, dw_step, loss, "dw");
  }
}

TEST(OpsRmsNorm, FloatBackwardMatchesFloat64AndMayWriteOverDy) {
  const int64_t n = 300, c = 200;  // parallel paths
  const auto x = random_vec(n * c, 7, -2, 2), w = random_vec(c, 8, 0.5, 1.5), dy = random_vec(n * c, 9);
  std::vector<double> y(n * c), rs(n), dx(n * c), dw(c, 0.0);
  ops::rmsnorm_forward(x.data(), w.data(), y.data(), rs.data(), n, c, 1e-5);
  ops::rmsnorm_backward(dy.data(), x.data(), w.data(), rs.data(), dx.data(), dw.data(), n, c);
  std::vector<float> xf(x.begin(), x.end()), wf(w.begin(), w.end()), yf(n * c), rf(n), dwf(c, 0.0f);
  std::vector<float> dyf(dy.begin(), dy.end());
  ops::rmsnorm_forward(xf.data(), wf.data(), yf.data(), rf.data(), n, c, 1e-5f);
  ops::rmsnorm_backward(dyf.data(), xf.data(), wf.data(), rf.data(), dyf.data(), dwf.data(), n, c);  // dx = dy
  for (int64_t i = 0; i < n * c; ++i) ASSERT_NEAR(dyf[i], dx[i], 1e-5 * std::max(1.0, std::fabs(dx[i]))) << i;
  for (int64_t j = 0; j < c; ++j) ASSERT_NEAR(dwf[j], dw[j], 1e-5 * std::max(1.0, std::fabs(dw[j]))) << j;
}
