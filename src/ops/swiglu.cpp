// SwiGLU (silu(gate) ⊙ up), CPU reference; elementwise, in T.
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "nibble/ops/ops.hpp"

namespace nibble::ops {
namespace {
// float: ops::exp_f32 (branch-free, so the loops vectorise); double: std::exp.
template <class T>
inline T sigmoid(T g) {
  T e;
  if constexpr (std::is_same_v<T, float>)
    e = exp_f32(-g);
  else
    e = std::exp(-g);
  return T(1) / (T(1) + e);  // exp overflow for g ≪ 0 gives 1/inf = 0
}
}  // namespace

template <class T>
void swiglu_forward(const T* gate, const T* up, T* out, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= (int64_t(1) << 15))
  for (int64_t i = 0; i < n; ++i) {
    const T g = gate[i];
    out[i] = g * sigmoid(g) * up[i];
  }
}

// d silu(g)/dg = σ(g)·(1 + g·(1 − σ(g))). Outputs may alias dout (elementwise).
template <class T>
void swiglu_backward(const T* dout, const T* gate, const T* up, T* dgate, T* dup, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= (int64_t(1) << 15))
  for (int64_t i = 0; i < n; ++i) {
    const T g = gate[i], u = up[i], d = dout[i];
    const T s = sigmoid(g);
    dgate[i] = d * u * (s * (T(1) + g * (T(1) - s)));
    dup[i] = d * (g * s);
  }
}

template void swiglu_forward<float>(const float*, const float*, float*, int64_t);
template void swiglu_forward<double>(const double*, const double*, double*, int64_t);
template void swiglu_backward<float>(const float*, const float*, const float*, float*, float*, int64_t);
template void swiglu_backward<double>(const double*, const double*, const double*, double*, double*, int64_t);

}  // namespace nibble::ops
