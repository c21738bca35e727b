// RMSNorm forward and backward, CPU reference. Sums of squares and the backward's row dot
// products are accumulated in float64; per-element math is in T.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "nibble/ops/ops.hpp"

namespace nibble::ops {

template <class T>
void rmsnorm_forward(const T* x, const T* w, T* y, T* rstd, int64_t n, int64_t c, T eps) {
#pragma omp parallel for schedule(static) if (n * c >= (int64_t(1) << 14))
  for (int64_t i = 0; i < n; ++i) {
    const T* xr = x + i * c;
    T* yr = y + i * c;
    double ss[4] = {0, 0, 0, 0};  // four fixed lanes: a fixed summation order
    int64_t j = 0;
    for (; j + 4 <= c; j += 4)
      for (int l = 0; l < 4; ++l) ss[l] += static_cast<double>(xr[j + l]) * static_cast<double>(xr[j + l]);
    for (; j < c; ++j) ss[0] += static_cast<double>(xr[j]) * static_cast<double>(xr[j]);
    const double ms = ((ss[0] + ss[1]) + (ss[2] + ss[3])) / static_cast<double>(c);
    const T r = static_cast<T>(1.0 / std::sqrt(ms + static_cast<double>(eps)));
    rstd[i] = r;
    for (j = 0; j < c; ++j) yr[j] = xr[j] * r * w[j];
  }
}

// y = x·r·w with r = (mean(x²) + eps)^(−1/2), so with s = Σ_k dy_k w_k x_k:
//   dx_j = r·dy_j·w_j − x_j · r³ · s / c,   dw_j += Σ_rows dy_j · x_j · r.
// dw is accumulated first (threads split the columns, rows summed in order, float64), so that
// dx may alias dy.
template <class T>
void rmsnorm_backward(const T* dy, const T* x, const T* w, const T* rstd, T* dx, T* dw, int64_t n, int64_t c) {
  const bool par = n * c >= (int64_t(1) << 14);
  constexpr int64_t kCols = 64;
  const int64_t blocks = (c + kCols - 1) / kCols;
#pragma omp parallel for schedule(static) if (par)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t c0 = blk * kCols, c1 = std::min(c, c0 + kCols);
    double acc[kCols] = {};
    for (int64_t i = 0; i < n; ++i) {
      const T* dyr = dy + i * c;
      const T* xr = x + i * c;
      const double r = static_cast<double>(rstd[i]);
      for (int64_t j = c0; j < c1; ++j)
        acc[j - c0] += static_cast<double>(dyr[j]) * static_cast<double>(xr[j]) * r;
    }
    for (int64_t j = c0; j < c1; ++j) dw[j] = static_cast<T>(static_cast<double>(dw[j]) + acc[j - c0]);
  }
#pragma omp parallel for schedule(static) if (par)
  for (int64_t i = 0; i < n; ++i) {
    const T* dyr = dy + i * c;
    const T* xr = x + i * c;
    T* dxr = dx + i * c;
    double s[4] = {0, 0, 0, 0};
    int64_t j = 0;
    for (; j + 4 <= c; j += 4)
      for (int l = 0; l < 4; ++l)
        s[l] += static_cast<double>(dyr[j + l]) * static_cast<double>(w[j + l]) * static_cast<double>(xr[j + l]);
    for (; j < c; ++j) s[0] += static_cast<double>(dyr[j]) * static_cast<double>(w[j]) * static_cast<double>(xr[j]);
    const double rd = static_cast<double>(rstd[i]);
    const T r = rstd[i];
    const T coef = static_cast<T>(rd * rd * rd * ((s[0] + s[1]) + (s[2] + s[3])) / static_cast<double>(c));
    for (j = 0; j < c; ++j) dxr[j] = r * dyr[j] * w[j] - xr[j] * coef;
  }
}

template void rmsnorm_forward<float>(const float*, const float*, float*, float*, int64_t, int64_t, float);
template void rmsnorm_forward<double>(const double*, const double*, double*, double*, int64_t, int64_t, double);
template void rmsnorm_backward<float>(const float*, const float*, const float*, const float*, float*, float*, int64_t,
                                      int64_t);
template void rmsnorm_backward<double>(const double*, const double*, const double*, const double*, double*, double*,
                                       int64_t, int64_t);

}  // namespace nibble::ops
