// Token embedding lookup and its backward (scatter-add), CPU reference.
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "nibble/ops/ops.hpp"

namespace nibble::ops {

template <class T>
void embedding_forward(const int32_t* tokens, const T* wte, T* out, int64_t n, int64_t c) {
#pragma omp parallel for schedule(static) if (n * c >= (int64_t(1) << 15))
  for (int64_t i = 0; i < n; ++i)
    std::memcpy(out + i * c, wte + static_cast<int64_t>(tokens[i]) * c, static_cast<size_t>(c) * sizeof(T));
}

// Rows of dwte are hit by several tokens, so the threads split the columns instead of the
// tokens: every element sums its contributions in token order, whatever the thread count.
template <class T>
void embedding_backward(const int32_t* tokens, const T* dout, T* dwte, int64_t n, int64_t c) {
  constexpr int64_t kCols = 64;
  const int64_t blocks = (c + kCols - 1) / kCols;
#pragma omp parallel for schedule(static) if (n * c >= (int64_t(1) << 15))
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t c0 = blk * kCols, c1 = std::min(c, c0 + kCols);
    for (int64_t i = 0; i < n; ++i) {
      T* dst = dwte + static_cast<int64_t>(tokens[i]) * c;
      const T* src = dout + i * c;
      for (int64_t j = c0; j < c1; ++j) dst[j] += src[j];
    }
  }
}

template void embedding_forward<float>(const int32_t*, const float*, float*, int64_t, int64_t);
template void embedding_forward<double>(const int32_t*, const double*, double*, int64_t, int64_t);
template void embedding_backward<float>(const int32_t*, const float*, float*, int64_t, int64_t);
template void embedding_backward<double>(const int32_t*, const double*, double*, int64_t, int64_t);

}  // namespace nibble::ops
