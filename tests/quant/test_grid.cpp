// Element grids (SPEC §1): every RNE tie, saturation, codes, and SR unbiasedness.
#include <gtest/gtest.h>

#include <cmath>

#include "nibble/philox.hpp"
#include "nibble/quant/grid.hpp"

using namespace nibble;

namespace {
float rne(Grid g, float v) { return grid_decode(g, grid_encode(g, v, false, 0.0f)); }
}  // namespace

TEST(GridE2M1, EveryTieGoesToEvenIndex) {
  // SPEC: 0.25→0, 0.75→1, 1.25→1, 1.75→2, 2.5→2, 3.5→4, 5→4.
  const float ties[][2] = {{0.25f, 0.0f}, {0.75f, 1.0f}, {1.25f, 1.0f}, {1.75f, 2.0f},
                           {2.5f, 2.0f},  {3.5f, 4.0f},  {5.0f, 4.0f}};
  for (const auto& t : ties) {
    EXPECT_EQ(rne(Grid::E2M1, t[0]), t[1]) << t[0];
    EXPECT_EQ(rne(Grid::E2M1, -t[0]), -t[1]) << -t[0];
  }
}

TEST(GridE2M1, NearestAndSaturation) {
  EXPECT_EQ(rne(Grid::E2M1, 0.26f), 0.5f);
  EXPECT_EQ(rne(Grid::E2M1, 0.74f), 0.5f);
  EXPECT_EQ(rne(Grid::E2M1, 2.51f), 3.0f);
  EXPECT_EQ(rne(Grid::E2M1, 5.01f), 6.0f);
  EXPECT_EQ(rne(Grid::E2M1, 6.0f), 6.0f);
  // Values are clamped by the quantizer before rounding; the rounder itself caps at 6.
  EXPECT_EQ(rne(Grid::E2M1, 100.0f), 6.0f);
  EXPECT_EQ(rne(Grid::E2M1, -7.0f), -6.0f);
}

TEST(GridE2M1, CodesAndZeroIsPositive) {
  EXPECT_EQ(grid_encode(Grid::E2M1, 6.0f, false, 0), 0x7);
  EXPECT_EQ(grid_encode(Grid::E2M1, -6.0f, false, 0), 0xF);
  EXPECT_EQ(grid_encode(Grid::E2M1, -0.5f, false, 0), 0x9);
  EXPECT_EQ(grid_encode(Grid::E2M1, -0.1f, false, 0), 0x0);  // rounds to zero: +0
  EXPECT_EQ(grid_encode(Grid::E2M1, -0.0f, false, 0), 0x0);
  const float mags[8] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6};
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(grid_decode(Grid::E2M1, static_cast<uint8_t>(i)), mags[i]);
    EXPECT_EQ(grid_decode(Grid::E2M1, static_cast<uint8_t>(8 | i)), -mags[i]);
  }
}

TEST(GridInt4, TiesSaturationAndCodes) {
  const float ties[][2] = {{0.5f, 0}, {1.5f, 2}, {2.5f, 2}, {3.5f, 4}, {4.5f, 4}, {5.5f, 6}, {6.5f, 6}};
  for (const auto& t : ties) {
    EXPECT_EQ(rne(Grid::INT4, t[0]), t[1]) << t[0];
    EXPECT_EQ(rne(Grid::INT4, -t[0]), -t[1]) << -t[0];
  }
  EXPECT_EQ(rne(Grid::INT4, 7.0f), 7.0f);
  EXPECT_EQ(grid_encode(Grid::INT4, -7.0f, false, 0), 0x9);  // two's complement
  EXPECT_EQ(grid_encode(Grid::INT4, -1.0f, false, 0), 0xF);
  EXPECT_EQ(grid_encode(Grid::INT4, -0.4f, false, 0), 0x0);
  EXPECT_EQ(grid_decode(Grid::INT4, 0x9), -7.0f);
  EXPECT_EQ(grid_decode(Grid::INT4, 0x7), 7.0f);
}

TEST(GridSR, RoundsToNeighboursWithTheRightProbabilityBoundaries) {
  // a = 2.25 lies between 2 and 3 with p = 0.25: up iff u < 0.25.
  EXPECT_EQ(grid_decode(Grid::E2M1, grid_encode(Grid::E2M1, 2.25f, true, 0.2499f)), 3.0f);
  EXPECT_EQ(grid_decode(Grid::E2M1, grid_encode(Grid::E2M1, 2.25f, true, 0.25f)), 2.0f);
  // Grid points never move.
  for (float u : {0.0f, 0.5f, 0.999f}) {
    EXPECT_EQ(grid_decode(Grid::E2M1, grid_encode(Grid::E2M1, 4.0f, true, u)), 4.0f);
    EXPECT_EQ(grid_decode(Grid::E2M1, grid_encode(Grid::E2M1, 6.0f, true, u)), 6.0f);
    EXPECT_EQ(grid_decode(Grid::INT4, grid_encode(Grid::INT4, 7.0f, true, u)), 7.0f);
    EXPECT_EQ(grid_decode(Grid::INT4, grid_encode(Grid::INT4, -3.0f, true, u)), -3.0f);
  }
  // int4 -2.7: between 2 and 3 with p = 0.7 (sign kept).
  EXPECT_EQ(grid_decode(Grid::INT4, grid_encode(Grid::INT4, -2.7f, true, 0.69f)), -3.0f);
  EXPECT_EQ(grid_decode(Grid::INT4, grid_encode(Grid::INT4, -2.7f, true, 0.71f)), -2.0f);
}

TEST(GridSR, UnbiasedWithinVarianceBound) {
  // For v between lo and hi, one SR draw has mean v and variance (v-lo)(hi-v); the mean
  // of n draws must lie within 5 standard errors of v.
  const int n = 200000;
  for (Grid g : {Grid::E2M1, Grid::INT4}) {
    for (float v : {0.3f, 1.1f, -2.2f, 3.7f, 5.2f, -4.9f}) {
      if (g == Grid::INT4 && std::fabs(v) > 7) continue;
      double sum = 0, lo = 0, hi = 0;
      for (int i = 0; i < n; ++i) {
        const float u = philox_uniform(1234, 5, static_cast<uint64_t>(i));
        const float q = grid_decode(g, grid_encode(g, v, true, u));
        sum += q;
        const double a = std::fabs(q);
        if (i == 0 || a < lo) lo = a;
        if (i == 0 || a > hi) hi = a;
      }
      const double a = std::fabs(v);
      const double var = (a - lo) * (hi - a);
      EXPECT_NEAR(sum / n, v, 5 * std::sqrt(var / n) + 1e-12) << "v=" << v;
    }
  }
}
