#pragma once
// The 4-bit element grids of SPEC §1 and rounding onto them (RNE and stochastic),
// as host/device scalar code shared by CPU and CUDA.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "nibble/hd.hpp"

namespace nibble {

enum class Grid : uint8_t { E2M1, INT4 };

// Largest magnitude of the grid: 6 (e2m1), 7 (int4).
NIBBLE_HD float grid_max(Grid g) { return g == Grid::E2M1 ? 6.0f : 7.0f; }

// e2m1 magnitude of index i (0..7): 0, 0.5, 1, 1.5, 2, 3, 4, 6.
NIBBLE_HD float e2m1_magnitude(int i) {
  return i < 4 ? 0.5f * static_cast<float>(i) : (i < 6 ? static_cast<float>(i - 2) : (i == 6 ? 4.0f : 6.0f));
}

// Index of the RNE-rounded e2m1 magnitude of a in [0, 6]; ties go to the even index
// (0.25→0, 0.75→1, 1.25→1, 1.75→2, 2.5→2, 3.5→4, 5→4). Written as a count of the
// thresholds passed (strict at ties rounding down, inclusive at ties rounding up), which
// compiles to branch-free, vectorisable code.
NIBBLE_HD int e2m1_rne_index(float a) {
  return (a > 0.25f) + (a >= 0.75f) + (a > 1.25f) + (a >= 1.75f) + (a > 2.5f) + (a >= 3.5f) +
         (a > 5.0f);
}

// Index of the grid magnitude at or below a (a in [0, 6]).
NIBBLE_HD int e2m1_floor_index(float a) {
  return (a >= 0.5f) + (a >= 1.0f) + (a >= 1.5f) + (a >= 2.0f) + (a >= 3.0f) + (a >= 4.0f) +
         (a >= 6.0f);
}

// Stochastic rounding (SPEC §3.4): between adjacent magnitudes lo < hi, round up iff
// u < (a - lo) / (hi - lo).
// The gap above magnitude i (0.5 up to 2, then 1, 1, 2) is a power of two, so dividing by it is
// multiplying by its exact reciprocal: the same bits, without an IEEE division (slow on GPUs).
NIBBLE_HD float e2m1_inv_gap(int i) { return i < 4 ? 2.0f : (i < 6 ? 1.0f : 0.5f); }

NIBBLE_HD int e2m1_sr_index(float a, float u) {
  const int i = e2m1_floor_index(a);
  if (i == 7) return 7;
  const float lo = e2m1_magnitude(i);
  return (u < (a - lo) * e2m1_inv_gap(i)) ? i + 1 : i;  // (a − lo) / (hi − lo)
}

// 4-bit code of a value v that is already clamped to [-max, max]. A zero result is +0.
// e2m1: bit 3 = sign, bits 0-2 = magnitude index. int4: two's complement level −7..7.
NIBBLE_HD uint8_t grid_encode(Grid g, float v, bool stochastic, float u) {
  const bool neg = v < 0.0f;
  const float a = neg ? -v : v;
  if (g == Grid::E2M1) {
    const int i = stochastic ? e2m1_sr_index(a, u) : e2m1_rne_index(a);
    return static_cast<uint8_t>((neg && i != 0) ? (8 | i) : i);
  }
  int level;
  if (stochastic) {
    const float lo = floorf(a);
    level = static_cast<int>(lo);
    if (level < 7 && u < (a - lo)) ++level;
  } else {
    level = static_cast<int>(rintf(a));  // ties to even in the default rounding mode
  }
  if (neg) level = -level;
  return static_cast<uint8_t>(level & 0xF);
}

NIBBLE_HD float grid_decode(Grid g, uint8_t code) {
  code &= 0xF;
  if (g == Grid::E2M1) {
    const float m = e2m1_magnitude(code & 7);
    return (code & 8) ? -m : m;
  }
  return static_cast<float>(code >= 8 ? static_cast<int>(code) - 16 : static_cast<int>(code));
}

NIBBLE_HD float clampf(float v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }

}  // namespace nibble
