// Softmax cross-entropy over the vocabulary, CPU reference. Per row: max, float64 sum of
// exp(x − max) (the exponentials in T: ops::exp_f32 for float), loss = log(sum) + max − x[target] in float64. The row
// losses are summed in row order, so the mean does not depend on the thread count.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "nibble/error.hpp"
#include "nibble/ops/ops.hpp"
#include "core/simd_clones.hpp"

namespace nibble::ops {
namespace {

// The row loops: float versions NIBBLE_SIMD_CLONES (core/simd_clones.hpp), double versions plain.

template <class T>
inline T exp_t(T x) {
  if constexpr (std::is_same_v<T, float>)
    return exp_f32(x);
  else
    return std::exp(x);
}

// Row maximum. float: through the order keys, an integer max reduction that vectorises (a
// float one does not without -ffast-math); the key map is its own inverse.
NIBBLE_SIMD_CLONES float row_max(const float* x, int64_t n) {
  int32_t mk = detail::float_order_key(x[0]);
  for (int64_t i = 1; i < n; ++i) mk = std::max(mk, detail::float_order_key(x[i]));
  return std::bit_cast<float>(mk ^ ((mk >> 31) & 0x7FFFFFFF));
}
double row_max(const double* x, int64_t n) {
  double m = x[0];
  for (int64_t i = 1; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

// Σ exp(x − mx) in float64 over eight fixed lanes; the exponentials also go to e when given.
template <class T>
inline double exp_sum_impl(const T* x, T mx, T* e, int64_t n) {
  double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  T buf[8];
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int l = 0; l < 8; ++l) buf[l] = exp_t(x[i + l] - mx);
    for (int l = 0; l < 8; ++l) s[l] += static_cast<double>(buf[l]);
    if (e)
      for (int l = 0; l < 8; ++l) e[i + l] = buf[l];
  }
  for (; i < n; ++i) {
    const T v = exp_t(x[i] - mx);
    s[0] += static_cast<double>(v);
    if (e) e[i] = v;
  }
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}
NIBBLE_SIMD_CLONES double exp_sum(const float* x, float mx, float* e, int64_t n) { return exp_sum_impl(x, mx, e, n); }
double exp_sum(const double* x, double mx, double* e, int64_t n) { return exp_sum_impl(x, mx, e, n); }

NIBBLE_SIMD_CLONES void scale_row(float* x, int64_t n, float s) {
  for (int64_t j = 0; j < n; ++j) x[j] *= s;
}
void scale_row(double* x, int64_t n, double s) {
  for (int64_t j = 0; j < n; ++j) x[j] *= s;
}

}  // namespace

template <class T>
double cross_entropy(const T* logits, const int32_t* targets, T* dlogits, int64_t n, int64_t v) {
  if (v <= 0) fail("cross_entropy: vocabulary size ", v, " must be positive");
  int64_t n_valid = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int32_t tg = targets[i];
    if (tg == -1) continue;
    if (tg < 0 || tg >= v)
      fail("cross_entropy: target of row ", i, " is ", tg, ", outside [0, ", v, ") (use -1 to ignore a row)");
    ++n_valid;
  }
  std::vector<double> row_loss(static_cast<size_t>(n), 0.0);
  const double inv_n = n_valid > 0 ? 1.0 / static_cast<double>(n_valid) : 0.0;
#pragma omp parallel for schedule(static) if (n * v >= (int64_t(1) << 15))
  for (int64_t i = 0; i < n; ++i) {
    const T* x = logits + i * v;
    T* dx = dlogits ? dlogits + i * v : nullptr;
    const int32_t tg = targets[i];
    if (tg == -1) {
      if (dx)
        for (int64_t j = 0; j < v; ++j) dx[j] = T(0);
      continue;
    }
    const T mx = row_max(x, v);
    const double x_target = static_cast<double>(x[tg]);  // read before dlogits may overwrite it
    // dx may alias x: each group of eight is read before it is written.
    const double sum = exp_sum(x, mx, dx, v);
    row_loss[static_cast<size_t>(i)] = std::log(sum) + static_cast<double>(mx) - x_target;
    if (dx) {
      const T scale = static_cast<T>(inv_n / sum);
      const T inv_nt = static_cast<T>(inv_n);
      scale_row(dx, v, scale);
      dx[tg] -= inv_nt;
    }
  }
  double total = 0.0;
  for (int64_t i = 0; i < n; ++i) total += row_loss[static_cast<size_t>(i)];
  return n_valid > 0 ? total / static_cast<double>(n_valid) : 0.0;
}

template double cross_entropy<float>(const float*, const int32_t*, float*, int64_t, int64_t);
template double cross_entropy<double>(const double*, const int32_t*, double*, int64_t, int64_t);

}  // namespace nibble::ops
