#pragma once
// Bit-level scale-format casts (SPEC §2) shared by the CPU reference and CUDA kernels.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "nibble/hd.hpp"

namespace nibble {

// OCP FP8 E4M3 cast (RNE, saturating to ±448) on the bit pattern, so CPU and GPU agree.
NIBBLE_HD uint8_t e4m3_encode(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  const uint8_t s = static_cast<uint8_t>((u >> 24) & 0x80);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return 0x7f;        // NaN (inputs are validated before this)
  if (a >= 0x43e00000u) return s | 0x7e;   // >= 448: saturate
  if (a < 0x3c800000u) {                   // below 2^-6: subnormal, multiples of 2^-9
    float f;
    memcpy(&f, &a, 4);
    return s | static_cast<uint8_t>(rintf(f * 512.0f));  // exact scaling, RNE; 8 = 2^-6
  }
  int e = static_cast<int>(a >> 23) - 127;  // -6 .. 8
  uint32_t m = a & 0x7fffffu;
  uint32_t q = m >> 20;
  const uint32_t rem = m & 0xfffffu;
  if (rem > 0x80000u || (rem == 0x80000u && (q & 1u))) ++q;
  if (q == 8) { q = 0; ++e; }
  return s | static_cast<uint8_t>(((e + 7) << 3) | q);
}

NIBBLE_HD float e4m3_decode(uint8_t b) {
  const int e = (b >> 3) & 0xf;
  const int m = b & 7;
  float v;
  if (e == 15 && m == 7) v = NAN;
  else if (e == 0) v = static_cast<float>(m) * (1.0f / 512.0f);
  else v = ldexpf(static_cast<float>(8 + m), e - 10);
  return (b & 0x80) ? -v : v;
}

// OCP E8M0: value 2^(byte-127), byte 255 = NaN.
NIBBLE_HD float e8m0_decode(uint8_t b) {
  return b == 0xff ? NAN : ldexpf(1.0f, static_cast<int>(b) - 127);
}

}  // namespace nibble
