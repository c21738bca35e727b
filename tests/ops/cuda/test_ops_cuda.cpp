// SM90_Ops* : the CUDA transformer ops (src/ops/cuda) against their CPU twins on fresh random
// data. Ops whose arithmetic the GPU reproduces exactly (embedding, RoPE, SwiGLU, AdamW,
// add_inplace) are compared bit for bit; the reductions (RMSNorm, cross-entropy, Σ g²) sum in
// an order of their own and are held to error budgets derived next to each check, and must
// give the same bits on a second run. Outputs are poisoned (NaN) before each run. Skipped, not
// passed, without a GPU.
#include <gtest/gtest.h>

#include "support/gpu.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "core/cuda/check.cuh"
#include "nibble/cuda.hpp"
#include "nibble/error.hpp"
#include "nibble/ops/ops.hpp"
#include "nibble/philox.hpp"
#include "nibble/quant/spectral.hpp"  // philox_normal
#include "ops/cuda/ops_cuda.hpp"

using namespace nibble;
namespace gops = nibble::cuda::ops;

namespace {


// ---- data -------------------------------------------------------------------------------------
std::vector<float> normals(size_t n, uint64_t seed, uint32_t stream, double scale = 1.0, double shift = 0.0) {
  std::vector<float> x(n);
  for (size_t i = 0; i < n; ++i) x[i] = static_cast<float>(shift + scale * philox_normal(seed, stream, i));
  return x;
}
std::vector<int32_t> tokens_in(size_t n, int32_t vocab, uint64_t seed, uint32_t stream) {
  std::vector<int32_t> t(n);
  for (size_t i = 0; i < n; ++i) t[i] = static_cast<int32_t>(philox_word(seed, stream, i) % static_cast<uint32_t>(vocab));
  return t;
}

// ---- device memory ----------------------------------------------------------------------------
// A device array with `offset` leading elements of slack: offset 1 puts the data off the 16-byte
// alignment, which sends the ops down their scalar paths.
template <class T>
class Dev {
 public:
  explicit Dev(size_t n, size_t offset = 0) : n_(n), off_(offset), buf_(n + offset + 1) { poison(); }
  explicit Dev(const std::vector<T>& h, size_t offset = 0) : Dev(h.size(), offset) { put(h); }
  T* get() const { return buf_.get() + off_; }
  size_t size() const { return n_; }
  void put(const std::vector<T>& h) {
    NIBBLE_CHECK(h.size() == n_);
    if (n_) NIBBLE_CUDA_CHECK(cudaMemcpy(get(), h.data(), n_ * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> host() const {
    NIBBLE_CUDA_CHECK(cudaDeviceSynchronize());  // execution errors surface here
    std::vector<T> h(n_);
    if (n_) NIBBLE_CUDA_CHECK(cudaMemcpy(h.data(), get(), n_ * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
  void poison() { NIBBLE_CUDA_CHECK(cudaMemset(buf_.get(), 0xFF, buf_.size() * sizeof(T))); }  // NaN / −1

 private:
  size_t n_, off_;
  cuda::DeviceBuffer<T> buf_;
};

// ---- comparisons ------------------------------------------------------------------------------
template <class T>
::testing::AssertionResult same_bits(const std::vector<T>& got, const std::vector<T>& want) {
  if (got.size() != want.size())
    return ::testing::AssertionFailure() << "sizes " << got.size() << " vs " << want.size();
  if (got.empty() || std::memcmp(got.data(), want.data(), got.size() * sizeof(T)) == 0)
    return ::testing::AssertionSuccess();
  size_t first = 0, count = 0;
  for (size_t i = 0; i < got.size(); ++i)
    if (std::memcmp(&got[i], &want[i], sizeof(T)) != 0) {
      if (count++ == 0) first = i;
    }
  std::ostringstream os;
  os.precision(9);
  os << count << " of " << got.size() << " differ, first at " << first << ": gpu " << got[first] << " cpu "
     << want[first];
  return ::testing::AssertionFailure() << os.str();
}

// Distance in units in the last place (±0 coincide).
int64_t ulps(float a, float b) {
  auto key = [](float x) {
    const int32_t u = std::bit_cast<int32_t>(x);
    return u >= 0 ? static_cast<int64_t>(u) : -static_cast<int64_t>(u & 0x7FFFFFFF);
  };
  const int64_t d = key(a) - key(b);
  return d < 0 ? -d : d;
}

constexpr double kTwoM21 = 0x1p-21, kTwoM23 = 0x1p-23;

}  // namespace

// ---- embedding: bit-exact -----------------------------------------------------------------------

TEST(SM90_Ops, EmbeddingForwardMatchesCpuBitExact) {
  REQUIRE_GPU();
  struct Shape {
    int64_t n, c;
    int32_t vocab;
    size_t off;
  };
  // float4 rows, odd widths (scalar path), many rows, a misaligned table
  for (const Shape s : {Shape{37, 768, 100, 0}, Shape{5, 7, 11, 0}, Shape{300, 64, 3, 0}, Shape{9, 12, 5, 1}}) {
    const auto wte = normals(static_cast<size_t>(s.vocab * s.c), 11, static_cast<uint32_t>(s.c));
    const auto tok = tokens_in(static_cast<size_t>(s.n), s.vocab, 12, static_cast<uint32_t>(s.n));
    std::vector<float> want(static_cast<size_t>(s.n * s.c));
    ops::embedding_forward(tok.data(), wte.data(), want.data(), s.n, s.c);
    Dev<float> dw(wte, s.off), dout(want.size());
    Dev<int32_t> dt(tok);
    gops::embedding_forward(dt.get(), dw.get(), dout.get(), s.n, s.c, nullptr);
    EXPECT_TRUE(same_bits(dout.host(), want)) << "n " << s.n << " c " << s.c;
  }
}

// The CSR plan of the header: unique ids (here in decreasing order, which must not matter), and
// each id's rows in increasing order.
struct EmbeddingPlan {
  std::vector<int32_t> unique, starts, order;
};
EmbeddingPlan make_plan(const std::vector<int32_t>& tok, int32_t vocab) {
  std::vector<std::vector<int32_t>> rows(static_cast<size_t>(vocab));
  for (size_t i = 0; i < tok.size(); ++i) rows[static_cast<size_t>(tok[i])].push_back(static_cast<int32_t>(i));
  EmbeddingPlan p;
  p.starts.push_back(0);
  for (int32_t id = vocab - 1; id >= 0; --id) {
    const auto& r = rows[static_cast<size_t>(id)];
    if (r.empty()) continue;
    p.unique.push_back(id);
    p.order.insert(p.order.end(), r.begin(), r.end());
    p.starts.push_back(static_cast<int32_t>(p.order.size()));
  }
  return p;
}

TEST(SM90_Ops, EmbeddingBackwardRepeatedTokensMatchesCpuBitExact) {
  REQUIRE_GPU();
  struct Shape {
    int64_t n, c;
    int32_t vocab;
  };
  for (const Shape s : {Shape{300, 768, 13}, Shape{64, 7, 5}, Shape{1000, 96, 50304}, Shape{2048, 64, 1}}) {
    auto tok = tokens_in(static_cast<size_t>(s.n), s.vocab, 21, static_cast<uint32_t>(s.c));
    for (size_t i = 0; i < tok.size(); i += 3) tok[i] = s.vocab / 2;  // one very frequent token
    const auto dout = normals(static_cast<size_t>(s.n * s.c), 22, static_cast<uint32_t>(s.n));
    const auto dwte0 = normals(static_cast<size_t>(s.vocab * s.c), 23, static_cast<uint32_t>(s.c), 0.5);
    std::vector<float> want = dwte0;  // accumulates onto a non-zero gradient
    ops::embedding_backward(tok.data(), dout.data(), want.data(), s.n, s.c);
    const EmbeddingPlan plan = make_plan(tok, s.vocab);
    Dev<int32_t> du(plan.unique), ds(plan.starts), dor(plan.order);
    Dev<float> dd(dout), dw(dwte0);
    gops::embedding_backward(du.get(), ds.get(), dor.get(), static_cast<int64_t>(plan.unique.size()), dd.get(), dw.get(),
                             s.c, nullptr);
    EXPECT_TRUE(same_bits(dw.host(), want)) << "n " << s.n << " c " << s.c << " vocab " << s.vocab;
  }
}

// ---- RMSNorm: float64 reductions in another order ------------------------------------------------

TEST(SM90_Ops, RmsNormForwardWithinOneUlpOfRstd) {
  REQUIRE_GPU();
  struct Shape {
    int64_t n, c;
  };
  for (const Shape s : {Shape{64, 768}, Shape{7, 13}, Shape{3, 4096}, Shape{129, 1000}}) {
    const auto x = normals(static_cast<size_t>(s.n * s.c), 31, static_cast<uint32_t>(s.c), 1.5, 0.25);
    const auto w = normals(static_cast<size_t>(s.c), 32, static_cast<uint32_t>(s.c), 0.1, 1.0);
    const float eps = 1e-5f;
    std::vector<float> y(x.size()), rstd(static_cast<size_t>(s.n));
    ops::rmsnorm_forward(x.data(), w.data(), y.data(), rstd.data(), s.n, s.c, eps);
    Dev<float> dx(x), dw(w), dy(x.size()), dr(rstd.size());
    gops::rmsnorm_forward(dx.get(), dw.get(), dy.get(), dr.get(), s.n, s.c, eps, nullptr);
    const auto gy = dy.host(), gr = dr.host();
    // Σx² differs from the CPU's by a reordering of at most c float64 additions (relative
    // ≤ c·2⁻⁵³ ≈ 5e-13), far below a float ulp: rstd = float(1/√(mean + eps)) can only land on
    // the neighbouring float, and only next to a rounding boundary. With equal rstd, y = (x·r)·w
    // is the CPU's arithmetic (same bits); with rstd one ulp off, two roundings add ≤ 2 ulp.
    for (int64_t i = 0; i < s.n; ++i) {
      ASSERT_LE(ulps(gr[i], rstd[i]), 1) << "rstd row " << i << " c " << s.c;
      const bool exact = std::bit_cast<uint32_t>(gr[i]) == std::bit_cast<uint32_t>(rstd[i]);
      for (int64_t j = 0; j < s.c; ++j) {
        const size_t k = static_cast<size_t>(i * s.c + j);
        if (exact) ASSERT_EQ(std::bit_cast<uint32_t>(gy[k]), std::bit_cast<uint32_t>(y[k])) << i << "," << j;
        else ASSERT_LE(ulps(gy[k], y[k]), 3) << i << "," << j;
      }
    }
  }
}

TEST(SM90_Ops, RmsNormBackwardAccumulatesDwAndIsDeterministic) {
  REQUIRE_GPU();
  struct Shape {
    int64_t n, c;
  };
  // one chunk, odd width, several chunks with a short last one, many chunks (the row-chunk
  // count is capped at 512: 20000 rows make 500 chunks of 40)
  for (const Shape s : {Shape{64, 768}, Shape{7, 13}, Shape{300, 256}, Shape{20000, 64}}) {
    const size_t nc = static_cast<size_t>(s.n * s.c);
    const auto x = normals(nc, 41, static_cast<uint32_t>(s.c), 1.0, 0.1);
    const auto w = normals(static_cast<size_t>(s.c), 42, static_cast<uint32_t>(s.c), 0.1, 1.0);
    const auto gy = normals(nc, 43, static_cast<uint32_t>(s.c));
    const auto dw0 = normals(static_cast<size_t>(s.c), 44, static_cast<uint32_t>(s.c), 3.0);
    std::vector<float> y(nc), rstd(static_cast<size_t>(s.n));
    ops::rmsnorm_forward(x.data(), w.data(), y.data(), rstd.data(), s.n, s.c, 1e-5f);
    std::vector<float> dx(nc), dw = dw0;
    ops::rmsnorm_backward(gy.data(), x.data(), w.data(), rstd.data(), dx.data(), dw.data(), s.n, s.c);

    Dev<float> d_x(x), d_w(w), d_r(rstd), d_dy(gy), d_dx(nc), d_dw(dw0);
    Dev<float> part(static_cast<size_t>(gops::rmsnorm_partials_floats(s.n, s.c)));
    gops::rmsnorm_backward(d_dy.get(), d_x.get(), d_w.get(), d_r.get(), d_dx.get(), d_dw.get(), part.get(), s.n, s.c,
                           nullptr);
    const auto got_dx = d_dx.host(), got_dw = d_dw.host();

    // dw = float(dw₀ + Σ dy·x·r): the float64 sums differ by a reordering (≤ n·2⁻⁵³ of Σ|terms|,
    // ~1e-9 here against float ulps ≥ 1e-7), so the one rounding to float lands at most one ulp
    // away.
    for (int64_t j = 0; j < s.c; ++j) ASSERT_LE(ulps(got_dw[j], dw[j]), 1) << "dw " << j << " n " << s.n;
    // dx = fl(fl(fl(r·dy)·w) − fl(x·coef)) with coef = float(r³·Σ dy·w·x / c): the sum's
    // reordering can move coef by one ulp (2⁻²³ relative), which moves x·coef by ≤ 2 ulp and the
    // difference by that plus one rounding: ≤ 2⁻²¹·|x·coef| + 2⁻²³·|dx|.
    for (int64_t i = 0; i < s.n; ++i) {
      double dot = 0.0;
      for (int64_t j = 0; j < s.c; ++j) {
        const size_t k = static_cast<size_t>(i * s.c + j);
        dot += static_cast<double>(gy[k]) * static_cast<double>(w[j]) * static_cast<double>(x[k]);
      }
      const double rd = rstd[i];
      const double coef = static_cast<float>(rd * rd * rd * dot / static_cast<double>(s.c));
      for (int64_t j = 0; j < s.c; ++j) {
        const size_t k = static_cast<size_t>(i * s.c + j);
        const double tol = kTwoM21 * std::fabs(x[k] * coef) + kTwoM23 * std::fabs(dx[k]) + 1e-30;
        ASSERT_LE(std::fabs(static_cast<double>(got_dx[k]) - dx[k]), tol) << "dx " << i << "," << j << " n " << s.n;
      }
    }

    // Determinism, and dx written over dy (the trainer's in-place use): the same bits.
    Dev<float> d_dw2(dw0), d_io(gy);
    part.poison();
    gops::rmsnorm_backward(d_io.get(), d_x.get(), d_w.get(), d_r.get(), d_io.get(), d_dw2.get(), part.get(), s.n, s.c,
                           nullptr);
    EXPECT_TRUE(same_bits(d_dw2.host(), got_dw)) << "dw second run, n " << s.n;
    EXPECT_TRUE(same_bits(d_io.host(), got_dx)) << "dx in place, n " << s.n;
  }
}

// ---- RoPE: bit-exact --------------------------------------------------------------------------------

namespace {
Dev<double> rope_table_on_device(int64_t t, int64_t d, double base) {
  std::vector<double> tab(static_cast<size_t>(2 * t * (d / 2)));
  gops::rope_table(tab.data(), t, d, base);
  return Dev<double>(tab);
}
}  // namespace

TEST(SM90_Ops, RopeContiguousForwardAndInverseMatchCpuBitExact) {
  REQUIRE_GPU();
  struct Shape {
    int64_t b, t, h, d;
    double base;
  };
  // float4 (d/2 = 32), float2 (d/2 = 2) and scalar (d/2 = 3) access
  for (const Shape s : {Shape{2, 5, 3, 64, 10000.0}, Shape{3, 4, 2, 4, 500000.0}, Shape{1, 17, 2, 6, 10000.0},
                        Shape{2, 33, 4, 128, 10000.0}}) {
    const auto x = normals(static_cast<size_t>(s.b * s.t * s.h * s.d), 51, static_cast<uint32_t>(s.d), 2.0);
    const Dev<double> tab = rope_table_on_device(s.t, s.d, s.base);
    for (bool inverse : {false, true}) {
      std::vector<float> want = x;
      if (inverse) ops::rope_backward(want.data(), s.b, s.t, s.h, s.d, s.base);
      else ops::rope_forward(want.data(), s.b, s.t, s.h, s.d, s.base);
      Dev<float> dx(x);
      gops::rope_apply(dx.get(), s.h * s.d, s.b, s.t, s.h, s.d, tab.get(), inverse, nullptr);
      EXPECT_TRUE(same_bits(dx.host(), want)) << "d " << s.d << " inverse " << inverse;
    }
  }
}

TEST(SM90_Ops, RopeStridedHeadsInsideWiderRowsMatchCpuAndLeaveOtherColumns) {
  REQUIRE_GPU();
  struct Case {
    int64_t b, t, hq, hkv, d, pad, col;  // the rotated slice starts at column `col` of each row
    int64_t heads;
  };
  // k inside a fused qkv row (aligned: float4), a slice two floats in (float2), one float in
  // with an odd row stride (scalar)
  for (const Case c : {Case{2, 7, 4, 2, 64, 4, 4 * 64, 2}, Case{1, 5, 2, 1, 8, 2, 2, 2}, Case{2, 3, 2, 2, 16, 1, 1, 3}}) {
    const int64_t ld = (c.hq + 2 * c.hkv) * c.d + c.pad, rows = c.b * c.t;
    const int64_t width = c.heads * c.d;
    ASSERT_LE(c.col + width, ld);
    const auto buf = normals(static_cast<size_t>(rows * ld), 61, static_cast<uint32_t>(ld));
    const Dev<double> tab = rope_table_on_device(c.t, c.d, 10000.0);
    for (bool inverse : {false, true}) {
      // CPU: gather the slice into [B, T, H, D], rotate, scatter back.
      std::vector<float> slice(static_cast<size_t>(rows * width)), want = buf;
      for (int64_t r = 0; r < rows; ++r)
        std::memcpy(&slice[static_cast<size_t>(r * width)], &buf[static_cast<size_t>(r * ld + c.col)],
                    static_cast<size_t>(width) * sizeof(float));
      if (inverse) ops::rope_backward(slice.data(), c.b, c.t, c.heads, c.d, 10000.0);
      else ops::rope_forward(slice.data(), c.b, c.t, c.heads, c.d, 10000.0);
      for (int64_t r = 0; r < rows; ++r)
        std::memcpy(&want[static_cast<size_t>(r * ld + c.col)], &slice[static_cast<size_t>(r * width)],
                    static_cast<size_t>(width) * sizeof(float));
      Dev<float> dbuf(buf);
      gops::rope_apply(dbuf.get() + c.col, ld, c.b, c.t, c.heads, c.d, tab.get(), inverse, nullptr);
      // the whole buffer: rotated slice and untouched columns alike
      EXPECT_TRUE(same_bits(dbuf.host(), want)) << "ld " << ld << " col " << c.col << " inverse " << inverse;
    }
  }
}

TEST(SM90_Ops, RopeRejectsOddHeadDimension) {
  REQUIRE_GPU();
  std::vector<double> tab(16);
  EXPECT_THROW(gops::rope_table(tab.data(), 2, 5, 10000.0), Error);
  EXPECT_THROW(gops::rope_apply(static_cast<float*>(nullptr), 10, 1, 2, 2, 5, nullptr, false, nullptr), Error);
  EXPECT_THROW(gops::rope_apply(static_cast<float*>(nullptr), 10, 1, 2, 2, 8, nullptr, false, nullptr), Error);  // ld < h·d
}

// ---- SwiGLU: bit-exact ------------------------------------------------------------------------------

TEST(SM90_Ops, SwigluForwardBackwardMatchCpuBitExact) {
  REQUIRE_GPU();
  struct Shape {
    int64_t n, f;
  };
  for (const Shape s : {Shape{33, 1024}, Shape{5, 7}, Shape{2, 4100}, Shape{1, 1}}) {
    const size_t nf = static_cast<size_t>(s.n * s.f);
    auto gu = normals(2 * nf, 71, static_cast<uint32_t>(s.f), 4.0);
    // the exponential's clamps, its subnormal-scale region, signed zeros, saturated σ
    const float special[] = {0.0f, -0.0f, 86.0f, -86.0f, 87.5f, -87.5f, 88.8f, -88.8f, 100.0f, -100.0f,
                             1e-3f, -1e-3f, 1e30f, -1e30f, 15.0f, -15.0f, 0.5f, -0.5f};
    for (size_t i = 0; i < gu.size(); i += 5) gu[i] = special[(i / 5) % (sizeof special / sizeof special[0])];
    const auto dout = normals(nf, 72, static_cast<uint32_t>(s.f));
    std::vector<float> want(nf), want_dgu(2 * nf);
    for (int64_t r = 0; r < s.n; ++r) {
      const float* g = &gu[static_cast<size_t>(r * 2 * s.f)];
      float* dg = &want_dgu[static_cast<size_t>(r * 2 * s.f)];
      ops::swiglu_forward(g, g + s.f, &want[static_cast<size_t>(r * s.f)], s.f);
      ops::swiglu_backward(&dout[static_cast<size_t>(r * s.f)], g, g + s.f, dg, dg + s.f, s.f);
    }
    Dev<float> dgu(gu), dout_d(dout), out(nf), dgrad(2 * nf);
    gops::swiglu_forward(dgu.get(), out.get(), s.n, s.f, nullptr);
    EXPECT_TRUE(same_bits(out.host(), want)) << "forward n " << s.n << " f " << s.f;
    gops::swiglu_backward(dout_d.get(), dgu.get(), dgrad.get(), s.n, s.f, nullptr);
    EXPECT_TRUE(same_bits(dgrad.host(), want_dgu)) << "backward n " << s.n << " f " << s.f;
    gops::swiglu_backward(dout_d.get(), dgu.get(), dgu.get(), s.n, s.f, nullptr);  // over gu
    EXPECT_TRUE(same_bits(dgu.host(), want_dgu)) << "backward in place n " << s.n << " f " << s.f;
  }
}

// ---- cross-entropy: the float64 row sums in another order -----------------------------------------

TEST(SM90_Ops, CrossEntropyMatchesCpuWithIgnoredRowsAndIsDeterministic) {
  REQUIRE_GPU();
  struct Case {
    int64_t n, v;
    std::vector<int64_t> ignored;
  };
  const std::vector<Case> cases = {{16, 50304, {1, 7, 15}}, {7, 13, {0}}, {5, 1001, {}}, {40, 96, {3, 4, 5, 39}},
                                   {3, 8, {0, 1, 2}}};
  for (const Case& c : cases) {
    const size_t nv = static_cast<size_t>(c.n * c.v);
    auto logits = normals(nv, 81, static_cast<uint32_t>(c.v), 3.0);
    if (c.n > 2)  // a peaked row: large exponent range, clamped exponentials
      for (int64_t j = 0; j < c.v; ++j) logits[static_cast<size_t>(2 * c.v + j)] *= 30.0f;
    auto tg = tokens_in(static_cast<size_t>(c.n), static_cast<int32_t>(c.v), 82, static_cast<uint32_t>(c.v));
    for (int64_t i : c.ignored) tg[static_cast<size_t>(i)] = -1;
    const int64_t n_valid = c.n - static_cast<int64_t>(c.ignored.size());
    std::vector<float> want(nv);
    const double want_loss = ops::cross_entropy(logits.data(), tg.data(), want.data(), c.n, c.v);

    Dev<float> d_log(logits);
    Dev<int32_t> d_tg(tg);
    Dev<double> row_loss(static_cast<size_t>(c.n)), loss(1);
    gops::cross_entropy(d_log.get(), d_tg.get(), c.n, c.v, row_loss.get(), loss.get(), nullptr);
    const auto got = d_log.host();
    const double got_loss = loss.host()[0];

    // Loss: the row's Σ exp is the same set of float64-exact terms summed in another order. The
    // CPU's longest chain is v/8 additions, the GPU's ~v/1024 + 37, so the two sums differ by at
    // most (v/8 + 40)·2⁻⁵³ relative (7e-13 at v = 50304); log turns that into an absolute error,
    // plus an ulp of CUDA's log (~2e-15), and the mean of rows adds roundings of ~1e-15.
    if (n_valid == 0) {
      EXPECT_EQ(got_loss, 0.0);
    }
    EXPECT_NEAR(got_loss, want_loss, 2e-12) << "n " << c.n << " v " << c.v;

    // dlogits: exp_f32 gives the same e; scale = float(inv_n / Σ) can move by one ulp when Σ
    // does, so e·scale is within 2 ulp; the target's e·scale − float(inv_n) within
    // 2 ulp(e·scale) + 1 ulp of the result ≤ 2⁻²⁰·inv_n. Ignored rows are exactly zero.
    const double inv_n = n_valid > 0 ? 1.0 / static_cast<double>(n_valid) : 0.0;
    int64_t exact_rows = 0;
    for (int64_t i = 0; i < c.n; ++i) {
      const size_t r0 = static_cast<size_t>(i * c.v);
      const bool exact = std::memcmp(&got[r0], &want[r0], static_cast<size_t>(c.v) * sizeof(float)) == 0;
      exact_rows += exact;
      if (tg[static_cast<size_t>(i)] == -1) {
        for (int64_t j = 0; j < c.v; ++j) ASSERT_EQ(std::bit_cast<uint32_t>(got[r0 + static_cast<size_t>(j)]), 0u);
        continue;
      }
      if (exact) continue;
      for (int64_t j = 0; j < c.v; ++j) {
        const size_t k = r0 + static_cast<size_t>(j);
        if (j == tg[static_cast<size_t>(i)])
          ASSERT_LE(std::fabs(static_cast<double>(got[k]) - want[k]), 0x1p-20 * inv_n) << "target row " << i;
        else
          ASSERT_LE(ulps(got[k], want[k]), 2) << "row " << i << " col " << j;
      }
    }
    RecordProperty("exact_rows_v" + std::to_string(c.v), static_cast<int>(exact_rows));

    // Determinism: a second run on the same logits gives the same bits.
    Dev<float> d_log2(logits);
    gops::cross_entropy(d_log2.get(), d_tg.get(), c.n, c.v, row_loss.get(), loss.get(), nullptr);
    EXPECT_TRUE(same_bits(d_log2.host(), got)) << "second run, v " << c.v;
    EXPECT_EQ(std::bit_cast<uint64_t>(loss.host()[0]), std::bit_cast<uint64_t>(got_loss));

    // The loss-only variant: the same loss bits, logits untouched.
    Dev<float> d_log3(logits);
    const std::vector<double> rows_first = row_loss.host();
    gops::cross_entropy_loss(d_log3.get(), d_tg.get(), c.n, c.v, row_loss.get(), loss.get(), nullptr);
    EXPECT_TRUE(same_bits(d_log3.host(), logits)) << "logits changed, v " << c.v;
    EXPECT_EQ(std::bit_cast<uint64_t>(loss.host()[0]), std::bit_cast<uint64_t>(got_loss));
    EXPECT_TRUE(same_bits(row_loss.host(), rows_first));
  }
}

// ---- residual: bit-exact ----------------------------------------------------------------------------

TEST(SM90_Ops, AddInplaceMatchesCpuBitExact) {
  REQUIRE_GPU();
  for (size_t n : {size_t{1}, size_t{3}, size_t{1000003}})
    for (size_t off : {size_t{0}, size_t{1}}) {
      const auto y = normals(n, 91, static_cast<uint32_t>(n)), x = normals(n, 92, static_cast<uint32_t>(n));
      std::vector<float> want = y;
      ops::add_inplace(want.data(), x.data(), static_cast<int64_t>(n));
      Dev<float> dy(y, off), dx(x);
      gops::add_inplace(dy.get(), dx.get(), static_cast<int64_t>(n), nullptr);
      EXPECT_TRUE(same_bits(dy.host(), want)) << "n " << n << " offset " << off;
    }
}

// ---- global norm: float64 in another order -----------------------------------------------------------

TEST(SM90_Ops, GlobalSumsqMatchesCpuNormAndIsDeterministic) {
  REQUIRE_GPU();
  Dev<double> partials(static_cast<size_t>(gops::global_norm_partials())), sumsq(1);
  for (size_t n : {size_t{0}, size_t{1}, size_t{7}, size_t{1000003}, size_t{5000000}})
    for (size_t off : {size_t{0}, size_t{1}}) {
      const auto g = normals(n, 101, static_cast<uint32_t>(n), 0.01);
      const float* bufs[1] = {g.data()};
      const int64_t sizes[1] = {static_cast<int64_t>(n)};
      const double norm = ops::global_norm(bufs, sizes, 1);
      Dev<float> dg(g, off);
      gops::global_sumsq(dg.get(), static_cast<int64_t>(n), partials.get(), sumsq.get(), nullptr);
      const double got = sumsq.host()[0];
      // All terms are positive float64-exact squares: each order's relative error is at most its
      // longest chain of additions times 2⁻⁵³ — the CPU's 2¹⁶/8 per lane + 3 + n/2¹⁶ chunks
      // (≤ 9.2e-13 here), the GPU's ~n/2¹⁸ per thread + 45 — so within 2e-12 of each other.
      if (n == 0) {
        EXPECT_EQ(got, 0.0);
      }
      EXPECT_LE(std::fabs(got - norm * norm), 2e-12 * norm * norm + 1e-300) << "n " << n << " offset " << off;
      gops::global_sumsq(dg.get(), static_cast<int64_t>(n), partials.get(), sumsq.get(), nullptr);
      EXPECT_EQ(std::bit_cast<uint64_t>(sumsq.host()[0]), std::bit_cast<uint64_t>(got)) << "second run, n " << n;
    }
}

// ---- AdamW: bit-exact ---------------------------------------------------------------------------------

TEST(SM90_Ops, AdamwChunksWithDecayAndClipMatchCpuBitExact) {
  REQUIRE_GPU();
  // Chunks at odd offsets and lengths (scalar heads and tails around the float4 body), with a
  // gap between two of them that no chunk covers.
  const std::vector<int32_t> len = {1001, 4096, 7, 65539, 3, 20000, 1};
  const std::vector<uint8_t> decay = {1, 0, 1, 0, 1, 1, 0};
  std::vector<int64_t> start;
  int64_t n = 0;
  for (size_t i = 0; i < len.size(); ++i) {
    if (i == 4) n += 5;  // the gap
    start.push_back(n);
    n += len[i];
  }
  const float lr = 3e-4f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, wd = 0.1f;
  for (size_t off : {size_t{0}, size_t{1}}) {
    std::vector<float> p = normals(static_cast<size_t>(n), 111, 0, 0.02);
    std::vector<float> m = normals(static_cast<size_t>(n), 111, 1, 0.01);
    std::vector<float> v = normals(static_cast<size_t>(n), 111, 2, 0.01);
    for (float& e : v) e *= e;
    Dev<float> dp(p, off), dm(m, off), dv(v, off), dg(static_cast<size_t>(n), off);
    Dev<int64_t> ds(start);
    Dev<int32_t> dl(len);
    Dev<uint8_t> dd(decay);
    gops::AdamChunks chunks;
    chunks.start = ds.get();
    chunks.len = dl.get();
    chunks.decay = dd.get();
    chunks.count = static_cast<int64_t>(len.size());
    const float scales[] = {0.37f, 1.0f, 2.5f, 0.001f};
    for (int64_t t = 1; t <= 4; ++t) {
      const float scale = scales[t - 1];
      const auto g = normals(static_cast<size_t>(n), 112, static_cast<uint32_t>(t));
      std::vector<float> gs = g;
      ops::scale_inplace(gs.data(), n, scale);
      for (size_t i = 0; i < len.size(); ++i)
        ops::adamw_update(p.data() + start[i], gs.data() + start[i], m.data() + start[i], v.data() + start[i], len[i], lr,
                          b1, b2, eps, decay[i] ? wd : 0.0f, t);
      dg.put(g);
      gops::adamw_update(dp.get(), dg.get(), dm.get(), dv.get(), chunks, lr, b1, b2, eps, wd, t, scale, nullptr);
      EXPECT_TRUE(same_bits(dp.host(), p)) << "p step " << t << " offset " << off;
      EXPECT_TRUE(same_bits(dm.host(), m)) << "m step " << t << " offset " << off;
      EXPECT_TRUE(same_bits(dv.host(), v)) << "v step " << t << " offset " << off;
      EXPECT_TRUE(same_bits(dg.host(), g)) << "g modified, step " << t;
    }
  }
}

TEST(SM90_Ops, AdamwRejectsStepZero) {
  REQUIRE_GPU();
  gops::AdamChunks none;
  none.count = 1;
  EXPECT_THROW(gops::adamw_update(nullptr, nullptr, nullptr, nullptr, none, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.0f, 0, 1.0f,
                                  nullptr),
               Error);
}
