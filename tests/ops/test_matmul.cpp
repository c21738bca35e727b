// GEMM: float against float64 references on odd sizes, the exact fp32 FMA chain (every kernel,
// any thread count), the transposed/strided forms, the float64 gradient, transpose.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "nibble/ops/ops.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

using namespace nibble;

namespace {

template <class T>
std::vector<T> random_vec(size_t n, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  std::mt19937_64 rng(seed);
  std::vector<T> x(n);
  for (auto& e : x) e = static_cast<T>(lo + (hi - lo) * static_cast<double>(rng() >> 11) * 0x1.0p-53);
  return x;
}

// op(A)(i, p) and op(B)(p, j) for the storage conventions of ops::gemm.
template <class T>
T a_at(const std::vector<T>& a, bool ta, int64_t lda, int64_t i, int64_t p) {
  return ta ? a[p * lda + i] : a[i * lda + p];
}
template <class T>
T b_at(const std::vector<T>& b, bool tb, int64_t ldb, int64_t p, int64_t j) {
  return tb ? b[j * ldb + p] : b[p * ldb + j];
}

// C = A·Bᵀ in float64 plus the scale Σ|a||b| of each element (for relative errors).
void reference_nt(const std::vector<float>& a, const std::vector<float>& b, std::vector<double>& c,
                  std::vector<double>& mag, int64_t m, int64_t n, int64_t k) {
  c.assign(m * n, 0.0);
  mag.assign(m * n, 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j)
      for (int64_t p = 0; p < k; ++p) {
        c[i * n + j] += double(a[i * k + p]) * double(b[j * k + p]);
        mag[i * n + j] += std::fabs(double(a[i * k + p]) * double(b[j * k + p]));
      }
}

// The documented float semantics: c = fma(a_k, b_k, c) for k = 0..K−1, from 0 or from C.
std::vector<float> fma_chain(const std::vector<float>& a, bool ta, int64_t lda, const std::vector<float>& b, bool tb,
                             int64_t ldb, const std::vector<float>& c0, int64_t ldc, int64_t m, int64_t n, int64_t k,
                             bool acc) {
  std::vector<float> c = c0;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      float s = acc ? c[i * ldc + j] : 0.0f;
      for (int64_t p = 0; p < k; ++p) s = std::fma(a_at(a, ta, lda, i, p), b_at(b, tb, ldb, p, j), s);
      c[i * ldc + j] = s;
    }
  return c;
}

struct Shape {
  int64_t m, n, k;
};
const Shape kOddShapes[] = {{1, 1, 1}, {7, 13, 5}, {33, 65, 17}, {128, 384, 128}, {45, 37, 300}, {130, 70, 520}};

std::vector<std::string> available_kernels() {
  std::vector<std::string> out;
  for (const char* k : {"generic", "avx2", "avx512"})
    if (ops::set_matmul_kernel(k)) out.push_back(k);
  ops::set_matmul_kernel("auto");
  return out;
}

}  // namespace

TEST(OpsMatmul, FloatMatchesFloat64ReferenceOnOddSizes) {
  for (const Shape& s : kOddShapes)
    for (bool acc : {false, true}) {
      const auto a = random_vec<float>(s.m * s.k, 1), b = random_vec<float>(s.n * s.k, 2);
      const auto c0 = random_vec<float>(s.m * s.n, 3);
      std::vector<double> ref, mag;
      reference_nt(a, b, ref, mag, s.m, s.n, s.k);
      std::vector<float> c = c0;
      ops::matmul_nt(a.data(), b.data(), c.data(), s.m, s.n, s.k, acc);
      for (int64_t i = 0; i < s.m * s.n; ++i) {
        const double expect = ref[i] + (acc ? double(c0[i]) : 0.0);
        const double scale = mag[i] + (acc ? std::fabs(double(c0[i])) : 0.0);
        ASSERT_NEAR(c[i], expect, 1e-5 * scale + 1e-30)
            << s.m << "x" << s.n << "x" << s.k << " acc=" << acc << " element " << i;
      }
    }
}

TEST(OpsMatmul, Float64MatchesNaiveLoops) {
  const int64_t m = 19, n = 23, k = 31;
  const auto a = random_vec<double>(m * k, 4), b = random_vec<double>(n * k, 5), c0 = random_vec<double>(m * n, 6);
  for (bool acc : {false, true}) {
    std::vector<double> c = c0;
    ops::matmul_nt(a.data(), b.data(), c.data(), m, n, k, acc);
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double s = 0;
        for (int64_t p = 0; p < k; ++p) s += a[i * k + p] * b[j * k + p];
        ASSERT_NEAR(c[i * n + j], s + (acc ? c0[i * n + j] : 0.0), 1e-13) << i << " " << j;
      }
  }
}

TEST(OpsMatmul, EveryKernelComputesTheExactFmaChain) {
  const auto kernels = available_kernels();
  ASSERT_FALSE(kernels.empty());
  for (const std::string& kn : kernels) {
    ASSERT_TRUE(ops::set_matmul_kernel(kn.c_str()));
    EXPECT_EQ(std::string(ops::matmul_kernel()), kn);
    std::vector<Shape> shapes(std::begin(kOddShapes), std::end(kOddShapes));
    shapes.push_back({260, 515, 300});  // packed A and B panels
    for (const Shape& s : shapes)
      for (bool acc : {false, true}) {
        const auto a = random_vec<float>(s.m * s.k, 7), b = random_vec<float>(s.n * s.k, 8);
        const auto c0 = random_vec<float>(s.m * s.n, 9);
        std::vector<float> c = c0;
        ops::matmul_nt(a.data(), b.data(), c.data(), s.m, s.n, s.k, acc);
        const auto ref = fma_chain(a, false, s.k, b, true, s.k, c0, s.n, s.m, s.n, s.k, acc);
        for (int64_t i = 0; i < s.m * s.n; ++i)
          ASSERT_EQ(c[i], ref[i]) << kn << " " << s.m << "x" << s.n << "x" << s.k << " acc=" << acc << " at " << i;
      }
  }
  ops::set_matmul_kernel("auto");
  EXPECT_FALSE(ops::set_matmul_kernel("no-such-kernel"));
}

TEST(OpsMatmul, SameBitsWithOneAndTwoThreads) {
#ifdef _OPENMP
  const int saved = omp_get_max_threads();
  for (const Shape& s : {Shape{128, 384, 128}, Shape{301, 517, 300}, Shape{64, 2048, 40}})
    for (bool acc : {false, true}) {
      const auto a = random_vec<float>(s.m * s.k, 10), b = random_vec<float>(s.n * s.k, 11);
      const auto c0 = random_vec<float>(s.m * s.n, 12);
      std::vector<float> c1 = c0, c2 = c0;
      omp_set_num_threads(1);
      ops::matmul_nt(a.data(), b.data(), c1.data(), s.m, s.n, s.k, acc);
      omp_set_num_threads(2);
      ops::matmul_nt(a.data(), b.data(), c2.data(), s.m, s.n, s.k, acc);
      for (int64_t i = 0; i < s.m * s.n; ++i) ASSERT_EQ(c1[i], c2[i]) << s.m << "x" << s.n << "x" << s.k << " " << i;
    }
  omp_set_num_threads(saved);
#else
  GTEST_SKIP() << "built without OpenMP";
#endif
}

TEST(OpsMatmul, TransposedAndStridedFormsLeavePaddingAlone) {
  // Small: operands read in place (edge panels packed). Large (k > 256, m, n ≥ 512): packed.
  struct Case {
    Shape s;
    bool ta, tb, acc;
  };
  std::vector<Case> cases;
  for (const Shape& s : {Shape{37, 29, 301}, Shape{37, 70, 301}, Shape{514, 515, 260}})
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        for (bool acc : {false, true})
          if (s.m < 100 || acc) cases.push_back({s, ta, tb, acc});  // the large shape: accumulate only
  for (const Case& cs : cases) {
    const int64_t m = cs.s.m, n = cs.s.n, k = cs.s.k;
    const bool ta = cs.ta, tb = cs.tb, acc = cs.acc;
    const int64_t lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 5, ldc = n + 2;
    const int64_t arows = ta ? k : m, brows = tb ? n : k;
    const auto a = random_vec<float>(arows * lda, 13), b = random_vec<float>(brows * ldb, 14);
    const auto c0 = random_vec<float>(m * ldc, 15);
    std::vector<float> c = c0;
    ops::gemm(ta, tb, m, n, k, a.data(), lda, b.data(), ldb, c.data(), ldc, acc);
    const auto ref = fma_chain(a, ta, lda, b, tb, ldb, c0, ldc, m, n, k, acc);
    for (int64_t i = 0; i < m * ldc; ++i)
      ASSERT_EQ(c[i], ref[i]) << m << "x" << n << "x" << k << " ta=" << ta << " tb=" << tb << " acc=" << acc
                              << " at " << i;
    if (m > 100) continue;
    // float64: the same forms against naive float64 sums (padding columns j ≥ n untouched)
    std::vector<double> ad(a.begin(), a.end()), bd(b.begin(), b.end()), cd(c0.begin(), c0.end());
    ops::gemm(ta, tb, m, n, k, ad.data(), lda, bd.data(), ldb, cd.data(), ldc, acc);
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < ldc; ++j) {
        double sum = (j >= n || acc) ? double(c0[i * ldc + j]) : 0.0;
        if (j < n)
          for (int64_t p = 0; p < k; ++p) sum += a_at(ad, ta, lda, i, p) * b_at(bd, tb, ldb, p, j);
        ASSERT_NEAR(cd[i * ldc + j], sum, 1e-12) << "double ta=" << ta << " tb=" << tb << " " << i << "," << j;
      }
  }
}

TEST(OpsMatmul, EmptyReductionZeroesOrKeeps) {
  std::vector<float> c = {1.0f, 2.0f, 3.0f, 4.0f};
  ops::matmul_nt<float>(nullptr, nullptr, c.data(), 2, 2, 0, true);
  EXPECT_EQ(c, (std::vector<float>{1.0f, 2.0f, 3.0f, 4.0f}));
  ops::matmul_nt<float>(nullptr, nullptr, c.data(), 2, 2, 0, false);
  EXPECT_EQ(c, (std::vector<float>(4, 0.0f)));
}

TEST(OpsMatmul, Float64GradientCheck) {
  // L = Σ (A·Bᵀ) ⊙ R: dA = R·B (gemm NN), dB = Rᵀ·A (gemm TN), as the trainer computes them.
  const int64_t m = 4, n = 3, k = 5;
  auto a = random_vec<double>(m * k, 16), b = random_vec<double>(n * k, 17);
  const auto r = random_vec<double>(m * n, 18);
  auto loss = [&] {
    std::vector<double> c(m * n);
    ops::matmul_nt(a.data(), b.data(), c.data(), m, n, k);
    double l = 0;
    for (int64_t i = 0; i < m * n; ++i) l += c[i] * r[i];
    return l;
  };
  std::vector<double> da(m * k), db(n * k);
  ops::gemm(false, false, m, k, n, r.data(), n, b.data(), k, da.data(), k);
  ops::gemm(true, false, n, k, m, r.data(), n, a.data(), k, db.data(), k);
  for (auto* pr : {&a, &b}) {
    std::vector<double>& x = *pr;
    const std::vector<double>& g = pr == &a ? da : db;
    for (size_t i = 0; i < x.size(); ++i) {
      const double x0 = x[i], h = 1e-6 * std::max(1.0, std::fabs(x0));
      x[i] = x0 + h;
      const double lp = loss();
      x[i] = x0 - h;
      const double lm = loss();
      x[i] = x0;
      ASSERT_NEAR((lp - lm) / (2 * h), g[i], 1e-7 * std::max(1.0, std::fabs(g[i]))) << (pr == &a ? "dA " : "dB ") << i;
    }
  }
}

TEST(OpsMatmul, TransposeOddShapes) {
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 1}, {3, 70}, {65, 33}, {300, 257}}) {
    const auto in = random_vec<float>(rows * cols, 19);
    std::vector<float> out(rows * cols);
    ops::transpose(in.data(), out.data(), rows, cols);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) ASSERT_EQ(out[c * rows + r], in[r * cols + c]) << rows << "x" << cols;
  }
}
