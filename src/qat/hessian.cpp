// Hessian spectrum tools (see hessian.hpp).
#include "nibble/qat/hessian.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <utility>

#include "nibble/error.hpp"
#include "nibble/philox.hpp"

namespace nibble {
namespace {

// Models have up to hundreds of millions of weights: the vector operations run in parallel
// (OpenMP). A dot product sums fixed chunks of 2^16 in order and then the chunk sums in order,
// so its value does not depend on the number of threads.
constexpr int64_t kChunk = int64_t(1) << 16;

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  const auto n = static_cast<int64_t>(a.size());
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> part(static_cast<size_t>(chunks), 0.0);
#pragma omp parallel for schedule(static) if (chunks > 4)
  for (int64_t c = 0; c < chunks; ++c) {
    double s = 0;
    for (int64_t i = c * kChunk; i < std::min(n, (c + 1) * kChunk); ++i) s += a[i] * b[i];
    part[static_cast<size_t>(c)] = s;
  }
  double s = 0;
  for (double x : part) s += x;
  return s;
}
double norm(const std::vector<double>& a) { return std::sqrt(dot(a, a)); }
void axpy(double a, const std::vector<double>& x, std::vector<double>& y) {
  const auto n = static_cast<int64_t>(y.size());
#pragma omp parallel for schedule(static) if (n >= 4 * kChunk)
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}
void scale(std::vector<double>& x, double a) {  // x ← x / a
  const auto n = static_cast<int64_t>(x.size());
#pragma omp parallel for schedule(static) if (n >= 4 * kChunk)
  for (int64_t i = 0; i < n; ++i) x[i] /= a;
}

std::vector<double> rademacher(size_t n, uint64_t seed, uint32_t stream) {
  std::vector<double> z(n);
  const auto m = static_cast<int64_t>(n);
#pragma omp parallel for schedule(static) if (m >= 4 * kChunk)
  for (int64_t i = 0; i < m; ++i) z[i] = philox_sign(seed, stream, static_cast<uint64_t>(i));
  return z;
}

}  // namespace

std::vector<double> hvp(const HessianProblem& p, const std::vector<double>& v) {
  NIBBLE_CHECK(v.size() == p.w.size(), "hvp: vector size");
  const double nv = norm(v);
  if (nv == 0) return std::vector<double>(v.size(), 0.0);
  const double h = p.eps / nv;  // a step of length eps along v
  // both points in one pass, and the difference written over g(w + hv): on models of tens of
  // millions of weights these passes over memory, not the gradients, are most of the time
  const auto n = static_cast<int64_t>(v.size());
  std::vector<double> wp(v.size()), wm(v.size());
#pragma omp parallel for schedule(static) if (n >= 4 * kChunk)
  for (int64_t i = 0; i < n; ++i) {
    wp[i] = p.w[i] + h * v[i];
    wm[i] = p.w[i] - h * v[i];
  }
  std::vector<double> gp = p.grad(wp);
  const std::vector<double> gm = p.grad(wm);
#pragma omp parallel for schedule(static) if (n >= 4 * kChunk)
  for (int64_t i = 0; i < n; ++i) gp[i] = (gp[i] - gm[i]) / (2 * h);
  return gp;
}

EigenResult top_eigen(const HessianProblem& p, int k, int max_iters, double tol, uint64_t seed) {
  if (k < 1) fail("hessian: --top must be >= 1");
  EigenResult r;
  const size_t n = p.w.size();
  for (int e = 0; e < k; ++e) {
    std::vector<double> v = rademacher(n, seed, static_cast<uint32_t>(100 + e));
    auto deflate = [&](std::vector<double>& x) {
      for (const auto& u : r.vectors) axpy(-dot(u, x), u, x);
    };
    deflate(v);
    scale(v, norm(v));
    double lambda = 0;
    bool converged = false;
    int it = 0;
    for (; it < max_iters; ++it) {
      std::vector<double> hv = hvp(p, v);
      deflate(hv);
      const double l = dot(v, hv);  // Rayleigh quotient: the signed eigenvalue
      const double nh = norm(hv);
      if (nh == 0) { lambda = 0; converged = true; break; }
      scale(hv, nh);  // the next iterate
      // a negative eigenvalue flips the vector each step: compare up to sign. Both are unit
      // vectors, so min ‖hv ∓ v‖ = sqrt(2 − 2|hv·v|)
      const double change = std::sqrt(std::max(0.0, 2.0 - 2.0 * std::fabs(dot(hv, v))));
      v = std::move(hv);
      converged = it > 0 && std::fabs(l - lambda) <= tol * std::max(1.0, std::fabs(l)) && change < std::sqrt(tol);
      lambda = l;
      if (converged) break;
    }
    r.values.push_back(lambda);
    r.vectors.push_back(v);
    r.iterations.push_back(std::min(it + 1, max_iters));
    r.converged.push_back(converged);
  }
  return r;
}

double hutchinson_trace(const HessianProblem& p, int probes, uint64_t seed) {
  if (probes < 1) fail("hessian: probes must be >= 1");
  double s = 0;
  for (int i = 0; i < probes; ++i) {
    const std::vector<double> z = rademacher(p.w.size(), seed, static_cast<uint32_t>(1000 + i));
    s += dot(z, hvp(p, z));
  }
  return s / probes;
}

SpectrumShares spectrum_shares(const SpectralDensity& d, double rel_tol) {
  SpectrumShares s;
  if (d.nodes.empty()) return s;
  double ref = 0;
  for (const auto& th : d.nodes)
    for (double x : th) ref = std::max(ref, std::fabs(x));
  s.tolerance = rel_tol * ref;
  const double probes = static_cast<double>(d.nodes.size());
  for (size_t p = 0; p < d.nodes.size(); ++p)
    for (size_t i = 0; i < d.nodes[p].size(); ++i) {
      const double x = d.nodes[p][i], w = d.weights[p][i] / probes;
      if (x < -s.tolerance) s.negative += w;
      else if (x > s.tolerance) s.positive += w;
      else s.near_zero += w;
      if (x < 0) s.negative_any += w;
    }
  return s;
}

void symmetric_eigen(std::vector<double> a, int n, std::vector<double>& values, std::vector<double>& vectors) {
  vectors.assign(static_cast<size_t>(n * n), 0.0);
  for (int i = 0; i < n; ++i) vectors[i * n + i] = 1.0;
  for (int sweep = 0; sweep < 100; ++sweep) {
    double off = 0;
    for (int i = 0; i < n; ++i)
      for (int j = i + 1; j < n; ++j) off += a[i * n + j] * a[i * n + j];
    if (off < 1e-30) break;
    for (int p = 0; p < n; ++p)
      for (int q = p + 1; q < n; ++q) {
        const double apq = a[p * n + q];
        if (std::fabs(apq) < 1e-300) continue;
        const double theta = (a[q * n + q] - a[p * n + p]) / (2 * apq);
        const double t = (theta >= 0 ? 1.0 : -1.0) / (std::fabs(theta) + std::sqrt(theta * theta + 1));
        const double c = 1 / std::sqrt(t * t + 1), s = t * c;
        for (int k = 0; k < n; ++k) {  // A ← JᵀAJ
          const double akp = a[k * n + p], akq = a[k * n + q];
          a[k * n + p] = c * akp - s * akq;
          a[k * n + q] = s * akp + c * akq;
        }
        for (int k = 0; k < n; ++k) {
          const double apk = a[p * n + k], aqk = a[q * n + k];
          a[p * n + k] = c * apk - s * aqk;
          a[q * n + k] = s * apk + c * aqk;
        }
        for (int k = 0; k < n; ++k) {
          const double vkp = vectors[k * n + p], vkq = vectors[k * n + q];
          vectors[k * n + p] = c * vkp - s * vkq;
          vectors[k * n + q] = s * vkp + c * vkq;
        }
      }
  }
  std::vector<int> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int x, int y) { return a[x * n + x] < a[y * n + y]; });
  values.resize(static_cast<size_t>(n));
  std::vector<double> vs(vectors.size());
  for (int c = 0; c < n; ++c) {
    values[c] = a[order[c] * n + order[c]];
    for (int r = 0; r < n; ++r) vs[r * n + c] = vectors[r * n + order[c]];
  }
  vectors = vs;
}

SpectralDensity slq_density(const HessianProblem& p, int probes, int steps, int grid_points, double sigma_rel, uint64_t seed) {
  if (probes < 1 || steps < 1) fail("hessian: probes and Lanczos steps must be >= 1");
  const size_t n = p.w.size();
  const int m = static_cast<int>(std::min<size_t>(static_cast<size_t>(steps), n));
  SpectralDensity d;
  for (int pr = 0; pr < probes; ++pr) {
    std::vector<double> v = rademacher(n, seed, static_cast<uint32_t>(5000 + pr));
    const double nv = norm(v);
    scale(v, nv);
    std::vector<std::vector<double>> basis = {v};
    std::vector<double> alpha, beta;
    for (int j = 0; j < m; ++j) {
      std::vector<double> w = hvp(p, basis[j]);
      const double a = dot(w, basis[j]);
      alpha.push_back(a);
      // full reorthogonalisation (twice) against every Lanczos vector
      for (int pass = 0; pass < 2; ++pass)
        for (const auto& b : basis) axpy(-dot(b, w), b, w);
      const double bnorm = norm(w);
      if (j + 1 == m || bnorm < 1e-12) break;
      beta.push_back(bnorm);
      scale(w, bnorm);
      basis.push_back(std::move(w));
    }
    const int k = static_cast<int>(alpha.size());
    std::vector<double> t(static_cast<size_t>(k * k), 0.0);
    for (int i = 0; i < k; ++i) {
      t[i * k + i] = alpha[i];
      if (i + 1 < k) t[i * k + i + 1] = t[(i + 1) * k + i] = beta[i];
    }
    std::vector<double> theta, vec;
    symmetric_eigen(t, k, theta, vec);
    std::vector<double> tau2(static_cast<size_t>(k));
    for (int i = 0; i < k; ++i) tau2[i] = vec[0 * k + i] * vec[0 * k + i];  // first components squared
    d.nodes.push_back(theta);
    d.weights.push_back(tau2);
  }
  double lo = INFINITY, hi = -INFINITY;
  for (const auto& th : d.nodes)
    for (double x : th) { lo = std::min(lo, x); hi = std::max(hi, x); }
  const double span = std::max(hi - lo, 1e-12), sigma = sigma_rel * span;
  lo -= 5 * sigma;
  hi += 5 * sigma;
  d.grid.resize(static_cast<size_t>(grid_points));
  d.density.assign(static_cast<size_t>(grid_points), 0.0);
  for (int g = 0; g < grid_points; ++g) {
    const double x = lo + (hi - lo) * g / (grid_points - 1);
    d.grid[g] = x;
    double s = 0;
    for (size_t pr = 0; pr < d.nodes.size(); ++pr)
      for (size_t i = 0; i < d.nodes[pr].size(); ++i) {
        const double z = (x - d.nodes[pr][i]) / sigma;
        s += d.weights[pr][i] * std::exp(-0.5 * z * z) / (sigma * std::sqrt(2 * M_PI));
      }
    d.density[g] = s / static_cast<double>(d.nodes.size());
  }
  return d;
}

}  // namespace nibble
