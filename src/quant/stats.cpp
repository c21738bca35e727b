// Per-tensor diagnostics of SPEC §6, accumulated in float64.
#include "nibble/quant/stats.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "nibble/error.hpp"
#include "nibble/quant/spectral.hpp"
#include "core/simd_clones.hpp"

namespace nibble {

namespace {
constexpr double kInf = std::numeric_limits<double>::infinity();

// a / b for non-negative a, b with the conventions 0/0 = `both_zero`, a/0 = +inf.
double ratio(double a, double b, double both_zero) {
  if (b == 0.0) return a == 0.0 ? both_zero : kInf;
  return a / b;
}

// Every reduction over a matrix's rows (or a vector's elements) sums in fixed chunks, then
// the chunk partials in chunk order: the threads only decide who computes which chunk, so
// the bits never depend on the thread count. Inside a chunk, eight interleaved float64
// lanes (vectorisable without reassociation; the clones below run the same IEEE operations,
// so the same bits, on every x86 machine).
constexpr int64_t kChunkRows = 256;                // anisotropy: rows of X per chunk
constexpr int64_t kChunkElems = int64_t{1} << 16;  // error_stats: elements per chunk


int64_t chunk_count(int64_t n, int64_t chunk) { return (n + chunk - 1) / chunk; }

// f(c, lo, hi) for every chunk c = [lo, hi) of [0, n), in parallel when there are several.
template <class F>
void for_each_chunk(int64_t n, int64_t chunk, F&& f) {
  const int64_t nc = chunk_count(n, chunk);
#pragma omp parallel for schedule(static) if (nc > 1)
  for (int64_t c = 0; c < nc; ++c) f(c, c * chunk, std::min(n, (c + 1) * chunk));
}

// Σx², Σ(x − x̂)², Σ|x|, Σ(|x̂| − |x|) over one chunk, in that order.
NIBBLE_SIMD_CLONES void error_sums(const float* x, const float* xhat, int64_t n, double out[4]) {
  double xx[8] = {}, ee[8] = {}, ab[8] = {}, df[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) {
      const double a = x[i + l], b = xhat[i + l], e = a - b;
      xx[l] += a * a;
      ee[l] += e * e;
      ab[l] += std::abs(a);
      df[l] += std::abs(b) - std::abs(a);
    }
  for (; i < n; ++i) {
    const double a = x[i], b = xhat[i], e = a - b;
    xx[0] += a * a;
    ee[0] += e * e;
    ab[0] += std::abs(a);
    df[0] += std::abs(b) - std::abs(a);
  }
  for (int k = 0; k < 4; ++k) out[k] = 0;
  for (int l = 0; l < 8; ++l) {
    out[0] += xx[l];
    out[1] += ee[l];
    out[2] += ab[l];
    out[3] += df[l];
  }
}

}  // namespace

ErrorStats error_stats(const float* x, const float* xhat, int64_t n) {
  std::vector<double> part(static_cast<size_t>(4 * chunk_count(n, kChunkElems)));
  for_each_chunk(n, kChunkElems, [&](int64_t c, int64_t lo, int64_t hi) {
    error_sums(x + lo, xhat + lo, hi - lo, &part[static_cast<size_t>(4 * c)]);
  });
  double sxx = 0, see = 0, sabs = 0, sdiff = 0;
  for (size_t c = 0; c < part.size(); c += 4) {
    sxx += part[c];
    see += part[c + 1];
    sabs += part[c + 2];
    sdiff += part[c + 3];
  }
  return error_stats_from_sums(sxx, see, sabs, sdiff);
}

ErrorStats error_stats_from_sums(double sxx, double see, double sabs, double sdiff) {
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

// Column sums and Σx² of rows [t0, t1) of X: mu[k] = Σ_t x[t, k], *fro2 = Σ x² (8 lanes).
NIBBLE_SIMD_CLONES void moments_chunk(const float* x, int64_t t0, int64_t t1, int64_t cols, double* mu,
                                      double* fro2) {
  double acc[8] = {};
  for (int64_t k = 0; k < cols; ++k) mu[k] = 0;
  for (int64_t t = t0; t < t1; ++t) {
    const float* xr = x + t * cols;
    int64_t k = 0;
    for (; k + 8 <= cols; k += 8)
      for (int l = 0; l < 8; ++l) {
        const double v = xr[k + l];
        mu[k + l] += v;
        acc[l] += v * v;
      }
    for (; k < cols; ++k) {
      const double v = xr[k];
      mu[k] += v;
      acc[0] += v * v;
    }
  }
  double s = 0;
  for (int l = 0; l < 8; ++l) s += acc[l];
  *fro2 = s;
}

// One power-iteration pass over rows [t0, t1) of X: y_t = x_t·v (8 lanes), then w += y_t x_t
// while the row is still in cache, so X is read from memory once a round, not twice (X v,
// then Xᵀ(Xv)). w = this chunk's share of XᵀXv, *xv2 = its share of ‖Xv‖².
NIBBLE_SIMD_CLONES void power_chunk(const float* x, int64_t t0, int64_t t1, int64_t cols, const double* v,
                                    double* w, double* xv2) {
  for (int64_t k = 0; k < cols; ++k) w[k] = 0;
  double s = 0;
  for (int64_t t = t0; t < t1; ++t) {
    const float* xr = x + t * cols;
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t k = 0;
    for (; k + 8 <= cols; k += 8)
      for (int l = 0; l < 8; ++l) acc[l] += static_cast<double>(xr[k + l]) * v[k + l];
    double y = 0;
    for (; k < cols; ++k) y += static_cast<double>(xr[k]) * v[k];
    for (int l = 0; l < 8; ++l) y += acc[l];
    s += y * y;
    for (k = 0; k < cols; ++k) w[k] += static_cast<double>(xr[k]) * y;
  }
  *xv2 = s;
}

// Tensor and 1×block amax of X and of X_c = X − 1μᵀ over rows [t0, t1):
// out = {max|X|, max|X_c|, Σ block amax of X, Σ block amax of X_c}. The block maxima run in
// eight lanes (a max is exact, so the lanes change no bits); `a > m ? a : m` is what a
// vector max computes and, like std::max(m, a), ignores a NaN a.
NIBBLE_SIMD_CLONES void amax_chunk(const float* x, int64_t t0, int64_t t1, int64_t cols, int64_t block,
                                   const double* mu, double out[4]) {
  double amax = 0, amax_c = 0, bsum = 0, bsum_c = 0;
  for (int64_t t = t0; t < t1; ++t) {
    const float* xr = x + t * cols;
    for (int64_t k0 = 0; k0 < cols; k0 += block) {
      const int64_t k1 = std::min<int64_t>(cols, k0 + block);
      double ba[8] = {0, 0, 0, 0, 0, 0, 0, 0}, bc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      int64_t k = k0;
      for (; k + 8 <= k1; k += 8)
        for (int l = 0; l < 8; ++l) {
          const double a = std::abs(static_cast<double>(xr[k + l]));
          const double c = std::abs(static_cast<double>(xr[k + l]) - mu[k + l]);
          ba[l] = a > ba[l] ? a : ba[l];
          bc[l] = c > bc[l] ? c : bc[l];
        }
      for (; k < k1; ++k) {
        const double a = std::abs(static_cast<double>(xr[k]));
        const double c = std::abs(static_cast<double>(xr[k]) - mu[k]);
        ba[0] = a > ba[0] ? a : ba[0];
        bc[0] = c > bc[0] ? c : bc[0];
      }
      for (int l = 1; l < 8; ++l) {
        ba[0] = ba[l] > ba[0] ? ba[l] : ba[0];
        bc[0] = bc[l] > bc[0] ? bc[l] : bc[0];
      }
      amax = std::max(amax, ba[0]);
      amax_c = std::max(amax_c, bc[0]);
      bsum += ba[0];
      bsum_c += bc[0];
    }
  }
  out[0] = amax;
  out[1] = amax_c;
  out[2] = bsum;
  out[3] = bsum_c;
}

// dst[k] = Σ_c part[c, k], over the chunks in order; columns in parallel.
void sum_chunks(const std::vector<double>& part, int64_t cols, double* dst) {
  constexpr int64_t kCols = 512;
  const int64_t nc = static_cast<int64_t>(part.size()) / cols;
  for_each_chunk(cols, kCols, [&](int64_t, int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) dst[k] = 0;
    for (int64_t c = 0; c < nc; ++c) {
      const double* p = &part[static_cast<size_t>(c * cols)];
      for (int64_t k = k0; k < k1; ++k) dst[k] += p[k];
    }
  });
}

// Power iteration on XᵀX from the start vector in v (not zero; normalized here): v_{k+1} = XᵀXv_k / ‖XᵀXv_k‖, one
// pass over X a round. Returns the Rayleigh quotient ‖Xv_k‖² (‖v_k‖ = 1; the σ₁² estimate)
// of the last iterate it multiplied and leaves v_{k+1} in v. It stops after `iters` rounds,
// or once ‖v_{k+1} − v_k‖ < kTol. No refreshing pass for v_{k+1}'s quotient: with
// δ = v_{k+1} − v_k and XᵀXv_k ∥ v_{k+1}, the two quotients differ by
// ‖XᵀXv_k‖‖δ‖² + δᵀXᵀXδ ≤ 2σ₁²‖δ‖² < 2e-16·σ₁². kTol leaves v about kTol·ρ/(1 − ρ) from
// v₁ (ρ = σ₂²/σ₁²), far below the 3–4 decimals cos(μ, v₁) is read to, and σ₁² (second order
// in that distance) within about 1e-16/(1 − ρ) relative; a tighter kTol (it was 1e-12) only
// buys rounds that change nothing reported.
double power_iteration(const AnisotropyPasses& p, int iters, std::vector<double>& v) {
  constexpr double kTol = 1e-8;
  std::vector<double> w(v.size());
  double nv = 0;
  for (double e : v) nv += e * e;
  nv = std::sqrt(nv);
  for (double& e : v) e /= nv;
  double sigma2 = 0;
  for (int it = 0; it < iters; ++it) {
    sigma2 = p.gram(v, w);  // Rayleigh quotient (‖v‖ = 1)
    double nw = 0;
    for (double e : w) nw += e * e;
    nw = std::sqrt(nw);
    if (nw == 0.0) break;  // v in the null space: σ₁ estimate stays 0
    double change = 0;
    for (size_t k = 0; k < v.size(); ++k) {
      const double e = w[k] / nw;
      change += (e - v[k]) * (e - v[k]);
      v[k] = e;
    }
    if (std::sqrt(change) < kTol) break;
  }
  return sigma2;
}

}  // namespace

AnisotropyStats anisotropy_stats_with(int64_t rows, int64_t cols, int block, int power_iters, uint64_t seed,
                                      const AnisotropyPasses& passes) {
  if (rows < 1 || cols < 1) fail("anisotropy stats need a non-empty matrix, got [", rows, ", ", cols, "]");
  if (block < 1) fail("anisotropy stats: block must be >= 1, got ", block);
  if (power_iters < 1) fail("anisotropy stats: power_iters must be >= 1, got ", power_iters);

  // μ (column means), ‖X‖²_F
  std::vector<double> mu(static_cast<size_t>(cols));
  double fro2 = 0;
  passes.moments(mu, fro2);
  double mu2 = 0;
  for (double& m : mu) {
    m /= static_cast<double>(rows);
    mu2 += m * m;
  }

  AnisotropyStats s;
  s.mean_energy_share = ratio(static_cast<double>(rows) * mu2, fro2, 0.0);

  // Top right singular vector of X.
  if (fro2 > 0) {
    // Two starts, keeping the larger quotient: Philox normals, and μ. For a PSD matrix the
    // power iterates' Rayleigh quotients never decrease, and at μ/‖μ‖ the quotient is ≥ T‖μ‖²
    // (Cauchy–Schwarz on Σ_t x_t·μ), so the top-1 share stays ≥ the mean share however few
    // rounds run, as σ₁² ≥ T‖μ‖² requires (a random start alone, capped at the trainer's
    // rounds, reported less on the 124m model); μ's run converges in a few rounds where μ
    // dominates. The random start covers a μ that is itself another singular vector, where
    // μ's run would stay put.
    std::vector<double> v(static_cast<size_t>(cols));
    for (int64_t k = 0; k < cols; ++k) v[k] = philox_normal(seed, 0, static_cast<uint64_t>(k));
    double sigma2 = power_iteration(passes, power_iters, v);
    if (mu2 > 0) {
      std::vector<double> vm = mu;
      const double sigma2_mu = power_iteration(passes, power_iters, vm);
      if (sigma2_mu > sigma2) sigma2 = sigma2_mu, v.swap(vm);
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
  const std::array<double, 4> a = passes.amax(mu);
  const double nblocks = static_cast<double>(rows * chunk_count(cols, block));
  s.amax_inflation = ratio(a[0], a[1], 1.0);
  s.block_amax_inflation = ratio(a[2] / nblocks, a[3] / nblocks, 1.0);
  return s;
}

AnisotropyStats anisotropy_stats(const float* x, int64_t rows, int64_t cols, int block,
                                 int power_iters, uint64_t seed) {
  if (rows < 1 || cols < 1) fail("anisotropy stats need a non-empty matrix, got [", rows, ", ", cols, "]");
  const int64_t nc = chunk_count(rows, kChunkRows);
  AnisotropyPasses p;
  p.moments = [&](std::vector<double>& colsum, double& fro2) {
    std::vector<double> part(static_cast<size_t>(nc * cols)), fro2_part(static_cast<size_t>(nc));
    for_each_chunk(rows, kChunkRows, [&](int64_t c, int64_t t0, int64_t t1) {
      moments_chunk(x, t0, t1, cols, &part[static_cast<size_t>(c * cols)], &fro2_part[static_cast<size_t>(c)]);
    });
    sum_chunks(part, cols, colsum.data());
    fro2 = 0;
    for (double f : fro2_part) fro2 += f;
  };
  // one pass over X a round (power_chunk)
  std::vector<double> part(static_cast<size_t>(nc * cols)), xv2(static_cast<size_t>(nc));
  p.gram = [&](const std::vector<double>& v, std::vector<double>& w) {
    for_each_chunk(rows, kChunkRows, [&](int64_t c, int64_t t0, int64_t t1) {
      power_chunk(x, t0, t1, cols, v.data(), &part[static_cast<size_t>(c * cols)], &xv2[static_cast<size_t>(c)]);
    });
    sum_chunks(part, cols, w.data());
    double sigma2 = 0;
    for (double d : xv2) sigma2 += d;
    return sigma2;
  };
  p.amax = [&](const std::vector<double>& mu) {
    std::vector<double> amax_part(static_cast<size_t>(4 * nc));
    for_each_chunk(rows, kChunkRows, [&](int64_t c, int64_t t0, int64_t t1) {
      amax_chunk(x, t0, t1, cols, block, mu.data(), &amax_part[static_cast<size_t>(4 * c)]);
    });
    std::array<double, 4> a{0, 0, 0, 0};
    for (int64_t c = 0; c < nc; ++c) {
      const double* q = &amax_part[static_cast<size_t>(4 * c)];
      a[0] = std::max(a[0], q[0]);
      a[1] = std::max(a[1], q[1]);
      a[2] += q[2];
      a[3] += q[3];
    }
    return a;
  };
  return anisotropy_stats_with(rows, cols, block, power_iters, seed, p);
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
