// AdamW, global gradient norm and the small vector updates, CPU reference.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#endif

#include "nibble/error.hpp"
#include "nibble/ops/ops.hpp"

namespace nibble::ops {

namespace {

struct AdamW {
  float lr, beta1, beta2, eps, wd, bc1, bc2, one_m_b1, one_m_b2;
};

// Elements [i0, i1): one IEEE fp32 operation at a time in the order of the header's formula.
void adamw_scalar(const AdamW& h, float* p, const float* g, float* m, float* v, int64_t i0, int64_t i1) {
  for (int64_t i = i0; i < i1; ++i) {
    const float gi = g[i];
    const float mi = h.beta1 * m[i] + h.one_m_b1 * gi;
    const float vi = h.beta2 * v[i] + h.one_m_b2 * (gi * gi);
    m[i] = mi;
    v[i] = vi;
    const float mhat = mi / h.bc1;
    const float vhat = vi / h.bc2;
    p[i] = p[i] - h.lr * (mhat / (std::sqrt(vhat) + h.eps) + h.wd * p[i]);
  }
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define NIBBLE_ADAMW_AVX 1
// The same operations eight lanes at a time (GCC does not vectorise std::sqrt under
// -fmath-errno); IEEE multiply, add, divide and sqrt are correctly rounded, so the bits equal
// adamw_scalar's.
__attribute__((target("avx"))) void adamw_avx(const AdamW& h, float* p, const float* g, float* m, float* v,
                                               int64_t i0, int64_t i1) {
  const __m256 b1 = _mm256_set1_ps(h.beta1), b2 = _mm256_set1_ps(h.beta2), c1 = _mm256_set1_ps(h.one_m_b1),
               c2 = _mm256_set1_ps(h.one_m_b2), bc1 = _mm256_set1_ps(h.bc1), bc2 = _mm256_set1_ps(h.bc2),
               eps = _mm256_set1_ps(h.eps), lr = _mm256_set1_ps(h.lr), wd = _mm256_set1_ps(h.wd);
  int64_t i = i0;
  for (; i + 8 <= i1; i += 8) {
    const __m256 gi = _mm256_loadu_ps(g + i), pi = _mm256_loadu_ps(p + i);
    const __m256 mi = _mm256_add_ps(_mm256_mul_ps(b1, _mm256_loadu_ps(m + i)), _mm256_mul_ps(c1, gi));
    const __m256 vi = _mm256_add_ps(_mm256_mul_ps(b2, _mm256_loadu_ps(v + i)), _mm256_mul_ps(c2, _mm256_mul_ps(gi, gi)));
    _mm256_storeu_ps(m + i, mi);
    _mm256_storeu_ps(v + i, vi);
    const __m256 mhat = _mm256_div_ps(mi, bc1), vhat = _mm256_div_ps(vi, bc2);
    const __m256 upd = _mm256_add_ps(_mm256_div_ps(mhat, _mm256_add_ps(_mm256_sqrt_ps(vhat), eps)), _mm256_mul_ps(wd, pi));
    _mm256_storeu_ps(p + i, _mm256_sub_ps(pi, _mm256_mul_ps(lr, upd)));
  }
  adamw_scalar(h, p, g, m, v, i, i1);
}
#endif

}  // namespace

// The bias corrections 1 − βᵗ are computed in float64 and rounded once to fp32; the
// per-element math is fp32 (like PyTorch's fp32 AdamW), one IEEE operation at a time in the
// order of the header's formula (no FMA: the build disables contraction), with the same bits
// on the AVX and the scalar path.
void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, float lr, float beta1, float beta2,
                  float eps, float weight_decay, int64_t t) {
  if (t < 1) fail("adamw: step ", t, " must be >= 1");
  AdamW h;
  h.lr = lr;
  h.beta1 = beta1;
  h.beta2 = beta2;
  h.eps = eps;
  h.wd = weight_decay;
  h.bc1 = static_cast<float>(1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(t)));
  h.bc2 = static_cast<float>(1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(t)));
  h.one_m_b1 = 1.0f - beta1;
  h.one_m_b2 = 1.0f - beta2;
  auto kernel = adamw_scalar;
#ifdef NIBBLE_ADAMW_AVX
  if (__builtin_cpu_supports("avx")) kernel = adamw_avx;
#endif
  constexpr int64_t kChunk = 8192;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (chunks > 4)
  for (int64_t c = 0; c < chunks; ++c) kernel(h, p, g, m, v, c * kChunk, std::min(n, (c + 1) * kChunk));
}

// One chunk's Σx² in eight float64 lanes, combined in a fixed order.
double chunk_sumsq(const float* x, int64_t n) {
  double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) s[l] += static_cast<double>(x[i + l]) * static_cast<double>(x[i + l]);
  for (; i < n; ++i) s[0] += static_cast<double>(x[i]) * static_cast<double>(x[i]);
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

// Fixed chunks (independent of the thread count) summed in parallel, then the partial sums
// added in chunk order.
double global_norm(const float* const* bufs, const int64_t* sizes, int count) {
  constexpr int64_t kChunk = kNormChunk;
  struct Piece {
    const float* p;
    int64_t n;
  };
  std::vector<Piece> pieces;
  for (int b = 0; b < count; ++b)
    for (int64_t off = 0; off < sizes[b]; off += kChunk)
      pieces.push_back({bufs[b] + off, std::min(kChunk, sizes[b] - off)});
  std::vector<double> partial(pieces.size(), 0.0);
  const int64_t np = static_cast<int64_t>(pieces.size());
#pragma omp parallel for schedule(static) if (np > 1)
  for (int64_t q = 0; q < np; ++q) partial[static_cast<size_t>(q)] = chunk_sumsq(pieces[static_cast<size_t>(q)].p, pieces[static_cast<size_t>(q)].n);
  double total = 0.0;
  for (double s : partial) total += s;
  return std::sqrt(total);
}

void scale_inplace(float* x, int64_t n, float s) {
#pragma omp parallel for schedule(static) if (n >= (int64_t(1) << 16))
  for (int64_t i = 0; i < n; ++i) x[i] *= s;
}

template <class T>
void add_inplace(T* y, const T* x, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= (int64_t(1) << 16))
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

template void add_inplace<float>(float*, const float*, int64_t);
template void add_inplace<double>(double*, const double*, int64_t);

}  // namespace nibble::ops
