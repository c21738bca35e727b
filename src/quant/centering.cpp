#include "nibble/quant/centering.hpp"

#include "nibble/error.hpp"

namespace nibble {

std::vector<float> column_mean(const float* x, int64_t rows, int64_t cols) {
  std::vector<double> acc(static_cast<size_t>(cols), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) acc[static_cast<size_t>(c)] += x[r * cols + c];
  std::vector<float> mu(static_cast<size_t>(cols), 0.0f);
  if (rows > 0)
    for (int64_t c = 0; c < cols; ++c)
      mu[static_cast<size_t>(c)] = static_cast<float>(acc[static_cast<size_t>(c)] / static_cast<double>(rows));
  return mu;
}

void subtract_column_vector(float* x, int64_t rows, int64_t cols, const float* v) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) x[r * cols + c] -= v[c];
}

void add_column_vector(float* x, int64_t rows, int64_t cols, const float* v) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) x[r * cols + c] += v[c];
}

std::vector<float> fprop_correction(const float* w, int64_t n, int64_t k, const float* mu) {
  std::vector<float> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    double s = 0;
    for (int64_t j = 0; j < k; ++j) s += static_cast<double>(w[i * k + j]) * mu[j];
    out[static_cast<size_t>(i)] = static_cast<float>(s);
  }
  return out;
}

std::vector<float> dgrad_correction(const float* w, int64_t n, int64_t k, const float* nu) {
  std::vector<double> acc(static_cast<size_t>(k), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < k; ++j) acc[static_cast<size_t>(j)] += static_cast<double>(w[i * k + j]) * nu[i];
  return std::vector<float>(acc.begin(), acc.end());
}

void add_wgrad_correction(float* dw, int64_t n, int64_t k, int64_t t, const float* nu,
                          const float* mu) {
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < k; ++j)
      dw[i * k + j] = static_cast<float>(dw[i * k + j] +
                                         static_cast<double>(t) * nu[i] * static_cast<double>(mu[j]));
}

namespace {

std::vector<float> transpose(const float* a, int64_t rows, int64_t cols) {
  std::vector<float> t(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) t[static_cast<size_t>(c * rows + r)] = a[r * cols + c];
  return t;
}

// C[m, n] = A[m, r] · B[n, r]ᵀ, both operands laid out along the reduction dim r.
std::vector<float> matmul_nt(const float* a, const float* b, int64_t m, int64_t n, int64_t r) {
  std::vector<float> c(static_cast<size_t>(m * n));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t l = 0; l < r; ++l) s += static_cast<double>(a[i * r + l]) * b[j * r + l];
      c[static_cast<size_t>(i * n + j)] = static_cast<float>(s);
    }
  return c;
}

std::vector<float> centred_copy(const float* x, int64_t rows, int64_t cols, std::vector<float>& mu) {
  mu = column_mean(x, rows, cols);
  std::vector<float> xc(x, x + rows * cols);
  subtract_column_vector(xc.data(), rows, cols, mu.data());
  return xc;
}

}  // namespace

std::vector<float> centered_fprop(const float* x, const float* w, int64_t t, int64_t k, int64_t n,
                                  const FakeQuant& q_x, const FakeQuant& q_w) {
  std::vector<float> mu;
  std::vector<float> xc = centred_copy(x, t, k, mu);
  std::vector<float> wq(w, w + n * k);
  q_x(xc.data(), t, k);   // X rowwise (blocks along K)
  q_w(wq.data(), n, k);   // W rowwise (blocks along K)
  std::vector<float> y = matmul_nt(xc.data(), wq.data(), t, n, k);
  const std::vector<float> corr = fprop_correction(w, n, k, mu.data());
  add_column_vector(y.data(), t, n, corr.data());
  return y;
}

std::vector<float> centered_dgrad(const float* dy, const float* w, int64_t t, int64_t k, int64_t n,
                                  const FakeQuant& q_dy, const FakeQuant& q_w) {
  std::vector<float> nu;
  std::vector<float> dyc = centred_copy(dy, t, n, nu);
  std::vector<float> wt = transpose(w, n, k);  // [K, N]: W columnwise (blocks along N)
  q_dy(dyc.data(), t, n);
  q_w(wt.data(), k, n);
  std::vector<float> dx = matmul_nt(dyc.data(), wt.data(), t, k, n);
  const std::vector<float> corr = dgrad_correction(w, n, k, nu.data());
  add_column_vector(dx.data(), t, k, corr.data());
  return dx;
}

std::vector<float> centered_wgrad(const float* dy, const float* x, int64_t t, int64_t k, int64_t n,
                                  const FakeQuant& q_dy, const FakeQuant& q_x) {
  std::vector<float> nu, mu;
  std::vector<float> dyc = centred_copy(dy, t, n, nu);
  std::vector<float> xc = centred_copy(x, t, k, mu);
  std::vector<float> dyt = transpose(dyc.data(), t, n);  // [N, T]: blocks along T
  std::vector<float> xt = transpose(xc.data(), t, k);    // [K, T]
  q_dy(dyt.data(), n, t);
  q_x(xt.data(), k, t);
  std::vector<float> dw = matmul_nt(dyt.data(), xt.data(), n, k, t);
  add_wgrad_correction(dw.data(), n, k, t, nu.data(), mu.data());
  return dw;
}

}  // namespace nibble
