// Scalar conversions against hand-derived values and an independent (frexp-based)
// reference of the E4M3 cast.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <limits>

#include "nibble/dtype.hpp"
#include "nibble/fp8.hpp"

using namespace nibble;

namespace {
// Independent E4M3 reference: enumerate all finite codes and pick the nearest (ties to the
// even mantissa), saturating at 448. Slow but obviously right.
uint8_t e4m3_reference(float x) {
  const double a = std::fabs(static_cast<double>(x));
  const uint8_t s = std::signbit(x) ? 0x80 : 0;
  if (a >= 448.0) return s | 0x7e;
  int best = 0;
  double best_err = 1e300;
  for (int b = 0; b <= 0x7e; ++b) {
    const int e = b >> 3, m = b & 7;
    const double v = e == 0 ? m * std::ldexp(1.0, -9) : (8 + m) * std::ldexp(1.0, e - 10);
    const double err = std::fabs(v - a);
    if (err < best_err || (err == best_err && (b & 1) == 0)) {
      best = b;
      best_err = err;
    }
  }
  return s | static_cast<uint8_t>(best);
}
}  // namespace

TEST(DTypeE4M3, HandValues) {
  EXPECT_EQ(e4m3_from_float(0.0f), 0x00);
  EXPECT_EQ(e4m3_from_float(-0.0f), 0x80);
  EXPECT_EQ(e4m3_from_float(1.0f), 0x38);     // exponent 7, mantissa 0
  EXPECT_EQ(e4m3_from_float(448.0f), 0x7e);   // max finite
  EXPECT_EQ(e4m3_from_float(-448.0f), 0xfe);
  EXPECT_EQ(e4m3_from_float(449.0f), 0x7e);   // saturates
  EXPECT_EQ(e4m3_from_float(463.99f), 0x7e);
  EXPECT_EQ(e4m3_from_float(464.0f), 0x7e);   // the 448/480 midpoint: saturate, never NaN
  EXPECT_EQ(e4m3_from_float(1e30f), 0x7e);
  EXPECT_EQ(e4m3_from_float(std::numeric_limits<float>::infinity()), 0x7e);
  EXPECT_EQ(e4m3_from_float(416.0f), 0x7d);   // 1.625 * 2^8
  EXPECT_EQ(e4m3_from_float(424.0f), 0x7d);   // below the 416/448 midpoint
  EXPECT_EQ(e4m3_from_float(432.0f), 0x7e);   // the midpoint: ties to the even mantissa (448)
  EXPECT_FLOAT_EQ(e4m3_to_float(0x7e), 448.0f);
  EXPECT_FLOAT_EQ(e4m3_to_float(0x7d), 416.0f);
  EXPECT_TRUE(std::isnan(e4m3_to_float(0x7f)));
  EXPECT_TRUE(std::isnan(e4m3_to_float(0xff)));
}

TEST(DTypeE4M3, Subnormals) {
  const float step = std::ldexp(1.0f, -9);
  EXPECT_EQ(e4m3_from_float(step), 0x01);
  EXPECT_EQ(e4m3_from_float(7 * step), 0x07);
  EXPECT_EQ(e4m3_from_float(8 * step), 0x08);          // smallest normal 2^-6
  EXPECT_EQ(e4m3_from_float(0.5f * step), 0x00);       // tie 0 / step -> even (0)
  EXPECT_EQ(e4m3_from_float(1.5f * step), 0x02);       // tie 1 / 2 -> even (2)
  EXPECT_EQ(e4m3_from_float(2.5f * step), 0x02);       // tie 2 / 3 -> 2
  EXPECT_EQ(e4m3_from_float(0.51f * step), 0x01);
  EXPECT_EQ(e4m3_from_float(7.5f * step), 0x08);       // tie 7 / 8 -> 8 (normal)
  EXPECT_FLOAT_EQ(e4m3_to_float(0x01), step);
  EXPECT_FLOAT_EQ(e4m3_to_float(0x81), -step);
  EXPECT_EQ(e4m3_from_float(1e-30f), 0x00);
}

TEST(DTypeE4M3, RoundTripAllCodesAndMatchesReference) {
  for (int b = 0; b < 256; ++b) {
    if ((b & 0x7f) == 0x7f) continue;
    const float v = e4m3_to_float(static_cast<uint8_t>(b));
    EXPECT_EQ(e4m3_from_float(v), b) << "code " << b;
  }
  // Dense sweep (including every midpoint) against the brute-force reference.
  for (int b = 0; b < 0x7e; ++b) {
    const float lo = e4m3_to_float(static_cast<uint8_t>(b)), hi = e4m3_to_float(static_cast<uint8_t>(b + 1));
    for (int k = 0; k <= 16; ++k) {
      const float v = lo + (hi - lo) * static_cast<float>(k) / 16.0f;
      ASSERT_EQ(e4m3_from_float(v), e4m3_reference(v)) << "v=" << v;
      ASSERT_EQ(e4m3_from_float(-v), e4m3_reference(-v)) << "v=" << -v;
    }
  }
}

TEST(DTypeE8M0, Values) {
  EXPECT_FLOAT_EQ(e8m0_to_float(127), 1.0f);
  EXPECT_FLOAT_EQ(e8m0_to_float(130), 8.0f);
  EXPECT_FLOAT_EQ(e8m0_to_float(0), std::ldexp(1.0f, -127));
  EXPECT_FLOAT_EQ(e8m0_to_float(254), std::ldexp(1.0f, 127));
  EXPECT_TRUE(std::isnan(e8m0_to_float(255)));
  EXPECT_EQ(e8m0_from_exponent(-3), 124);
}

TEST(DTypeBF16, RoundNearestEven) {
  EXPECT_EQ(bf16_from_float(1.0f), 0x3f80);
  // 1 + 2^-8 is exactly half-way between 1 and 1 + 2^-7: ties to even (1.0).
  EXPECT_EQ(bf16_from_float(1.0f + std::ldexp(1.0f, -8)), 0x3f80);
  // 1 + 3·2^-8 is half-way between 1+2^-7 (odd) and 1+2^-6: rounds up to even.
  EXPECT_EQ(bf16_from_float(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);
  EXPECT_EQ(bf16_from_float(-2.0f), 0xc000);
  EXPECT_TRUE(std::isnan(bf16_to_float(bf16_from_float(NAN))));
  EXPECT_FLOAT_EQ(bf16_to_float(0x4049), 3.140625f);
}

TEST(DTypeF16, Values) {
  EXPECT_EQ(f16_from_float(1.0f), 0x3c00);
  EXPECT_EQ(f16_from_float(65504.0f), 0x7bff);
  EXPECT_EQ(f16_from_float(65520.0f), 0x7c00);  // rounds to infinity
  EXPECT_EQ(f16_from_float(std::ldexp(1.0f, -24)), 0x0001);
  EXPECT_EQ(f16_from_float(std::ldexp(1.0f, -25)), 0x0000);  // tie to even (0)
  EXPECT_EQ(f16_from_float(-0.0f), 0x8000);
  for (uint32_t h = 0; h < 0x7c00; ++h) {
    const float f = f16_to_float(static_cast<uint16_t>(h));
    ASSERT_EQ(f16_from_float(f), h);
  }
}

TEST(DTypePacking, LowNibbleFirst) {
  uint8_t buf[2] = {0, 0};
  set_nibble(buf, 0, 0x3);
  set_nibble(buf, 1, 0xA);
  set_nibble(buf, 2, 0xF);
  EXPECT_EQ(buf[0], 0xA3);
  EXPECT_EQ(buf[1], 0x0F);
  EXPECT_EQ(nibble_at(buf, 1), 0xA);
  EXPECT_EQ(pack_nibbles(0x1, 0x2), 0x21);
  EXPECT_EQ(dtype_storage_bytes(DType::E2M1, 5), 3u);
}
