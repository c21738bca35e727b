// Rotary position embedding (Hugging Face rotate_half layout), CPU reference. The cos/sin
// tables are computed in float64 and cached per (head dim, base), grown to the longest
// sequence seen; the rotation itself is computed in float64 and rounded once to T.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "nibble/error.hpp"
#include "nibble/ops/ops.hpp"

namespace nibble::ops {
namespace {

struct RopeTable {
  int64_t positions = 0;
  std::vector<double> cos, sin;  // [positions, d/2]
};

// θ(p, i) = p · base^(−2i/d).
std::shared_ptr<const RopeTable> rope_table(int64_t t, int64_t d, double base) {
  static std::mutex mu;
  static std::map<std::pair<int64_t, double>, std::shared_ptr<const RopeTable>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto& entry = cache[{d, base}];
  if (entry && entry->positions >= t) return entry;
  auto tab = std::make_shared<RopeTable>();
  const int64_t half = d / 2;
  tab->positions = std::max<int64_t>(t, entry ? 2 * entry->positions : 0);
  tab->cos.resize(static_cast<size_t>(tab->positions * half));
  tab->sin.resize(tab->cos.size());
  std::vector<double> inv_freq(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i)
    inv_freq[static_cast<size_t>(i)] = std::pow(base, -2.0 * static_cast<double>(i) / static_cast<double>(d));
  for (int64_t p = 0; p < tab->positions; ++p)
    for (int64_t i = 0; i < half; ++i) {
      const double theta = static_cast<double>(p) * inv_freq[static_cast<size_t>(i)];
      tab->cos[static_cast<size_t>(p * half + i)] = std::cos(theta);
      tab->sin[static_cast<size_t>(p * half + i)] = std::sin(theta);
    }
  entry = tab;
  return entry;
}

// sign = +1: forward rotation by θ; −1: the inverse rotation (by −θ).
template <class T>
void rope_apply(T* x, int64_t b, int64_t t, int64_t h, int64_t d, double base, double sign) {
  if (d <= 0 || d % 2 != 0) fail("rope: head dimension ", d, " must be even and positive");
  if (!(base > 0.0)) fail("rope: base ", base, " must be positive");
  if (b <= 0 || t <= 0 || h <= 0) return;
  const auto tab = rope_table(t, d, base);
  const int64_t half = d / 2;
  const double* cs = tab->cos.data();
  const double* sn = tab->sin.data();
#pragma omp parallel for schedule(static) if (b * t * h * d >= (int64_t(1) << 14))
  for (int64_t row = 0; row < b * t; ++row) {
    const int64_t pos = row % t;
    const double* c = cs + pos * half;
    const double* s = sn + pos * half;
    for (int64_t hh = 0; hh < h; ++hh) {
      T* v = x + (row * h + hh) * d;
      for (int64_t i = 0; i < half; ++i) {
        const double x1 = static_cast<double>(v[i]), x2 = static_cast<double>(v[i + half]);
        const double si = sign * s[i];
        v[i] = static_cast<T>(x1 * c[i] - x2 * si);
        v[i + half] = static_cast<T>(x2 * c[i] + x1 * si);
      }
    }
  }
}

}  // namespace

template <class T>
void rope_forward(T* x, int64_t b, int64_t t, int64_t h, int64_t d, double base) {
  rope_apply(x, b, t, h, d, base, 1.0);
}

// The forward is y = R(θ)x per pair with R orthogonal, so dx = R(θ)ᵀ dy = R(−θ) dy.
template <class T>
void rope_backward(T* dx, int64_t b, int64_t t, int64_t h, int64_t d, double base) {
  rope_apply(dx, b, t, h, d, base, -1.0);
}

template void rope_forward<float>(float*, int64_t, int64_t, int64_t, int64_t, double);
template void rope_forward<double>(double*, int64_t, int64_t, int64_t, int64_t, double);
template void rope_backward<float>(float*, int64_t, int64_t, int64_t, int64_t, double);
template void rope_backward<double>(double*, int64_t, int64_t, int64_t, int64_t, double);

}  // namespace nibble::ops
