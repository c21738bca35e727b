// QuantLinear against a naive implementation of each recipe's three GEMMs: the same
// quantized operands (same Philox streams), products and corrections in float64 loops.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "nibble/dtype.hpp"
#include "nibble/nn/linear.hpp"
#include "nibble/philox.hpp"
#include "nibble/quant/centering.hpp"
#include "nibble/quant/rht.hpp"
#include "nibble/quant/spectral.hpp"

using namespace nibble;

namespace {

constexpr int64_t T = 64, K = 96, N = 64;
constexpr uint32_t kId = 9;

std::vector<float> biased(int64_t rows, int64_t cols, uint64_t seed, float bias) {
  std::vector<float> x(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      x[static_cast<size_t>(r * cols + c)] = bias * std::cos(0.7f * static_cast<float>(c)) +
                                             static_cast<float>(philox_normal(seed, 3, static_cast<uint64_t>(r * cols + c)));
  return x;
}

std::vector<float> transposed(const std::vector<float>& a, int64_t rows, int64_t cols) {
  std::vector<float> t(a.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) t[static_cast<size_t>(c * rows + r)] = a[static_cast<size_t>(r * cols + c)];
  return t;
}

void represent(std::vector<float>& a, int64_t rows, int64_t cols, const OperandSpec& o, uint64_t seed, uint32_t stream) {
  if (o.kind == OperandKind::BF16)
    for (float& v : a) v = bf16_to_float(bf16_from_float(v));
  if (o.kind == OperandKind::QUANT) {
    QuantSpec q = o.quant;
    q.seed = seed;
    q.stream = stream;
    quantize_dequantize(a.data(), rows, cols, q, a.data());
  }
}

// C[m][n] = Σ_r A[m][r] B[n][r] in float64
std::vector<double> gemm(const std::vector<float>& a, const std::vector<float>& b, int64_t m, int64_t n, int64_t r) {
  std::vector<double> c(static_cast<size_t>(m * n), 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t l = 0; l < r; ++l) s += static_cast<double>(a[static_cast<size_t>(i * r + l)]) * b[static_cast<size_t>(j * r + l)];
      c[static_cast<size_t>(i * n + j)] = s;
    }
  return c;
}

std::vector<double> colmean(const std::vector<float>& a, int64_t rows, int64_t cols) {
  std::vector<double> m(static_cast<size_t>(cols), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) m[static_cast<size_t>(c)] += a[static_cast<size_t>(r * cols + c)];
  for (double& v : m) v /= static_cast<double>(rows);
  return m;
}

struct Ref {
  std::vector<double> y, dx, dw;
};

// The recipe written out GEMM by GEMM (SPEC §4–5), straight from the definitions.
Ref naive(const std::vector<float>& x, const std::vector<float>& w, const std::vector<float>& dy, const Recipe& rc,
          uint64_t seed, uint64_t step) {
  Ref ref;
  {  // fprop: Y = Q(X_c) Q(W)ᵀ + 1 (W μ)ᵀ
    const GemmSpec& g = rc.fprop;
    std::vector<float> a = x, b = w;
    std::vector<double> mu(static_cast<size_t>(K), 0.0);
    if (g.a.center) {
      const std::vector<float> muf = column_mean(x.data(), T, K);
      for (int64_t k = 0; k < K; ++k) mu[static_cast<size_t>(k)] = muf[static_cast<size_t>(k)];
      for (int64_t t = 0; t < T; ++t)
        for (int64_t k = 0; k < K; ++k) a[static_cast<size_t>(t * K + k)] -= muf[static_cast<size_t>(k)];
    }
    if (g.rht) {
      const auto d = rht_signs(g.rht, seed, philox_stream(0, kId, Role::RhtFprop));
      rht_forward(a.data(), T, K, g.rht, d.data());
      rht_forward(b.data(), N, K, g.rht, d.data());
    }
    represent(a, T, K, g.a, seed, philox_stream(step, kId, Role::FpropX));
    represent(b, N, K, g.b, seed, philox_stream(step, kId, Role::FpropW));
    ref.y = gemm(a, b, T, N, K);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t n = 0; n < N; ++n) {
        double s = 0;
        for (int64_t k = 0; k < K; ++k) s += static_cast<double>(w[static_cast<size_t>(n * K + k)]) * mu[static_cast<size_t>(k)];
        ref.y[static_cast<size_t>(t * N + n)] += s;
      }
  }
  // spectral split of dY shared by dgrad and wgrad
  std::vector<float> resid = dy;
  LowRank lr;
  const bool split = rc.dgrad.a.spectral_rank != 0;
  if (split) {
    SpectralSpec s;
    s.rank = rc.dgrad.a.spectral_rank > 0 ? rc.dgrad.a.spectral_rank : static_cast<int>(std::min<int64_t>(64, N / 16));
    s.power_iters = rc.dgrad.a.power_iters;
    s.seed = seed;
    s.stream = philox_stream(step, kId, Role::Spectral);
    lr = randomized_svd(dy.data(), T, N, s);
    lr.add_to(resid.data(), -1.0);
  }
  {  // dgrad: dX = Q(dY_c) Q(Wᵀ)ᵀ + 1 (Wᵀ ν)ᵀ  [+ U S Vᵀ W]
    const GemmSpec& g = rc.dgrad;
    std::vector<float> a = split ? resid : dy, b = transposed(w, N, K);
    std::vector<double> nu(static_cast<size_t>(N), 0.0);
    if (g.a.center) {
      const std::vector<float> nuf = column_mean(a.data(), T, N);
      for (int64_t n = 0; n < N; ++n) nu[static_cast<size_t>(n)] = nuf[static_cast<size_t>(n)];
      for (int64_t t = 0; t < T; ++t)
        for (int64_t n = 0; n < N; ++n) a[static_cast<size_t>(t * N + n)] -= nuf[static_cast<size_t>(n)];
    }
    if (g.rht) {
      const auto d = rht_signs(g.rht, seed, philox_stream(0, kId, Role::RhtDgrad));
      rht_forward(a.data(), T, N, g.rht, d.data());
      rht_forward(b.data(), K, N, g.rht, d.data());
    }
    represent(a, T, N, g.a, seed, philox_stream(step, kId, Role::DgradDy));
    represent(b, K, N, g.b, seed, philox_stream(step, kId, Role::DgradW));
    ref.dx = gemm(a, b, T, K, N);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t k = 0; k < K; ++k) {
        double s = 0;
        for (int64_t n = 0; n < N; ++n) {
          s += static_cast<double>(w[static_cast<size_t>(n * K + k)]) * nu[static_cast<size_t>(n)];
          if (split) {
            double l = 0;  // (U S Vᵀ)[t][n]
            for (int r = 0; r < lr.rank; ++r)
              l += static_cast<double>(lr.u[static_cast<size_t>(t * lr.rank + r)]) * lr.s[static_cast<size_t>(r)] * lr.v[static_cast<size_t>(n * lr.rank + r)];
            s += l * w[static_cast<size_t>(n * K + k)];
          }
        }
        ref.dx[static_cast<size_t>(t * K + k)] += s;
      }
  }
  {  // wgrad: dW = Q(dY_cᵀ) Q(X_cᵀ)ᵀ + T ν μᵀ  [+ V S Uᵀ X]
    const GemmSpec& g = rc.wgrad;
    const std::vector<float>& src = split ? resid : dy;
    std::vector<float> a = transposed(src, T, N), b = transposed(x, T, K);
    const bool centred = g.a.center || g.b.center;
    const std::vector<double> nu = colmean(src, T, N), mu = colmean(x, T, K);
    auto centre_rows = [](std::vector<float>& m, int64_t rows, int64_t cols) {
      for (int64_t r = 0; r < rows; ++r) {
        double s = 0;
        for (int64_t c = 0; c < cols; ++c) s += m[static_cast<size_t>(r * cols + c)];
        const float mean = static_cast<float>(s / static_cast<double>(cols));
        for (int64_t c = 0; c < cols; ++c) m[static_cast<size_t>(r * cols + c)] -= mean;
      }
    };
    if (g.a.center) centre_rows(a, N, T);
    if (g.b.center) centre_rows(b, K, T);
    if (g.rht) {
      const auto d = rht_signs(g.rht, seed, philox_stream(0, kId, Role::RhtWgrad));
      rht_forward(a.data(), N, T, g.rht, d.data());
      rht_forward(b.data(), K, T, g.rht, d.data());
    }
    represent(a, N, T, g.a, seed, philox_stream(step, kId, Role::WgradDy));
    represent(b, K, T, g.b, seed, philox_stream(step, kId, Role::WgradX));
    ref.dw = gemm(a, b, N, K, T);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k) {
        double s = centred ? static_cast<double>(T) * nu[static_cast<size_t>(n)] * mu[static_cast<size_t>(k)] : 0.0;
        if (split)
          for (int64_t t = 0; t < T; ++t) {
            double l = 0;
            for (int r = 0; r < lr.rank; ++r)
              l += static_cast<double>(lr.u[static_cast<size_t>(t * lr.rank + r)]) * lr.s[static_cast<size_t>(r)] * lr.v[static_cast<size_t>(n * lr.rank + r)];
            s += l * x[static_cast<size_t>(t * K + k)];
          }
        ref.dw[static_cast<size_t>(n * K + k)] += s;
      }
  }
  return ref;
}

void expect_close(const std::vector<float>& got, const std::vector<double>& want, const char* what, const std::string& recipe) {
  double scale = 0, err = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    scale = std::max(scale, std::fabs(want[i]));
    err = std::max(err, std::fabs(got[i] - want[i]));
  }
  EXPECT_LT(err, 2e-5 * scale + 1e-6) << recipe << " " << what << ": max error " << err << " of " << scale;
}

}  // namespace

class NnQuantLinear : public ::testing::TestWithParam<std::string> {};

TEST_P(NnQuantLinear, ThreeGemmsMatchNaiveRecipe) {
  const Recipe rc = Recipe::preset(GetParam());
  const std::vector<float> x = biased(T, K, 1, 3.0f), w = biased(N, K, 2, 0.0f), dy = biased(T, N, 3, 0.5f);
  std::vector<float> wbuf = w, dw(static_cast<size_t>(N * K), 0.0f), y(static_cast<size_t>(T * N)), dx(static_cast<size_t>(T * K));
  QuantLinear<float> lin("test.proj", K, N, kId);
  lin.bind(wbuf.data(), dw.data());
  lin.set_recipe(rc);
  StepContext ctx;
  ctx.seed = 1234;
  ctx.step = 17;
  lin.forward(x.data(), y.data(), T, ctx);
  lin.backward(dy.data(), dx.data(), T, ctx);
  const Ref ref = naive(x, w, dy, rc, ctx.seed, ctx.step);
  expect_close(y, ref.y, "fprop", rc.name);
  expect_close(dx, ref.dx, "dgrad", rc.name);
  expect_close(dw, ref.dw, "wgrad", rc.name);
  // and the 4-bit recipes really quantize: the result differs from the exact product
  if (rc.name != "bf16") {
    const std::vector<double> exact = gemm(x, w, T, N, K);
    double diff = 0;
    for (size_t i = 0; i < exact.size(); ++i) diff = std::max(diff, std::fabs(exact[i] - y[i]));
    EXPECT_GT(diff, 1e-3) << rc.name;
  }
}

INSTANTIATE_TEST_SUITE_P(Presets, NnQuantLinear,
                         ::testing::Values("bf16", "nvfp4", "mxfp4", "nvfp4-mean", "ufp4", "ufp4-mean", "metis"),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (char& c : s) if (c == '-') c = '_';
                           return s;
                         });

TEST(NnQuantLinearStreams, StepChangesSrDrawsButNotRhtSigns) {
  EXPECT_NE(philox_stream(1, 3, Role::DgradDy), philox_stream(2, 3, Role::DgradDy));
  EXPECT_NE(philox_stream(1, 3, Role::DgradDy), philox_stream(1, 4, Role::DgradDy));
  EXPECT_NE(philox_stream(1, 3, Role::DgradDy), philox_stream(1, 3, Role::WgradDy));
  EXPECT_EQ(philox_stream(5, 3, Role::WgradX), (5u << 12) | (3u << 4) | 5u);
}
