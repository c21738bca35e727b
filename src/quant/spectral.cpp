// Randomized SVD for the spectral split (SPEC §4.3; Halko, Martinsson & Tropp 2011,
// algorithm 4.4 with re-orthonormalised subspace iterations). All linear algebra runs in
// float64; the input stays fp32 and is converted on the fly inside the products.
//
//   Ω  [cols, l]  Philox normals, l = min(k + oversample, min(rows, cols))
//   Y  = G Ω                                   [rows, l]
//   q times:  Q = orth(Y);  Z = orth(Gᵀ Q);  Y = G Z
//   Q  = orth(Y);  Bᵀ = Gᵀ Q                   [cols, l]
//   Bᵀ = Q_z R (Householder);  R = U_r Σ V_rᵀ (Golub–Kahan–Reinsch, small_svd.hpp)
//   ⇒  B = V_r Σ (Q_z U_r)ᵀ,  U = Q V_r,  V = Q_z U_r;  keep the top k triplets.
#include "nibble/quant/spectral.hpp"

#include <algorithm>
#include <thread>

#include "nibble/error.hpp"
#include "nibble/philox.hpp"
#include "nibble/quant/small_svd.hpp"
#include "quant/householder.hpp"

namespace nibble {

double philox_normal(uint64_t seed, uint32_t stream, uint64_t i) { return philox_normal_hd(seed, stream, i); }

namespace {

// ---- threading -----------------------------------------------------------------------

int worker_count(double work) {
  if (work < 2e7) return 1;
  const unsigned hw = std::thread::hardware_concurrency();
  return static_cast<int>(std::clamp<unsigned>(hw, 1u, 8u));
}

// Runs fn(begin, end) over [0, n) split into contiguous chunks of multiples of `grain`.
template <class Fn>
void parallel_for(int64_t n, int64_t grain, double work, Fn fn) {
  int nt = worker_count(work);
  const int64_t chunks = (n + grain - 1) / grain;
  if (nt > chunks) nt = static_cast<int>(std::max<int64_t>(chunks, 1));
  if (nt <= 1) {
    fn(int64_t{0}, n);
    return;
  }
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(nt - 1));
  const int64_t per = (chunks + nt - 1) / nt * grain;
  for (int t = 1; t < nt; ++t) {
    const int64_t b = std::min(n, t * per), e = std::min(n, (t + 1) * per);
    if (b < e) pool.emplace_back([=] { fn(b, e); });
  }
  fn(int64_t{0}, std::min(n, per));
  for (auto& th : pool) th.join();
}

// ---- C = A · W ------------------------------------------------------------------------
// A [m, kd] row-major (float or double), W [kd, l] double row-major, C [m, l] double.
// W is packed into panels of 8 columns, [l8/8][kd][8], zero padded. C tiles of 4 × 8 stay
// in registers while the reduction runs over a block of KC; each output element is summed
// in the same order (j ascending) whatever the threading or vector width, so the result
// is deterministic. No FMA contraction (the project builds with -ffp-contract=off).

constexpr int64_t kKC = 256;  // reduction block
constexpr int64_t kTC = 64;   // output-column block (8 panels)

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define NIBBLE_MULTIVERSION __attribute__((target_clones("avx2", "default")))
#else
#define NIBBLE_MULTIVERSION
#endif

// c[r][0..8) (+)= Σ_j a_r[j] w[j][0..8)  for r < 4.
NIBBLE_MULTIVERSION
void micro_4x8(int64_t kc, const double* __restrict a0, const double* __restrict a1,
               const double* __restrict a2, const double* __restrict a3,
               const double* __restrict w, double* __restrict acc) {
  double c0[8], c1[8], c2[8], c3[8];
  for (int t = 0; t < 8; ++t) {
    c0[t] = acc[t];
    c1[t] = acc[8 + t];
    c2[t] = acc[16 + t];
    c3[t] = acc[24 + t];
  }
  for (int64_t j = 0; j < kc; ++j) {
    const double* wj = w + 8 * j;
    const double x0 = a0[j], x1 = a1[j], x2 = a2[j], x3 = a3[j];
    for (int t = 0; t < 8; ++t) {
      const double wt = wj[t];
      c0[t] += x0 * wt;
      c1[t] += x1 * wt;
      c2[t] += x2 * wt;
      c3[t] += x3 * wt;
    }
  }
  for (int t = 0; t < 8; ++t) {
    acc[t] = c0[t];
    acc[8 + t] = c1[t];
    acc[16 + t] = c2[t];
    acc[24 + t] = c3[t];
  }
}

std::vector<double> pack_panels(const double* w, int64_t kd, int64_t l) {
  const int64_t np = (l + 7) / 8;
  std::vector<double> p(static_cast<size_t>(np * kd * 8), 0.0);
  for (int64_t j = 0; j < kd; ++j)
    for (int64_t t = 0; t < l; ++t) p[static_cast<size_t>(((t / 8) * kd + j) * 8 + t % 8)] = w[j * l + t];
  return p;
}

// Rows [i0, i1) of C = A · W, W already packed.
template <class TA>
void gemm_rows(const TA* a, int64_t kd, const std::vector<double>& wp, int64_t l, double* c,
               int64_t i0, int64_t i1) {
  const int64_t np = (l + 7) / 8;
  std::vector<double> abuf(static_cast<size_t>(4 * kKC));
  std::vector<double> zero(static_cast<size_t>(kKC), 0.0);
  // Per row block: a [4][TC] slab of accumulators over all reduction blocks.
  std::vector<double> acc(static_cast<size_t>(np * 32));
  for (int64_t i = i0; i < i1; i += 4) {
    const int rows = static_cast<int>(std::min<int64_t>(4, i1 - i));
    std::fill(acc.begin(), acc.end(), 0.0);
    for (int64_t j0 = 0; j0 < kd; j0 += kKC) {
      const int64_t kc = std::min(kKC, kd - j0);
      const double* ar[4];
      for (int r = 0; r < 4; ++r) {
        if (r < rows) {
          const TA* src = a + (i + r) * kd + j0;
          double* dst = abuf.data() + r * kKC;
          for (int64_t j = 0; j < kc; ++j) dst[j] = static_cast<double>(src[j]);
          ar[r] = dst;
        } else {
          ar[r] = zero.data();
        }
      }
      for (int64_t p = 0; p < np; ++p)
        micro_4x8(kc, ar[0], ar[1], ar[2], ar[3], wp.data() + (p * kd + j0) * 8,
                  acc.data() + p * 32);
    }
    for (int r = 0; r < rows; ++r)
      for (int64_t t = 0; t < l; ++t)
        c[(i + r) * l + t] = acc[static_cast<size_t>((t / 8) * 32 + r * 8 + t % 8)];
  }
}

// C [m, l] = A [m, kd] · W [kd, l].
template <class TA>
void gemm(const TA* a, int64_t m, int64_t kd, const double* w, int64_t l, double* c) {
  const std::vector<double> wp = pack_panels(w, kd, l);
  const double work = static_cast<double>(m) * kd * l;
  parallel_for(m, 4, work, [&](int64_t b, int64_t e) { gemm_rows(a, kd, wp, l, c, b, e); });
}

// Float transpose (cache-blocked): t [cols, rows] = gᵀ.
std::vector<float> transpose(const float* g, int64_t rows, int64_t cols) {
  std::vector<float> t(static_cast<size_t>(rows * cols));
  constexpr int64_t B = 32;
  parallel_for(cols, B, static_cast<double>(rows) * cols * 8, [&](int64_t c0, int64_t c1) {
    for (int64_t cb = c0; cb < c1; cb += B)
      for (int64_t rb = 0; rb < rows; rb += B) {
        const int64_t ce = std::min(c1, cb + B), re = std::min(rows, rb + B);
        for (int64_t c = cb; c < ce; ++c)
          for (int64_t r = rb; r < re; ++r) t[static_cast<size_t>(c * rows + r)] = g[r * cols + c];
      }
  });
  return t;
}

// ---- Householder QR ---------------------------------------------------------------------
// a: [m, n] column-major (m >= n), overwritten. Returns the thin Q [m, n] column-major and,
// when r != nullptr, the upper-triangular R [n, n] column-major.
std::vector<double> householder_qr(std::vector<double>& a, int64_t m, int64_t n,
                                   std::vector<double>* r) {
  NIBBLE_CHECK(m >= n);
  std::vector<double> beta(static_cast<size_t>(n), 0.0);  // H_j = I - beta v vᵀ, v stored in a
  std::vector<double> diag(static_cast<size_t>(n), 0.0);  // R_jj
  for (int64_t j = 0; j < n; ++j) {
    double* x = a.data() + j * m + j;
    const int64_t len = m - j;
    beta[j] = householder::make_reflector(x, len, diag[j]);  // a zero column: H_j = I
    if (beta[j] == 0.0) continue;
    for (int64_t c = j + 1; c < n; ++c) householder::reflect(x, beta[j], a.data() + c * m + j, len);
  }
  if (r) {
    r->assign(static_cast<size_t>(n * n), 0.0);
    for (int64_t c = 0; c < n; ++c) {
      for (int64_t i = 0; i < c; ++i) (*r)[c * n + i] = a[c * m + i];
      (*r)[c * n + c] = diag[c];
    }
  }
  // Q = H_0 H_1 ... H_{n-1} I[:, :n], applied backwards.
  std::vector<double> q(static_cast<size_t>(m * n), 0.0);
  for (int64_t c = 0; c < n; ++c) q[c * m + c] = 1.0;
  for (int64_t j = n - 1; j >= 0; --j) {
    if (beta[j] == 0.0) continue;
    for (int64_t c = j; c < n; ++c) householder::reflect(a.data() + j * m + j, beta[j], q.data() + c * m + j, m - j);
  }
  return q;
}

std::vector<double> to_col_major(const std::vector<double>& x, int64_t m, int64_t n) {
  std::vector<double> y(x.size());
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) y[j * m + i] = x[i * n + j];
  return y;
}
std::vector<double> to_row_major(const std::vector<double>& x, int64_t m, int64_t n) {
  std::vector<double> y(x.size());
  for (int64_t j = 0; j < n; ++j)
    for (int64_t i = 0; i < m; ++i) y[i * n + j] = x[j * m + i];
  return y;
}

// Orthonormal basis of the columns of a row-major [m, n] matrix, returned row-major.
std::vector<double> orth(const std::vector<double>& y, int64_t m, int64_t n) {
  std::vector<double> a = to_col_major(y, m, n);
  return to_row_major(householder_qr(a, m, n, nullptr), m, n);
}

}  // namespace

void spectral_small_svd(const std::vector<double>& r, int64_t l, int64_t k, std::vector<double>& ur, std::vector<double>& vk,
                        std::vector<float>& s) {
  const SmallSvd svd = small_svd(r, l);  // r = U_r Σ V_rᵀ, σ descending
  ur.assign(svd.u.begin(), svd.u.begin() + l * k);
  vk.assign(svd.v.begin(), svd.v.begin() + l * k);
  s.resize(static_cast<size_t>(k));
  for (int64_t c = 0; c < k; ++c) s[static_cast<size_t>(c)] = static_cast<float>(svd.sigma[static_cast<size_t>(c)]);
}

LowRank randomized_svd(const float* g, int64_t rows, int64_t cols, const SpectralSpec& spec) {
  const int64_t mn = std::min(rows, cols);
  if (rows < 1 || cols < 1)
    fail("spectral split needs a non-empty matrix, got [", rows, ", ", cols, "]");
  if (spec.rank < 1 || spec.rank > mn)
    fail("spectral rank ", spec.rank, " must be between 1 and min(rows, cols) = ", mn);
  if (spec.power_iters < 0) fail("spectral power_iters must be >= 0, got ", spec.power_iters);
  if (spec.oversample < 0) fail("spectral oversample must be >= 0, got ", spec.oversample);

  const int64_t k = spec.rank;
  const int64_t l = std::min<int64_t>(k + spec.oversample, mn);

  // Gaussian test matrix Ω [cols, l], element (j, t) = normal number j*l + t of the stream.
  std::vector<double> omega(static_cast<size_t>(cols * l));
  for (int64_t i = 0; i < cols * l; ++i)
    omega[static_cast<size_t>(i)] = philox_normal(spec.seed, spec.stream, static_cast<uint64_t>(i));

  const std::vector<float> gt = transpose(g, rows, cols);  // [cols, rows]
  std::vector<double> y(static_cast<size_t>(rows * l));
  std::vector<double> z(static_cast<size_t>(cols * l));
  gemm(g, rows, cols, omega.data(), l, y.data());  // Y = G Ω
  omega.clear();
  omega.shrink_to_fit();
  for (int it = 0; it < spec.power_iters; ++it) {
    const std::vector<double> q = orth(y, rows, l);
    gemm(gt.data(), cols, rows, q.data(), l, z.data());  // Z = Gᵀ Q
    const std::vector<double> zq = orth(z, cols, l);
    gemm(g, rows, cols, zq.data(), l, y.data());  // Y = G Z
  }
  const std::vector<double> q = orth(y, rows, l);       // [rows, l] row-major
  gemm(gt.data(), cols, rows, q.data(), l, z.data());  // Bᵀ = Gᵀ Q  [cols, l]

  // Bᵀ = Q_z R;  R = U_r Σ V_rᵀ.
  std::vector<double> zc = to_col_major(z, cols, l);
  std::vector<double> r;
  const std::vector<double> qz = householder_qr(zc, cols, l, &r);  // [cols, l] col-major
  std::vector<double> ur, vk;
  std::vector<float> sk;
  spectral_small_svd(r, l, k, ur, vk, sk);
  LowRank lr;
  lr.rows = rows;
  lr.cols = cols;
  lr.rank = static_cast<int>(k);
  lr.s = sk;
  // U = Q V_r  [rows, k];  V = Q_z U_r  [cols, k].
  lr.u.resize(static_cast<size_t>(rows * k));
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t c = 0; c < k; ++c) {
      double acc = 0;
      for (int64_t t = 0; t < l; ++t) acc += q[i * l + t] * vk[c * l + t];
      lr.u[static_cast<size_t>(i * k + c)] = static_cast<float>(acc);
    }
  lr.v.resize(static_cast<size_t>(cols * k));
  for (int64_t j = 0; j < cols; ++j)
    for (int64_t c = 0; c < k; ++c) {
      double acc = 0;
      for (int64_t t = 0; t < l; ++t) acc += qz[t * cols + j] * ur[c * l + t];
      lr.v[static_cast<size_t>(j * k + c)] = static_cast<float>(acc);
    }
  return lr;
}

void LowRank::add_to(float* x, double sign) const {
  if (rank <= 0 || rows <= 0 || cols <= 0) return;
  const int64_t k = rank;
  NIBBLE_CHECK(static_cast<int64_t>(u.size()) == rows * k && static_cast<int64_t>(v.size()) == cols * k &&
                   static_cast<int64_t>(s.size()) == k,
               "LowRank factors do not match rows/cols/rank");
  // US [rows, k] (float64, sign folded in), Vᵀ [k, cols]; x += US · Vᵀ row block by row block.
  std::vector<double> us(static_cast<size_t>(rows * k));
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t c = 0; c < k; ++c)
      us[i * k + c] = sign * static_cast<double>(u[i * k + c]) * static_cast<double>(s[c]);
  std::vector<double> vt(static_cast<size_t>(k * cols));
  for (int64_t j = 0; j < cols; ++j)
    for (int64_t c = 0; c < k; ++c) vt[c * cols + j] = static_cast<double>(v[j * k + c]);
  const std::vector<double> wp = pack_panels(vt.data(), k, cols);
  const double work = static_cast<double>(rows) * cols * k;
  parallel_for(rows, 4, work, [&](int64_t b, int64_t e) {
    constexpr int64_t kChunk = 32;
    std::vector<double> buf(static_cast<size_t>(kChunk * cols));
    for (int64_t i = b; i < e; i += kChunk) {
      const int64_t n = std::min(kChunk, e - i);
      gemm_rows(us.data() + i * k, k, wp, cols, buf.data(), 0, n);
      float* xr = x + i * cols;
      for (int64_t t = 0; t < n * cols; ++t)
        xr[t] = static_cast<float>(static_cast<double>(xr[t]) + buf[static_cast<size_t>(t)]);
    }
  });
}

}  // namespace nibble
