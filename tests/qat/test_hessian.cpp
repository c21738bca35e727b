// Hessian tools against problems with known Hessians: a quadratic with a chosen (indefinite)
// spectrum, and softmax regression, whose Hessian-vector product has a closed form.
#include <gtest/gtest.h>

#include <cmath>

#include "nibble/error.hpp"
#include "nibble/qat/hessian.hpp"
#include "nibble/quant/spectral.hpp"  // philox_normal

using namespace nibble;

namespace {

constexpr int kN = 12;
const double kEig[kN] = {5.0, -3.0, 2.0, 1.0, 0.5, -0.25, 0.1, 0.05, -0.01, 0.0, 0.002, 0.3};

// A = Q diag(λ) Qᵀ with Q orthonormal (Gram–Schmidt of Philox normals).
std::vector<double> make_a(std::vector<double>& q) {
  q.assign(kN * kN, 0.0);
  for (int c = 0; c < kN; ++c) {
    std::vector<double> v(kN);
    for (int r = 0; r < kN; ++r) v[r] = philox_normal(3, static_cast<uint32_t>(c), static_cast<uint64_t>(r));
    for (int pass = 0; pass < 2; ++pass)
      for (int o = 0; o < c; ++o) {
        double d = 0;
        for (int r = 0; r < kN; ++r) d += q[r * kN + o] * v[r];
        for (int r = 0; r < kN; ++r) v[r] -= d * q[r * kN + o];
      }
    double n = 0;
    for (double x : v) n += x * x;
    for (int r = 0; r < kN; ++r) q[r * kN + c] = v[r] / std::sqrt(n);
  }
  std::vector<double> a(kN * kN, 0.0);
  for (int i = 0; i < kN; ++i)
    for (int j = 0; j < kN; ++j)
      for (int k = 0; k < kN; ++k) a[i * kN + j] += q[i * kN + k] * kEig[k] * q[j * kN + k];
  return a;
}

HessianProblem quadratic(const std::vector<double>& a) {
  HessianProblem p;
  p.w.assign(kN, 0.3);
  p.grad = [a](const std::vector<double>& w) {
    std::vector<double> g(kN, 0.0);
    for (int i = 0; i < kN; ++i)
      for (int j = 0; j < kN; ++j) g[i] += a[i * kN + j] * w[j];
    return g;
  };
  return p;
}

}  // namespace

TEST(Hessian, QuadraticHvpEigenvaluesTraceAndDensity) {
  std::vector<double> q;
  const std::vector<double> a = make_a(q);
  const HessianProblem p = quadratic(a);
  std::vector<double> v(kN);
  for (int i = 0; i < kN; ++i) v[i] = std::sin(1.0 + i);
  const std::vector<double> hv = hvp(p, v);
  for (int i = 0; i < kN; ++i) {
    double e = 0;
    for (int j = 0; j < kN; ++j) e += a[i * kN + j] * v[j];
    EXPECT_NEAR(hv[i], e, 1e-9);
  }
  // the three largest magnitudes, signed: 5, −3, 2
  const EigenResult top = top_eigen(p, 3, 500, 1e-10);
  ASSERT_EQ(top.values.size(), 3u);
  EXPECT_NEAR(top.values[0], 5.0, 1e-6);
  EXPECT_NEAR(top.values[1], -3.0, 1e-6);
  EXPECT_NEAR(top.values[2], 2.0, 1e-6);
  for (size_t e = 0; e < 3; ++e) EXPECT_TRUE(top.converged[e]) << top.iterations[e] << " iterations";
  // a budget of 3 products cannot meet 1e-10: reported as not converged, with the 3 it took
  const EigenResult capped = top_eigen(p, 1, 3, 1e-10);
  ASSERT_EQ(capped.iterations.size(), 1u);
  EXPECT_EQ(capped.iterations[0], 3);
  EXPECT_FALSE(capped.converged[0]);
  // Hutchinson: E[zᵀAz] = tr A; Var = 2 Σ_{i≠j} A_ij² per probe
  double tr = 0, off2 = 0;
  for (int i = 0; i < kN; ++i) {
    tr += kEig[i];
    for (int j = 0; j < kN; ++j)
      if (i != j) off2 += a[i * kN + j] * a[i * kN + j];
  }
  const int probes = 4000;
  EXPECT_NEAR(hutchinson_trace(p, probes), tr, 4.0 * std::sqrt(2 * off2 / probes));
  // SLQ with as many Lanczos steps as dimensions: the Ritz values are A's eigenvalues, the
  // weights τ² of a probe sum to 1, and the density integrates to 1
  const SpectralDensity d = slq_density(p, 3, kN, 400, 0.005);
  std::vector<double> ev(kEig, kEig + kN);
  std::sort(ev.begin(), ev.end());
  for (size_t pr = 0; pr < d.nodes.size(); ++pr) {
    ASSERT_EQ(d.nodes[pr].size(), static_cast<size_t>(kN));
    double wsum = 0;
    for (int i = 0; i < kN; ++i) {
      EXPECT_NEAR(d.nodes[pr][i], ev[i], 1e-7);
      wsum += d.weights[pr][i];
    }
    EXPECT_NEAR(wsum, 1.0, 1e-10);
  }
  double integral = 0;
  for (size_t g = 1; g < d.grid.size(); ++g) integral += 0.5 * (d.density[g] + d.density[g - 1]) * (d.grid[g] - d.grid[g - 1]);
  EXPECT_NEAR(integral, 1.0, 1e-3);
}

TEST(Hessian, SoftmaxRegressionHvpMatchesTheClosedForm) {
  const int c = 4, dd = 5, n = 30;
  std::vector<double> x(n * dd);
  std::vector<int> y(n);
  for (int i = 0; i < n * dd; ++i) x[i] = philox_normal(9, 1, static_cast<uint64_t>(i));
  for (int i = 0; i < n; ++i) y[i] = i % c;
  auto probs = [&](const std::vector<double>& w, int i) {
    std::vector<double> p(c);
    double mx = -INFINITY;
    for (int k = 0; k < c; ++k) {
      double s = 0;
      for (int j = 0; j < dd; ++j) s += w[k * dd + j] * x[i * dd + j];
      p[k] = s;
      mx = std::max(mx, s);
    }
    double z = 0;
    for (double& e : p) z += (e = std::exp(e - mx));
    for (double& e : p) e /= z;
    return p;
  };
  HessianProblem p;
  p.w.resize(c * dd);
  for (int i = 0; i < c * dd; ++i) p.w[i] = 0.3 * philox_normal(9, 2, static_cast<uint64_t>(i));
  p.grad = [&](const std::vector<double>& w) {  // mean cross-entropy gradient
    std::vector<double> g(c * dd, 0.0);
    for (int i = 0; i < n; ++i) {
      const std::vector<double> pr = probs(w, i);
      for (int k = 0; k < c; ++k)
        for (int j = 0; j < dd; ++j) g[k * dd + j] += (pr[k] - (k == y[i])) * x[i * dd + j] / n;
    }
    return g;
  };
  std::vector<double> v(c * dd);
  for (int i = 0; i < c * dd; ++i) v[i] = std::cos(0.7 * i);
  const std::vector<double> hv = hvp(p, v);
  // closed form: H v = (1/N) Σ_i [(diag p − p pᵀ)(V x_i)] x_iᵀ
  std::vector<double> e(c * dd, 0.0);
  for (int i = 0; i < n; ++i) {
    const std::vector<double> pr = probs(p.w, i);
    std::vector<double> vx(c, 0.0);
    for (int k = 0; k < c; ++k)
      for (int j = 0; j < dd; ++j) vx[k] += v[k * dd + j] * x[i * dd + j];
    double pvx = 0;
    for (int k = 0; k < c; ++k) pvx += pr[k] * vx[k];
    for (int k = 0; k < c; ++k)
      for (int j = 0; j < dd; ++j) e[k * dd + j] += pr[k] * (vx[k] - pvx) * x[i * dd + j] / n;
  }
  double num = 0, den = 0;
  for (int i = 0; i < c * dd; ++i) {
    num += (hv[i] - e[i]) * (hv[i] - e[i]);
    den += e[i] * e[i];
  }
  EXPECT_LT(std::sqrt(num / den), 1e-7);  // central differences: O(ε²) with ε = 1e-4
}

TEST(Hessian, SpectrumSharesSeparateNegativeNearZeroAndPositiveMass) {
  SpectralDensity d;
  // two probes; the largest |θ| is 10, so τ = 0.1
  d.nodes = {{-2.0, -0.05, 0.0, 10.0}, {-0.2, 0.08, 5.0}};
  d.weights = {{0.1, 0.2, 0.3, 0.4}, {0.5, 0.25, 0.25}};
  const SpectrumShares s = spectrum_shares(d, 0.01);
  EXPECT_DOUBLE_EQ(s.tolerance, 0.1);
  EXPECT_DOUBLE_EQ(s.negative, (0.1 + 0.5) / 2);            // −2 and −0.2
  EXPECT_DOUBLE_EQ(s.near_zero, (0.2 + 0.3 + 0.25) / 2);    // −0.05, 0, 0.08
  EXPECT_DOUBLE_EQ(s.positive, (0.4 + 0.25) / 2);           // 10, 5
  EXPECT_DOUBLE_EQ(s.negative_any, (0.1 + 0.2 + 0.5) / 2);  // everything below 0
  EXPECT_EQ(spectrum_shares(SpectralDensity{}).negative, 0.0);
}

TEST(Hessian, BadArgumentsAreErrors) {
  std::vector<double> q;
  const HessianProblem p = quadratic(make_a(q));
  EXPECT_THROW(top_eigen(p, 0), Error);
  EXPECT_THROW(hutchinson_trace(p, 0), Error);
  EXPECT_THROW(slq_density(p, 0, 5), Error);
}
