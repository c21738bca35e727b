// Golub–Kahan–Reinsch SVD of a small square matrix (see the header). The matrix is kept dense
// while it is reduced, so that every plane rotation is written once, as "rotate this pair of
// rows or columns", and applied only over the few entries of the band it can touch; the same
// rotation is applied to the matching pair of columns of U (a rotation of rows of B) or of V (of
// columns of B), which keeps a = U B Vᵀ exact at every step.
#include "nibble/quant/small_svd.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "nibble/error.hpp"
#include "quant/householder.hpp"

namespace nibble {

namespace {

constexpr double kEps = std::numeric_limits<double>::epsilon();
constexpr int kStepsPerValue = 75;

// Column-major n × n matrix with (row, col) access.
struct Dense {
  int64_t n;
  std::vector<double> x;
  double& operator()(int64_t i, int64_t j) { return x[static_cast<size_t>(j * n + i)]; }
  double* col(int64_t j) { return x.data() + j * n; }
};

Dense identity(int64_t n) {
  Dense m{n, std::vector<double>(static_cast<size_t>(n * n), 0.0)};
  for (int64_t i = 0; i < n; ++i) m(i, i) = 1.0;
  return m;
}

// x' = c x + s y, y' = −s x + c y over len elements spaced by stride.
void rotate(double* x, double* y, int64_t len, int64_t stride, double c, double s) {
  for (int64_t t = 0; t < len; ++t) {
    const double a = x[t * stride], b = y[t * stride];
    x[t * stride] = c * a + s * b;
    y[t * stride] = -s * a + c * b;
  }
}

// The rotation that maps (y, z) to (r, 0) under rotate(): c = y / r, s = z / r.
void givens(double y, double z, double& c, double& s) {
  const double r = std::hypot(y, z);
  if (r == 0) {
    c = 1;
    s = 0;
  } else {
    c = y / r;
    s = z / r;
  }
}

struct Reduction {
  Dense b, u, v;
  std::vector<double> scratch;  // reflect_columns' d, reused

  // Rows p and q of B over columns [c0, c1], and columns p and q of U.
  void rotate_rows(int64_t p, int64_t q, int64_t c0, int64_t c1, double c, double s) {
    rotate(&b(p, c0), &b(q, c0), c1 - c0 + 1, b.n, c, s);
    rotate(u.col(p), u.col(q), u.n, 1, c, s);
  }
  // Columns p and q of B over rows [r0, r1], and columns p and q of V.
  void rotate_cols(int64_t p, int64_t q, int64_t r0, int64_t r1, double c, double s) {
    rotate(&b(r0, p), &b(r0, q), r1 - r0 + 1, 1, c, s);
    rotate(v.col(p), v.col(q), v.n, 1, c, s);
  }

  // m ← m (I − β w wᵀ) on columns [c0, c0 + |w|) and rows [r0, n): d = m w, then m −= β d wᵀ,
  // both by whole columns (contiguous in memory).
  void reflect_columns(Dense& m, int64_t r0, int64_t c0, const std::vector<double>& w, double beta) {
    const int64_t n = m.n, len = static_cast<int64_t>(w.size());
    std::vector<double>& d = scratch;
    d.assign(static_cast<size_t>(n - r0), 0.0);
    for (int64_t j = 0; j < len; ++j) {
      const double* col = m.col(c0 + j) + r0;
      for (int64_t r = 0; r < n - r0; ++r) d[r] += col[r] * w[j];
    }
    for (int64_t j = 0; j < len; ++j) {
      double* col = m.col(c0 + j) + r0;
      const double f = beta * w[j];
      for (int64_t r = 0; r < n - r0; ++r) col[r] -= f * d[r];
    }
  }

  // B = Uᵀ a V upper bidiagonal; entries off the band are set to exactly zero.
  void bidiagonalize() {
    const int64_t n = b.n;
    std::vector<double> w;
    for (int64_t k = 0; k < n; ++k) {
      // left: zero B(k+1.., k); B ← H B, U ← U H
      double alpha;  // the new B(k, k), also produced by the reflection below
      w.assign(b.col(k) + k, b.col(k) + n);
      double beta = householder::make_reflector(w.data(), n - k, alpha);
      if (beta != 0) {
        for (int64_t j = k; j < n; ++j) householder::reflect(w.data(), beta, b.col(j) + k, n - k);
        reflect_columns(u, 0, k, w, beta);
      }
      if (k + 2 >= n) continue;
      // right: zero B(k, k+2..); B ← B H, V ← V H
      w.resize(static_cast<size_t>(n - k - 1));
      for (int64_t j = k + 1; j < n; ++j) w[j - k - 1] = b(k, j);
      beta = householder::make_reflector(w.data(), n - k - 1, alpha);
      if (beta == 0) continue;
      reflect_columns(b, k, k + 1, w, beta);
      reflect_columns(v, 0, k + 1, w, beta);
    }
    for (int64_t j = 0; j < n; ++j)
      for (int64_t i = 0; i < n; ++i)
        if (i != j && i + 1 != j) b(i, j) = 0;
  }

  // d_i = 0 inside the block (i < hi): row i's superdiagonal is chased off to the right with
  // rotations of rows (j, i), each using B(j, j) to zero B(i, j).
  void clear_row(int64_t i, int64_t hi) {
    for (int64_t j = i + 1; j <= hi; ++j) {
      double c, s;
      givens(b(j, j), b(i, j), c, s);
      rotate_rows(j, i, j, std::min(hi, j + 1), c, s);
      b(i, j) = 0;
    }
  }

  // d_hi = 0: column hi's entry above the diagonal is chased upwards with rotations of columns
  // (j, hi), each using B(j, j) to zero B(j, hi).
  void clear_column(int64_t lo, int64_t hi) {
    for (int64_t j = hi - 1; j >= lo; --j) {
      double c, s;
      givens(b(j, j), b(j, hi), c, s);
      rotate_cols(j, hi, std::max(lo, j - 1), j, c, s);
      b(j, hi) = 0;
    }
  }

  // One implicit QR step on BᵀB of the unreduced block [lo, hi] (Wilkinson shift from its
  // trailing 2 × 2), as a bulge chased down the band.
  void qr_step(int64_t lo, int64_t hi) {
    const double dm = b(hi - 1, hi - 1), em = hi - 1 > lo ? b(hi - 2, hi - 1) : 0.0;
    const double dn = b(hi, hi), fn = b(hi - 1, hi);
    const double t11 = dm * dm + em * em, t12 = dm * fn, t22 = dn * dn + fn * fn;
    const double delta = 0.5 * (t11 - t22);
    const double root = std::hypot(delta, t12);
    const double denom = delta + (delta >= 0 ? root : -root);
    const double mu = denom == 0 ? t22 : t22 - t12 * t12 / denom;
    double y = b(lo, lo) * b(lo, lo) - mu, z = b(lo, lo) * b(lo, lo + 1);
    for (int64_t k = lo; k < hi; ++k) {
      double c, s;
      givens(y, z, c, s);
      rotate_cols(k, k + 1, std::max(lo, k - 1), k + 1, c, s);
      if (k > lo) b(k - 1, k + 1) = 0;
      givens(b(k, k), b(k + 1, k), c, s);
      rotate_rows(k, k + 1, k, std::min(hi, k + 2), c, s);
      b(k + 1, k) = 0;
      if (k + 1 < hi) {
        y = b(k, k + 1);
        z = b(k, k + 2);
      }
    }
  }

  void diagonalize() {
    const int64_t n = b.n;
    double anorm = 0;
    for (int64_t i = 0; i < n; ++i)
      anorm = std::max(anorm, std::abs(b(i, i)) + (i + 1 < n ? std::abs(b(i, i + 1)) : 0.0));
    const double dtol = kEps * anorm;
    int64_t steps = 0;
    int64_t hi = n - 1;
    while (hi > 0) {
      for (int64_t i = 0; i <= hi; ++i) {
        if (std::abs(b(i, i)) <= dtol) b(i, i) = 0;
        if (i < hi && std::abs(b(i, i + 1)) <= kEps * (std::abs(b(i, i)) + std::abs(b(i + 1, i + 1))))
          b(i, i + 1) = 0;
      }
      if (b(hi - 1, hi) == 0) {
        --hi;
        continue;
      }
      int64_t lo = hi - 1;
      while (lo > 0 && b(lo - 1, lo) != 0) --lo;
      int64_t zero = -1;
      for (int64_t i = lo; i <= hi && zero < 0; ++i)
        if (b(i, i) == 0) zero = i;
      if (zero >= 0 && zero < hi) {
        clear_row(zero, hi);
      } else if (zero == hi) {
        clear_column(lo, hi);
      } else {
        if (++steps > kStepsPerValue * n)
          fail("small_svd: the QR iteration did not converge in ", kStepsPerValue * n, " steps (n = ", n, ")");
        qr_step(lo, hi);
      }
    }
  }
};

}  // namespace

SmallSvd small_svd(const std::vector<double>& a, int64_t n) {
  NIBBLE_CHECK(n >= 1 && static_cast<int64_t>(a.size()) == n * n);
  SmallSvd out;
  out.n = n;
  if (!std::all_of(a.begin(), a.end(), [](double t) { return std::isfinite(t); })) {
    // a non-finite gradient: pass NaN on, so that the trainer's divergence check names it
    const double nan = std::numeric_limits<double>::quiet_NaN();
    out.u.assign(static_cast<size_t>(n * n), nan);
    out.v.assign(static_cast<size_t>(n * n), nan);
    out.sigma.assign(static_cast<size_t>(n), nan);
    return out;
  }
  // Work on a scaled by a power of two (exact) that brings its largest entry near 1: the shift
  // squares entries, which would overflow above ~1e154 and underflow below ~1e-154.
  double amax = 0;
  for (double t : a) amax = std::max(amax, std::abs(t));
  const int exponent = amax > 0 ? std::ilogb(amax) : 0;
  Reduction r{Dense{n, a}, identity(n), identity(n), {}};
  for (double& t : r.b.x) t = std::scalbn(t, -exponent);
  r.bidiagonalize();
  r.diagonalize();
  // σ ≥ 0 (a negative diagonal entry flips its column of V), then descending order
  std::vector<double> sig(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    sig[i] = std::scalbn(r.b(i, i), exponent);
    if (sig[i] < 0) {
      sig[i] = -sig[i];
      for (int64_t t = 0; t < n; ++t) r.v(t, i) = -r.v(t, i);
    }
  }
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  std::stable_sort(order.begin(), order.end(), [&](int64_t p, int64_t q) { return sig[p] > sig[q]; });
  out.u.resize(static_cast<size_t>(n * n));
  out.v.resize(static_cast<size_t>(n * n));
  out.sigma.resize(static_cast<size_t>(n));
  for (int64_t c = 0; c < n; ++c) {
    const int64_t src = order[c];
    out.sigma[c] = sig[src];
    std::copy(r.u.col(src), r.u.col(src) + n, out.u.begin() + c * n);
    std::copy(r.v.col(src), r.v.col(src) + n, out.v.begin() + c * n);
  }
  return out;
}

}  // namespace nibble
