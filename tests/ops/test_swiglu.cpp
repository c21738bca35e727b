// SwiGLU: forward formula, float64 gradient check, extreme gates.
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
}  // namespace

TEST(OpsSwiGlu, ForwardMatchesFormula) {
  const size_t n = 100000;
  const auto g = random_vec(n, 1, -8, 8), u = random_vec(n, 2, -2, 2);
  std::vector<double> out(n);
  ops::swiglu_forward(g.data(), u.data(), out.data(), static_cast<int64_t>(n));
  std::vector<float> gf(g.begin(), g.end()), uf(u.begin(), u.end()), of(n);
  ops::swiglu_forward(gf.data(), uf.data(), of.data(), static_cast<int64_t>(n));
  for (size_t i = 0; i < n; ++i) {
    const double expect = g[i] / (1.0 + std::exp(-g[i])) * u[i];
    ASSERT_NEAR(out[i], expect, 1e-14 * std::max(1.0, std::fabs(expect))) << i;
    ASSERT_NEAR(of[i], expect, 2e-6 * std::max(1.0, std::fabs(expect))) << i;
  }
  const double g0 = 0.0, u0 = 3.0, g1 = 1.0, u1 = 2.0;
  double o;
  ops::swiglu_forward(&g0, &u0, &o, 1);
  EXPECT_EQ(o, 0.0);
  ops::swiglu_forward(&g1, &u1, &o, 1);
  EXPECT_DOUBLE_EQ(o, 2.0 / (1.0 + std::exp(-1.0)));  // silu(1) = σ(1)
}

TEST(OpsSwiGlu, Float64GradientCheck) {
  const int64_t n = 40;
  auto g = random_vec(n, 3, -4, 4), u = random_vec(n, 4, -2, 2);
  const auto r = random_vec(n, 5);
  auto loss = [&] {
    std::vector<double> out(n);
    ops::swiglu_forward(g.data(), u.data(), out.data(), n);
    double l = 0;
    for (int64_t i = 0; i < n; ++i) l += out[i] * r[i];
    return l;
  };
  std::vector<double> dg(n), du(n);
  ops::swiglu_backward(r.data(), g.data(), u.data(), dg.data(), du.data(), n);
  for (auto* pr : {&g, &u}) {
    std::vector<double>& x = *pr;
    const std::vector<double>& grad = pr == &g ? dg : du;
    for (int64_t i = 0; i < n; ++i) {
      const double x0 = x[i], h = 1e-6 * std::max(1.0, std::fabs(x0));
      x[i] = x0 + h;
      const double lp = loss();
      x[i] = x0 - h;
      const double lm = loss();
      x[i] = x0;
      EXPECT_NEAR((lp - lm) / (2 * h), grad[i], 1e-7 * std::max(1.0, std::fabs(grad[i])))
          << (pr == &g ? "dgate " : "dup ") << i;
    }
  }
}

TEST(OpsSwiGlu, ExtremeGatesStayFinite) {
  const std::vector<float> g = {-1000.0f, -90.0f, 90.0f, 1000.0f}, u = {1.0f, 2.0f, 3.0f, 4.0f}, d(4, 1.0f);
  std::vector<float> out(4), dg(4), du(4);
  ops::swiglu_forward(g.data(), u.data(), out.data(), 4);
  ops::swiglu_backward(d.data(), g.data(), u.data(), dg.data(), du.data(), 4);
  for (int i = 0; i < 4; ++i) {
    EXPECT_TRUE(std::isfinite(out[i]) && std::isfinite(dg[i]) && std::isfinite(du[i])) << i;
  }
  EXPECT_EQ(out[0], 0.0f);
  EXPECT_EQ(out[3], 4000.0f);
  EXPECT_EQ(dg[3], 4.0f);
  EXPECT_EQ(du[3], 1000.0f);
}
