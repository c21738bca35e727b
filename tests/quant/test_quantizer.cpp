// Block quantizers (SPEC §3) on hand-computed examples, edge cases and properties.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "nibble/error.hpp"
#include "nibble/fp8.hpp"
#include "nibble/philox.hpp"
#include "nibble/quant/quantizer.hpp"

using namespace nibble;

namespace {

std::vector<float> random_matrix(int64_t rows, int64_t cols, uint64_t seed, float scale = 1.0f) {
  std::vector<float> x(static_cast<size_t>(rows * cols));
  for (size_t i = 0; i < x.size(); ++i) {
    const float u = philox_uniform(seed, 99, i), v = philox_uniform(seed, 98, i);
    // heavy-ish tails: a uniform times an occasional large factor
    x[i] = scale * (2 * u - 1) * (v < 0.02f ? 20.0f : 1.0f);
  }
  return x;
}

QuantSpec spec(Format f) { return QuantSpec::for_format(f); }

}  // namespace

TEST(QuantNvfp4, HandComputedTwoBlocks) {
  // Block 0 holds the tensor amax A = 2688, so S_enc = 2688·6/... = 448·6/2688 = 1 and
  // s_0 = e4m3(min(2688·fl(1/6), 448)) = 448: elements are x/448 rounded on the e2m1 grid.
  // Block 1 has amax 1: s_1 = e4m3(fl(1/6)) = 0.171875 (byte 0x23), e_1 = 1/0.171875.
  std::vector<float> x(32, 0.0f);
  const float b0[] = {2688, -1344, 672, 224, 100, -50, 0, 1000};
  for (int i = 0; i < 8; ++i) x[static_cast<size_t>(i)] = b0[i];
  x[16] = 1.0f;
  x[17] = 0.5f;
  x[18] = -0.25f;
  x[19] = 0.05f;
  const QuantizedMatrix q = quantize(x.data(), 1, 32, spec(Format::NVFP4));
  EXPECT_EQ(q.tensor_amax, 2688.0f);
  EXPECT_EQ(q.tensor_scale, 1.0f);
  ASSERT_EQ(q.scales.size(), 2u);
  EXPECT_EQ(q.scales[0], 0x7e);  // 448
  EXPECT_EQ(q.scales[1], 0x23);  // 0.171875
  // codes: 6 -> 7, -3 -> 0xD, 1.5 -> 3, 0.5 -> 1, 0.223 -> 0, -0.11 -> +0, 0 -> 0, 2.23 -> 2 (idx 4)
  const uint8_t want0[] = {0x7, 0xD, 0x3, 0x1, 0x0, 0x0, 0x0, 0x4};
  for (int i = 0; i < 8; ++i) EXPECT_EQ(q.code(0, i), want0[i]) << i;
  // 1·5.818 -> 6 (idx 7), 0.5·5.818 = 2.91 -> 3 (idx 5), -1.45 -> -1.5 (0xB), 0.29 -> 0.5 (idx 1)
  EXPECT_EQ(q.code(0, 16), 0x7);
  EXPECT_EQ(q.code(0, 17), 0x5);
  EXPECT_EQ(q.code(0, 18), 0xB);
  EXPECT_EQ(q.code(0, 19), 0x1);
  const std::vector<float> y = dequantize(q);
  const float want_y0[] = {2688, -1344, 672, 224, 0, 0, 0, 896};
  for (int i = 0; i < 8; ++i) EXPECT_EQ(y[static_cast<size_t>(i)], want_y0[i]) << i;
  EXPECT_EQ(y[16], 1.03125f);     // 6 · 0.171875
  EXPECT_EQ(y[17], 0.515625f);    // 3 · 0.171875
  EXPECT_EQ(y[18], -0.2578125f);  // -1.5 · 0.171875
  EXPECT_EQ(y[19], 0.0859375f);   // 0.5 · 0.171875
}

TEST(QuantNvfp4, TensorScaleFollowsSpecFormula) {
  // A = 3: S_enc = fl(2688/3) = 896, S_dec = fl(1/896); every step as the SPEC writes it.
  std::vector<float> x(16, 0.0f);
  x[0] = 3.0f;
  x[1] = -1.0f;
  x[2] = 0.4f;
  const QuantizedMatrix q = quantize(x.data(), 1, 16, spec(Format::NVFP4));
  const float s_enc = 2688.0f / 3.0f, s_dec = 1.0f / s_enc;
  EXPECT_EQ(q.tensor_scale, s_dec);
  const uint8_t sb = e4m3_encode(std::fmin(3.0f * (s_enc * (1.0f / 6.0f)), 448.0f));
  EXPECT_EQ(q.scales[0], sb);
  EXPECT_EQ(sb, 0x7e);
  const float e_b = std::fmin(1.0f / (448.0f * s_dec), 3.4028234664e38f);
  const std::vector<float> y = dequantize(q);
  // 3·e_b ≈ 6 -> 6, -1·e_b ≈ -2 -> -2, 0.4·e_b ≈ 0.8 -> 1
  EXPECT_EQ(y[0], (6.0f * 448.0f) * s_dec);
  EXPECT_EQ(y[1], (-2.0f * 448.0f) * s_dec);
  EXPECT_EQ(y[2], (1.0f * 448.0f) * s_dec);
  EXPECT_NEAR(0.4f * e_b, 0.8f, 1e-5);
}

TEST(QuantInt4, HandComputedTwoBlocks) {
  // A = 3136 = 448·7: S_enc = 1, block 0 scale 448; block 1 amax 1: s = e4m3(fl(1/7)) =
  // 0.140625 (byte 0x21), e = 1/0.140625 = 7.11.
  std::vector<float> x(32, 0.0f);
  x[0] = 3136;
  x[1] = 1500;    // 3.35 -> 3
  x[2] = -2240;   // -5
  x[3] = 100;     // 0.22 -> 0
  x[16] = 1.0f;   // 7.11 -> clamp 7
  x[17] = 0.5f;   // 3.56 -> 4
  x[18] = -0.3f;  // -2.13 -> -2
  const QuantizedMatrix q = quantize(x.data(), 1, 32, spec(Format::INT4));
  EXPECT_EQ(q.tensor_scale, 1.0f);
  EXPECT_EQ(q.scales[0], 0x7e);
  EXPECT_EQ(q.scales[1], 0x21);
  EXPECT_EQ(q.code(0, 0), 0x7);
  EXPECT_EQ(q.code(0, 1), 0x3);
  EXPECT_EQ(q.code(0, 2), 0xB);  // -5 in two's complement
  EXPECT_EQ(q.code(0, 3), 0x0);
  EXPECT_EQ(q.code(0, 18), 0xE);  // -2
  const std::vector<float> y = dequantize(q);
  EXPECT_EQ(y[0], 3136.0f);
  EXPECT_EQ(y[1], 1344.0f);
  EXPECT_EQ(y[2], -2240.0f);
  EXPECT_EQ(y[3], 0.0f);
  EXPECT_EQ(y[16], 0.984375f);
  EXPECT_EQ(y[17], 0.5625f);
  EXPECT_EQ(y[18], -0.28125f);
}

TEST(QuantMxfp4, OcpAndRceilScales) {
  // One 32-block per row. Row amax -> ocp e = floor(log2 a) - 2, rceil e = ceil(log2(a/6)).
  struct Case { float amax; int e_ocp; int e_rceil; };
  const Case cases[] = {{5.0f, 0, 0}, {7.0f, 0, 1}, {6.0f, 0, 0}, {12.0f, 1, 1}, {0.3f, -4, -4},
                        {1.0f, -2, -2}, {0.0f, -127, -127}};
  const int rows = sizeof(cases) / sizeof(cases[0]);
  std::vector<float> x(static_cast<size_t>(rows * 32), 0.0f);
  for (int r = 0; r < rows; ++r) x[static_cast<size_t>(r * 32)] = cases[r].amax;
  QuantSpec ocp = spec(Format::MXFP4), rceil = ocp;
  rceil.scale_rule = ScaleRule::RCEIL;
  const QuantizedMatrix qo = quantize(x.data(), rows, 32, ocp);
  const QuantizedMatrix qr = quantize(x.data(), rows, 32, rceil);
  for (int r = 0; r < rows; ++r) {
    EXPECT_EQ(qo.scales[static_cast<size_t>(r)], cases[r].e_ocp + 127) << "ocp amax " << cases[r].amax;
    EXPECT_EQ(qr.scales[static_cast<size_t>(r)], cases[r].e_rceil + 127) << "rceil amax " << cases[r].amax;
  }
  const std::vector<float> yo = dequantize(qo), yr = dequantize(qr);
  EXPECT_EQ(yo[0], 4.0f);       // 5 is the 4/6 tie -> 4 (even index)
  EXPECT_EQ(yo[32], 6.0f);      // 7 clips to 6 under ocp
  EXPECT_EQ(yr[32], 8.0f);      // rceil: 7/2 = 3.5 -> tie -> 4, times 2
  EXPECT_EQ(yo[96], 12.0f);
  EXPECT_EQ(yo[128], 0.25f);    // 0.3·16 = 4.8 -> 4, /16
  EXPECT_EQ(yo[6 * 32], 0.0f);
  EXPECT_EQ(qo.tensor_scale, 1.0f);
}

TEST(QuantMxfp4, SubnormalAndHugeBlocks) {
  std::vector<float> x(64, 0.0f);
  x[0] = std::ldexp(1.0f, -140);  // subnormal float: floor(log2) = -140 -> e clamps to -127
  x[32] = 3e38f;                  // floor(log2) = 127 -> e = 125
  const QuantizedMatrix q = quantize(x.data(), 2, 32, spec(Format::MXFP4));
  EXPECT_EQ(q.scales[0], 0);
  EXPECT_EQ(q.scales[1], 125 + 127);
  const std::vector<float> y = dequantize(q);
  EXPECT_EQ(y[0], 0.0f);  // 2^-140 / 2^-127 = 2^-13 rounds to 0
  EXPECT_TRUE(std::isfinite(y[32]));
  EXPECT_NEAR(y[32] / 3e38f, 1.0, 0.35);
}

TEST(QuantEdge, AllZeroTensorAndBlocks) {
  for (Format f : {Format::NVFP4, Format::MXFP4, Format::INT4}) {
    std::vector<float> x(64, 0.0f), y(64, 1.0f);
    quantize_dequantize(x.data(), 2, 32, spec(f), y.data());
    for (float v : y) EXPECT_EQ(v, 0.0f);
    const QuantizedMatrix q = quantize(x.data(), 2, 32, spec(f));
    for (uint8_t c : q.codes) EXPECT_EQ(c, 0);
    // one non-zero block, one zero block
    x[0] = 1.0f;
    const std::vector<float> z = dequantize(quantize(x.data(), 2, 32, spec(f)));
    EXPECT_GT(z[0], 0.0f);
    for (size_t i = 32; i < 64; ++i) EXPECT_EQ(z[i], 0.0f);
  }
}

TEST(QuantEdge, TinyBlockUnderLargeTensorScaleGivesZeroScale) {
  // A block whose amax·S_enc/6 is below half the smallest e4m3 subnormal (2^-10) gets
  // s_b = 0 and e_b = 0: its elements quantize to zero, never NaN.
  std::vector<float> x(32, 0.0f);
  x[0] = 1000.0f;
  x[16] = 1e-5f;
  const std::vector<float> y = dequantize(quantize(x.data(), 1, 32, spec(Format::NVFP4)));
  EXPECT_EQ(y[16], 0.0f);
  EXPECT_EQ(y[0], 1000.0f);
}

TEST(QuantEdge, RejectsBadShapesAndNonFinite) {
  std::vector<float> x(48, 1.0f);
  EXPECT_THROW(quantize(x.data(), 1, 48, spec(Format::MXFP4)), Error);  // 48 % 32
  QuantSpec t = spec(Format::NVFP4);
  t.tile2d = true;
  EXPECT_THROW(quantize(x.data(), 3, 16, t), Error);  // rows % 16
  QuantSpec b = spec(Format::NVFP4);
  b.block = 8;
  EXPECT_THROW(quantize(x.data(), 3, 16, b), Error);
  x[5] = NAN;
  try {
    quantize(x.data(), 3, 16, spec(Format::NVFP4));
    FAIL() << "NaN accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("index 5"), std::string::npos) << e.what();
  }
}

TEST(QuantProperties, FusedEqualsPackedRoundTripBitExact) {
  const std::vector<float> x = random_matrix(32, 64, 7, 3.0f);
  for (Format f : {Format::NVFP4, Format::MXFP4, Format::INT4})
    for (int block : {16, 32})
      for (bool tile : {false, true})
        for (Rounding rnd : {Rounding::RNE, Rounding::SR}) {
          QuantSpec s = spec(f);
          s.block = block;
          s.tile2d = tile;
          s.rounding = rnd;
          s.seed = 11;
          std::vector<float> fused(x.size());
          quantize_dequantize(x.data(), 32, 64, s, fused.data());
          const std::vector<float> unpacked = dequantize(quantize(x.data(), 32, 64, s));
          for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(fused[i], unpacked[i]) << i;
        }
}

TEST(QuantProperties, ErrorIsBoundedByHalfAStep) {
  // RNE error per element is at most half the largest grid gap times the block scale
  // (gap 2 for e2m1 between 4 and 6, 1 for int4), plus the clipping of mxfp4-ocp.
  const std::vector<float> x = random_matrix(16, 64, 3);
  for (Format f : {Format::NVFP4, Format::INT4}) {
    const QuantizedMatrix q = quantize(x.data(), 16, 64, spec(f));
    const std::vector<float> y = dequantize(q);
    const float gap = f == Format::INT4 ? 1.0f : 2.0f;
    for (int64_t r = 0; r < 16; ++r)
      for (int64_t c = 0; c < 64; ++c) {
        const float s = e4m3_decode(q.scale_byte(r, c)) * q.tensor_scale;
        ASSERT_LE(std::fabs(y[static_cast<size_t>(r * 64 + c)] - x[static_cast<size_t>(r * 64 + c)]),
                  0.5f * gap * s * 1.0001f + 1e-12f);
      }
  }
}

TEST(QuantProperties, Tile2dRowwiseAndColumnwiseCopiesAgree) {
  // With 16×16 tiles, quantizing W and quantizing Wᵀ give transposed numbers (RNE).
  const int64_t n = 32, k = 48;
  const std::vector<float> w = random_matrix(n, k, 5);
  std::vector<float> wt(w.size());
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < k; ++j) wt[static_cast<size_t>(j * n + i)] = w[static_cast<size_t>(i * k + j)];
  QuantSpec s = spec(Format::NVFP4);
  s.tile2d = true;
  std::vector<float> qw(w.size()), qwt(w.size());
  quantize_dequantize(w.data(), n, k, s, qw.data());
  quantize_dequantize(wt.data(), k, n, s, qwt.data());
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < k; ++j)
      ASSERT_EQ(qw[static_cast<size_t>(i * k + j)], qwt[static_cast<size_t>(j * n + i)]);
  // and the 1×16 quantizer does not have this property on the same data
  s.tile2d = false;
  quantize_dequantize(w.data(), n, k, s, qw.data());
  quantize_dequantize(wt.data(), k, n, s, qwt.data());
  int differ = 0;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < k; ++j) differ += qw[static_cast<size_t>(i * k + j)] != qwt[static_cast<size_t>(j * n + i)];
  EXPECT_GT(differ, 0);
}

TEST(QuantSR, ReproduciblePerSeedAndStream) {
  const std::vector<float> x = random_matrix(16, 32, 1);
  QuantSpec s = spec(Format::NVFP4);
  s.rounding = Rounding::SR;
  s.seed = 42;
  const QuantizedMatrix a = quantize(x.data(), 16, 32, s), b = quantize(x.data(), 16, 32, s);
  EXPECT_EQ(a.codes, b.codes);
  s.seed = 43;
  EXPECT_NE(quantize(x.data(), 16, 32, s).codes, a.codes);
  s.seed = 42;
  s.stream = 1;
  EXPECT_NE(quantize(x.data(), 16, 32, s).codes, a.codes);
}

TEST(QuantSR, ElementUsesPhiloxOfItsFlatIndex) {
  // Element (r, c) of a [rows, cols] matrix draws u from Philox element r·cols + c.
  std::vector<float> x(32, 0.0f);
  x[0] = 6.0f;
  x[21] = 2.25f;  // p = 0.25 between 2 and 3 (block amax 2.25 -> scale makes 2.25 map to 6)
  QuantSpec s = spec(Format::INT4);
  s.rounding = Rounding::SR;
  for (uint64_t seed = 0; seed < 64; ++seed) {
    s.seed = seed;
    const QuantizedMatrix q = quantize(x.data(), 2, 16, s);
    // Recompute element 21 by hand from the spec formulas.
    const float s_enc = 3136.0f / 6.0f, s_dec = 1.0f / s_enc;
    const float sb = e4m3_decode(e4m3_encode(std::fmin(2.25f * (s_enc * (1.0f / 7.0f)), 448.0f)));
    const float e_b = 1.0f / (sb * s_dec);
    const float v = std::fmin(2.25f * e_b, 7.0f);
    const float lo = std::floor(v);
    const float u = philox_uniform(seed, 0, 21);
    const float want = (u < v - lo) ? lo + 1 : lo;
    EXPECT_EQ(grid_decode(Grid::INT4, q.code(1, 5)), want) << "seed " << seed;
  }
}

TEST(QuantSR, UnbiasedOverSeeds) {
  // E[Q_SR(x)] = x inside the grid range: the mean over n seeds must be within 5 standard
  // errors, the per-element variance being at most (step/2)^2.
  const std::vector<float> x = random_matrix(1, 32, 9);
  QuantSpec s = spec(Format::NVFP4);
  s.rounding = Rounding::SR;
  const int n = 4000;
  std::vector<double> mean(32, 0.0);
  std::vector<float> y(32);
  for (int k = 0; k < n; ++k) {
    s.seed = static_cast<uint64_t>(k);
    quantize_dequantize(x.data(), 1, 32, s, y.data());
    for (int i = 0; i < 32; ++i) mean[static_cast<size_t>(i)] += y[static_cast<size_t>(i)] / n;
  }
  const QuantizedMatrix q = quantize(x.data(), 1, 32, s);
  for (int i = 0; i < 32; ++i) {
    const float step = 2.0f * e4m3_decode(q.scale_byte(0, i)) * q.tensor_scale;  // largest e2m1 gap
    EXPECT_NEAR(mean[static_cast<size_t>(i)], x[static_cast<size_t>(i)], 5 * (step / 2) / std::sqrt(n) + 1e-6) << i;
  }
}

TEST(QuantNames, ParseAndReject) {
  EXPECT_EQ(format_from_name("int4"), Format::INT4);
  EXPECT_EQ(default_block(Format::MXFP4), 32);
  try {
    format_from_name("fp4");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("nvfp4, mxfp4, int4"), std::string::npos);
  }
  EXPECT_THROW(rounding_from_name("nearest"), Error);
}
