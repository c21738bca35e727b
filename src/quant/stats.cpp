// Per-tensor diagnostics of SPEC §6, accumulated in float64.
#include "nibble/quant/stats.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "nibble/error.hpp"
#include "nibble/quant/spectral.hpp"

namespace nibble {

namespace {
constexpr double kInf = std::numeric_limits<double>::infinity();

// a / b for non-negative a, b with the conventions 0/0 = `both_zero`, a/0 = +inf.
double ratio(double a, double b, double both_zero) {
  if (b == 0.0) return a == 0.0 ? both_zero : kInf;
  return a / b;
}
}  // namespace

ErrorStats error_stats(const float* x, const float* xhat, int64_t n) {
  double sxx = 0, see = 0, sabs = 0, sdiff = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double a = x[i], b = xhat[i], e = a - b;
    sxx += a * a;
    see += e * e;
    sabs += std::abs(a);
    sdiff += std::abs(b) - std::abs(a);
  }
  ErrorStats s;
  // exact → +inf; x = 0 but x̂ ≠ 0 → -inf (10 log10 0).
  s.snr_db = see == 0.0 ? kInf : (sxx == 0.0 ? -kInf : 10.0 * std::log10(sxx / see));
  s.rel_err = std::sqrt(ratio(see, sxx, 0.0));
  s.shrinkage = sabs == 0.0 ? (sdiff == 0.0 ? 0.0 : kInf) : sdiff / sabs;
  return s;
}

Json ErrorStats::to_json() const {
  Json j = Json::object();
  j["snr_db"] = snr_db;
  j["rel_err"] = rel_err;
  j["shrinkage"] = shrinkage;
  return j;
}

std::array<int64_t, 16> code_histogram(const QuantizedMatrix& q) {
  if (q.rows < 0 || q.cols < 0) fail("code histogram: negative shape [", q.rows, ", ", q.cols, "]");
  const int64_t n = q.rows * q.cols;
  if (static_cast<int64_t>(q.codes.size()) < (n + 1) / 2)
    fail("code histogram: ", q.codes.size(), " code bytes cannot hold a [", q.rows, ", ", q.cols,
         "] matrix (need ", (n + 1) / 2, ")");
  std::array<int64_t, 16> h{};
  for (int64_t i = 0; i + 1 < n; i += 2) {  // element 2i: low nibble, 2i+1: high nibble
    const uint8_t b = q.codes[static_cast<size_t>(i / 2)];
    ++h[b & 0xF];
    ++h[b >> 4];
  }
  if (n % 2) ++h[q.codes[static_cast<size_t>(n / 2)] & 0xF];
  return h;
}

Json code_histogram_json(const std::array<int64_t, 16>& h) {
  Json a = Json::array();
  for (int64_t c : h) a.push_back(Json(c));
  return a;
}

namespace {

// y = X v in float64, 8 interleaved partial sums per row (vectorisable, fixed order).
void matvec(const float* x, int64_t rows, int64_t cols, const double* v, double* y) {
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < rows; ++t) {
    const float* xr = x + t * cols;
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t k = 0;
    for (; k + 8 <= cols; k += 8)
      for (int l = 0; l < 8; ++l) acc[l] += static_cast<double>(xr[k + l]) * v[k + l];
    double d = 0;
    for (; k < cols; ++k) d += static_cast<double>(xr[k]) * v[k];
    for (int l = 0; l < 8; ++l) d += acc[l];
    y[t] = d;
  }
}

// w = Xᵀ y: each thread owns a range of columns and walks every row in order.
void matvec_transposed(const float* x, int64_t rows, int64_t cols, const double* y, double* w) {
  constexpr int64_t kChunk = 256;
  const int64_t nchunks = (cols + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < nchunks; ++c) {
    const int64_t k0 = c * kChunk, k1 = std::min(cols, k0 + kChunk);
    for (int64_t k = k0; k < k1; ++k) w[k] = 0.0;
    for (int64_t t = 0; t < rows; ++t) {
      const float* xr = x + t * cols;
      const double d = y[t];
      for (int64_t k = k0; k < k1; ++k) w[k] += static_cast<double>(xr[k]) * d;
    }
  }
}

}  // namespace

AnisotropyStats anisotropy_stats(const float* x, int64_t rows, int64_t cols, int block,
                                 int power_iters, uint64_t seed) {
  if (rows < 1 || cols < 1) fail("anisotropy stats need a non-empty matrix, got [", rows, ", ", cols, "]");
  if (block < 1) fail("anisotropy stats: block must be >= 1, got ", block);
  if (power_iters < 1) fail("anisotropy stats: power_iters must be >= 1, got ", power_iters);

  // μ (column means), ‖X‖²_F
  std::vector<double> mu(static_cast<size_t>(cols), 0.0);
  double fro2 = 0;
  for (int64_t t = 0; t < rows; ++t) {
    const float* xr = x + t * cols;
    for (int64_t k = 0; k < cols; ++k) {
      const double v = xr[k];
      mu[k] += v;
      fro2 += v * v;
    }
  }
  double mu2 = 0;
  for (double& m : mu) {
    m /= static_cast<double>(rows);
    mu2 += m * m;
  }

  AnisotropyStats s;
  s.mean_energy_share = ratio(static_cast<double>(rows) * mu2, fro2, 0.0);

  // Top right singular vector of X: power iteration on XᵀX from a Philox start vector.
  if (fro2 > 0) {
    std::vector<double> v(static_cast<size_t>(cols)), xv(static_cast<size_t>(rows)),
        w(static_cast<size_t>(cols));
    double nv = 0;
    for (int64_t k = 0; k < cols; ++k) {
      v[k] = philox_normal(seed, 0, static_cast<uint64_t>(k));
      nv += v[k] * v[k];
    }
    nv = std::sqrt(nv);
    for (double& e : v) e /= nv;
    double sigma2 = 0;
    for (int it = 0; it < power_iters; ++it) {
      // xv = X v, w = Xᵀ xv (fixed summation order: results do not depend on threads)
      matvec(x, rows, cols, v.data(), xv.data());
      double xv2 = 0;
      for (double d : xv) xv2 += d * d;
      matvec_transposed(x, rows, cols, xv.data(), w.data());
      sigma2 = xv2;  // Rayleigh quotient vᵀXᵀXv (‖v‖ = 1)
      double nw = 0;
      for (double e : w) nw += e * e;
      nw = std::sqrt(nw);
      if (nw == 0.0) break;  // v in the null space: σ₁ estimate stays 0
      double change = 0;
      for (int64_t k = 0; k < cols; ++k) {
        const double e = w[k] / nw;
        change += (e - v[k]) * (e - v[k]);
        v[k] = e;
      }
      if (std::sqrt(change) < 1e-12) {
        // Converged: the last Rayleigh quotient used the previous v; refresh it.
        matvec(x, rows, cols, v.data(), xv.data());
        double r2 = 0;
        for (double d : xv) r2 += d * d;
        sigma2 = r2;
        break;
      }
    }
    s.top1_energy_share = sigma2 / fro2;
    if (mu2 > 0) {
      double d = 0;
      for (int64_t k = 0; k < cols; ++k) d += mu[k] * v[k];
      s.cos_mu_v1 = std::min(1.0, std::abs(d) / std::sqrt(mu2));  // ‖v‖ = 1
    }
  }

  // amax of X and of X_c = X − 1μᵀ, per tensor and per 1×block block along each row
  // (a last partial block when block does not divide cols).
  double amax = 0, amax_c = 0, bsum = 0, bsum_c = 0;
  int64_t nblocks = 0;
  for (int64_t t = 0; t < rows; ++t) {
    const float* xr = x + t * cols;
    for (int64_t k0 = 0; k0 < cols; k0 += block) {
      const int64_t k1 = std::min<int64_t>(cols, k0 + block);
      double ba = 0, bc = 0;
      for (int64_t k = k0; k < k1; ++k) {
        ba = std::max(ba, std::abs(static_cast<double>(xr[k])));
        bc = std::max(bc, std::abs(static_cast<double>(xr[k]) - mu[k]));
      }
      amax = std::max(amax, ba);
      amax_c = std::max(amax_c, bc);
      bsum += ba;
      bsum_c += bc;
      ++nblocks;
    }
  }
  s.amax_inflation = ratio(amax, amax_c, 1.0);
  s.block_amax_inflation = ratio(bsum / static_cast<double>(nblocks),
                                 bsum_c / static_cast<double>(nblocks), 1.0);
  return s;
}

Json AnisotropyStats::to_json() const {
  Json j = Json::object();
  j["mean_energy_share"] = mean_energy_share;
  j["top1_energy_share"] = top1_energy_share;
  j["cos_mu_v1"] = cos_mu_v1;
  j["amax_inflation"] = amax_inflation;
  j["block_amax_inflation"] = block_amax_inflation;
  return j;
}

}  // namespace nibble
