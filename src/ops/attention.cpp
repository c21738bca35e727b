// Causal grouped-query attention, CPU reference, flash-attention style: the scores are
// computed in tiles of kBr queries × kBc keys through the GEMM (ops::gemm), the forward keeps a
// running max and sum per query row (online softmax), and only lse[B, Hq, T] is saved. The
// backward recomputes P = exp(s·scale − lse) tile by tile. Memory per thread: a few tiles plus
// buffers linear in T (Kᵀ, Vᵀ of one head, the backward's Δ rows); no [T, T] buffer.
//
// Both read Kᵀ (and Vᵀ), transposed once per head into a [D, T] buffer, so that every product
// is one the GEMM reads in place. Forward: OpenMP over (batch, query head). Backward: OpenMP
// over (batch, kv head):
// a task owns dk, dv of its kv head and dq of the query heads that share it, so every gradient
// element is accumulated by one thread in a fixed order (keys tiles outer, query heads, query
// tiles inner).
//
// Precision for T = float: scores, probabilities and products in fp32 (GEMM FMA chains, the
// exponentials by ops::exp_f32), row sums of probabilities and Δ = rowsum(dO ⊙ O) in float64.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "nibble/error.hpp"
#include "nibble/ops/ops.hpp"
#include "core/simd_clones.hpp"

namespace nibble::ops {
namespace {

// Query tiles of 60 rows: a multiple of every kernel's MR (12, 6, 4), so no partial panels;
// key tiles of 128 (a multiple of every NR).
constexpr int64_t kBr = 60, kBc = 128;

void check_shapes(int64_t b, int64_t t, int64_t hq, int64_t hkv, int64_t d) {
  if (b < 0 || t < 0 || hq <= 0 || hkv <= 0 || d <= 0)
    fail("attention: bad shape B=", b, " T=", t, " Hq=", hq, " Hkv=", hkv, " D=", d);
  if (hq % hkv != 0) fail("attention: query heads Hq=", hq, " are not a multiple of kv heads Hkv=", hkv);
}

template <class T>
T* tl_buffer(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

// dst[e*t + j] = src[j*ld + e] for j < t, e < d: the keys (or values) of one head transposed to
// [D, T], so that the score products read them as a [K, N] operand, in place.
template <class T>
void transpose_head(const T* src, int64_t ld, int64_t t, int64_t d, T* dst) {
  constexpr int64_t kB = 16;
  int64_t j0 = 0;
  for (; j0 + kB <= t; j0 += kB)
    for (int64_t e = 0; e < d; ++e)
      for (int64_t jj = 0; jj < kB; ++jj) dst[e * t + j0 + jj] = src[(j0 + jj) * ld + e];
  for (int64_t e = 0; e < d; ++e)
    for (int64_t j = j0; j < t; ++j) dst[e * t + j] = src[j * ld + e];
}

template <class T>
inline T exp_t(T x) {
  if constexpr (std::is_same_v<T, float>)
    return exp_f32(x);
  else
    return std::exp(x);
}

// Float64 sum in eight fixed lanes, combined in a fixed order.
template <class T>
inline double lane_sum(const T* x, int64_t n) {
  double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) s[l] += static_cast<double>(x[i + l]);
  for (; i < n; ++i) s[0] += static_cast<double>(x[i]);
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

// The row loops of the softmax: float versions NIBBLE_SIMD_CLONES (core/simd_clones.hpp), double
// versions plain.

// max(init, max_c x[c]) through the floats' order keys: an integer max reduction vectorises
// (a float one does not without -ffast-math); the key map is its own inverse.
NIBBLE_SIMD_CLONES float row_max(const float* x, int64_t n, float init) {
  int32_t mk = detail::float_order_key(init);
  for (int64_t i = 0; i < n; ++i) mk = std::max(mk, detail::float_order_key(x[i]));
  return std::bit_cast<float>(mk ^ ((mk >> 31) & 0x7FFFFFFF));
}
double row_max(const double* x, int64_t n, double init) {
  double m = init;
  for (int64_t i = 0; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

// x[c] = exp(x[c]·scale − shift) for c < n; returns Σ_c x[c] in float64.
NIBBLE_SIMD_CLONES double exp_row(float* x, int64_t n, float scale, float shift) {
  for (int64_t c = 0; c < n; ++c) x[c] = exp_f32(x[c] * scale - shift);
  return lane_sum(x, n);
}
double exp_row(double* x, int64_t n, double scale, double shift) {
  for (int64_t c = 0; c < n; ++c) x[c] = std::exp(x[c] * scale - shift);
  return lane_sum(x, n);
}

// Backward row: p = exp(s·scale − lse) over the scores in p, ds = p·(dp − Δ)·scale over dp in ds.
NIBBLE_SIMD_CLONES void softmax_grad_row(float* p, float* ds, int64_t n, float scale, float lse, float delta) {
  for (int64_t c = 0; c < n; ++c) {
    const float pc = exp_f32(p[c] * scale - lse);
    p[c] = pc;
    ds[c] = pc * (ds[c] - delta) * scale;
  }
}
void softmax_grad_row(double* p, double* ds, int64_t n, double scale, double lse, double delta) {
  for (int64_t c = 0; c < n; ++c) {
    const double pc = std::exp(p[c] * scale - lse);
    p[c] = pc;
    ds[c] = pc * (ds[c] - delta) * scale;
  }
}

}  // namespace

template <class T>
void attention_forward(const T* q, const T* k, const T* v, T* out, T* lse, int64_t b, int64_t t, int64_t hq,
                       int64_t hkv, int64_t d) {
  check_shapes(b, t, hq, hkv, d);
  const int64_t group = hq / hkv;
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(d)));
  const int64_t ntasks = b * hq;
  const int64_t ldq = hq * d, ldk = hkv * d;
  const T neg_inf = -std::numeric_limits<T>::infinity();
#pragma omp parallel for schedule(static) if (ntasks > 1 && b * hq * t * t * d >= (int64_t(1) << 16))
  for (int64_t task = 0; task < ntasks; ++task) {
    const int64_t bb = task / hq, h = task % hq, g = h / group;
    const T* V = v + (bb * t * hkv + g) * d;
    thread_local std::vector<T> kt_buf, s_buf, o_buf, m_buf;
    thread_local std::vector<double> l_buf;
    T* KT = tl_buffer(kt_buf, static_cast<size_t>(d * t));  // Kᵀ [D, T] of this head
    T* S = tl_buffer(s_buf, static_cast<size_t>(kBr * kBc));
    T* O = tl_buffer(o_buf, static_cast<size_t>(kBr * d));
    T* M = tl_buffer(m_buf, static_cast<size_t>(kBr));
    double* L = tl_buffer(l_buf, static_cast<size_t>(kBr));
    transpose_head(k + (bb * t * hkv + g) * d, ldk, t, d, KT);
    for (int64_t i0 = 0; i0 < t; i0 += kBr) {
      const int64_t i1 = std::min(t, i0 + kBr), rows = i1 - i0;
      const T* Q = q + ((bb * t + i0) * hq + h) * d;
      std::fill(O, O + rows * d, T(0));
      std::fill(M, M + rows, neg_inf);
      std::fill(L, L + rows, 0.0);
      for (int64_t j0 = 0; j0 < i1; j0 += kBc) {
        const int64_t cols = std::min(kBc, i1 - j0);  // keys beyond the last query are masked
        gemm<T>(false, false, rows, cols, d, Q, ldq, KT + j0, t, S, kBc, false);
        for (int64_t r = 0; r < rows; ++r) {
          T* srow = S + r * kBc;
          const int64_t valid = std::min(cols, i0 + r - j0 + 1);  // key j0 + c is visible when ≤ i0 + r
          if (valid <= 0) {
            std::fill(srow, srow + cols, T(0));
            continue;
          }
          // Rounding is monotonic, so max_c fl(scale·s_c) = fl(scale·max_c s_c) (scale > 0).
          const T mx = std::max(M[r], row_max(srow, valid, neg_inf) * scale);
          const double sum = exp_row(srow, valid, scale, mx);
          std::fill(srow + valid, srow + cols, T(0));
          if (M[r] != neg_inf && mx != M[r]) {
            const T alpha = exp_t(M[r] - mx);
            L[r] *= static_cast<double>(alpha);
            T* orow = O + r * d;
            for (int64_t e = 0; e < d; ++e) orow[e] *= alpha;
          }
          L[r] += sum;
          M[r] = mx;
        }
        gemm<T>(false, false, rows, d, cols, S, kBc, V + j0 * ldk, ldk, O, d, true);
      }
      for (int64_t r = 0; r < rows; ++r) {
        const T inv = static_cast<T>(1.0 / L[r]);
        T* dst = out + ((bb * t + i0 + r) * hq + h) * d;
        for (int64_t e = 0; e < d; ++e) dst[e] = O[r * d + e] * inv;
        lse[(bb * hq + h) * t + i0 + r] = static_cast<T>(static_cast<double>(M[r]) + std::log(L[r]));
      }
    }
  }
}

// With s = scale·q·kᵀ, P = softmax(s) (causal), O = P·V and Δ_i = Σ_e dO_ie O_ie:
//   dV = Pᵀ dO,  dP = dO Vᵀ,  dS = P ⊙ (dP − Δ),  dQ = scale·dS K,  dK = scale·dSᵀ Q.
template <class T>
void attention_backward(const T* dout, const T* q, const T* k, const T* v, const T* out, const T* lse, T* dq, T* dk,
                        T* dv, int64_t b, int64_t t, int64_t hq, int64_t hkv, int64_t d) {
  check_shapes(b, t, hq, hkv, d);
  const int64_t group = hq / hkv;
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(d)));
  const int64_t ntasks = b * hkv;
  const int64_t ldq = hq * d, ldk = hkv * d;
#pragma omp parallel for schedule(static) if (ntasks > 1 && b * hq * t * t * d >= (int64_t(1) << 16))
  for (int64_t task = 0; task < ntasks; ++task) {
    const int64_t bb = task / hkv, g = task % hkv;
    const T* K = k + (bb * t * hkv + g) * d;
    const T* V = v + (bb * t * hkv + g) * d;
    T* dK = dk + (bb * t * hkv + g) * d;
    T* dV = dv + (bb * t * hkv + g) * d;
    for (int64_t j = 0; j < t; ++j) {
      std::fill(dK + j * ldk, dK + j * ldk + d, T(0));
      std::fill(dV + j * ldk, dV + j * ldk + d, T(0));
    }
    thread_local std::vector<T> p_buf, ds_buf, delta_buf, kt_buf, vt_buf;
    T* P = tl_buffer(p_buf, static_cast<size_t>(kBr * kBc));
    T* dS = tl_buffer(ds_buf, static_cast<size_t>(kBr * kBc));
    T* delta = tl_buffer(delta_buf, static_cast<size_t>(group * t));
    T* KT = tl_buffer(kt_buf, static_cast<size_t>(d * t));  // Kᵀ, Vᵀ [D, T] of this kv head
    T* VT = tl_buffer(vt_buf, static_cast<size_t>(d * t));
    transpose_head(K, ldk, t, d, KT);
    transpose_head(V, ldk, t, d, VT);
    for (int64_t hh = 0; hh < group; ++hh) {
      const int64_t h = g * group + hh;
      for (int64_t i = 0; i < t; ++i) {
        const int64_t off = ((bb * t + i) * hq + h) * d;
        std::fill(dq + off, dq + off + d, T(0));
        double s = 0.0;
        for (int64_t e = 0; e < d; ++e) s += static_cast<double>(dout[off + e]) * static_cast<double>(out[off + e]);
        delta[hh * t + i] = static_cast<T>(s);
      }
    }
    for (int64_t j0 = 0; j0 < t; j0 += kBc) {
      const int64_t cols = std::min(kBc, t - j0);
      for (int64_t hh = 0; hh < group; ++hh) {
        const int64_t h = g * group + hh;
        const T* L = lse + (bb * hq + h) * t;
        for (int64_t i0 = j0 / kBr * kBr; i0 < t; i0 += kBr) {
          const int64_t rows = std::min(kBr, t - i0);
          const int64_t qoff = ((bb * t + i0) * hq + h) * d;
          const T* Q = q + qoff;
          const T* dO = dout + qoff;
          gemm<T>(false, false, rows, cols, d, Q, ldq, KT + j0, t, P, kBc, false);
          gemm<T>(false, false, rows, cols, d, dO, ldq, VT + j0, t, dS, kBc, false);
          for (int64_t r = 0; r < rows; ++r) {
            T* prow = P + r * kBc;
            T* dsrow = dS + r * kBc;
            const int64_t valid = std::clamp<int64_t>(i0 + r - j0 + 1, 0, cols);
            const T li = L[i0 + r], di = delta[hh * t + i0 + r];
            softmax_grad_row(prow, dsrow, valid, scale, li, di);
            for (int64_t c = valid; c < cols; ++c) prow[c] = dsrow[c] = T(0);
          }
          gemm<T>(true, false, cols, d, rows, P, kBc, dO, ldq, dV + j0 * ldk, ldk, true);
          gemm<T>(true, false, cols, d, rows, dS, kBc, Q, ldq, dK + j0 * ldk, ldk, true);
          gemm<T>(false, false, rows, d, cols, dS, kBc, K + j0 * ldk, ldk, dq + qoff, ldq, true);
        }
      }
    }
  }
}

template void attention_forward<float>(const float*, const float*, const float*, float*, float*, int64_t, int64_t,
                                       int64_t, int64_t, int64_t);
template void attention_forward<double>(const double*, const double*, const double*, double*, double*, int64_t,
                                        int64_t, int64_t, int64_t, int64_t);
template void attention_backward<float>(const float*, const float*, const float*, const float*, const float*,
                                        const float*, float*, float*, float*, int64_t, int64_t, int64_t, int64_t,
                                        int64_t);
template void attention_backward<double>(const double*, const double*, const double*, const double*, const double*,
                                         const double*, double*, double*, double*, int64_t, int64_t, int64_t, int64_t,
                                         int64_t);

}  // namespace nibble::ops
