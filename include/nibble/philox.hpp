#pragma once
// Philox4x32-10 (Salmon et al., SC'11; the generator of cuRAND and Random123), and the
// element-indexed random numbers of SPEC §3.4:
//   key = (seed & 0xffffffff, seed >> 32)
//   counter for element i = (floor(i/4) low, floor(i/4) high, stream, 0), word = out[i % 4]
//   u = (word >> 8) * 2^-24  (uniform in [0, 1)),  RHT sign = (word & 1) ? -1 : +1
#include <math.h>

#include <cstdint>

#include "nibble/hd.hpp"

namespace nibble {

struct Philox4 {
  uint32_t v[4];
};

NIBBLE_HD void philox_mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  const uint64_t p = static_cast<uint64_t>(a) * b;
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
}

// One Philox4x32 block with 10 rounds.
NIBBLE_HD Philox4 philox4x32_10(Philox4 ctr, uint32_t k0, uint32_t k1) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  for (int r = 0; r < 10; ++r) {
    if (r > 0) { k0 += kW0; k1 += kW1; }
    uint32_t hi0, lo0, hi1, lo1;
    philox_mulhilo(kM0, ctr.v[0], hi0, lo0);
    philox_mulhilo(kM1, ctr.v[2], hi1, lo1);
    ctr = Philox4{{hi1 ^ ctr.v[1] ^ k0, lo1, hi0 ^ ctr.v[3] ^ k1, lo0}};
  }
  return ctr;
}

// The four words that serve elements 4g .. 4g+3 of a tensor.
NIBBLE_HD Philox4 philox_group(uint64_t seed, uint32_t stream, uint64_t group) {
  Philox4 ctr{{static_cast<uint32_t>(group), static_cast<uint32_t>(group >> 32), stream, 0u}};
  return philox4x32_10(ctr, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

NIBBLE_HD uint32_t philox_word(uint64_t seed, uint32_t stream, uint64_t i) {
  return philox_group(seed, stream, i >> 2).v[i & 3];
}

NIBBLE_HD float philox_uniform_from_word(uint32_t w) {
  return static_cast<float>(w >> 8) * (1.0f / 16777216.0f);  // exact: 24-bit integer * 2^-24
}
NIBBLE_HD float philox_uniform(uint64_t seed, uint32_t stream, uint64_t i) {
  return philox_uniform_from_word(philox_word(seed, stream, i));
}
// A standard normal: Box–Muller in float64 on elements 2i and 2i+1 of the stream (one Philox
// group). The same expression on host and device; the float64 log/cos of the host's libm and of
// CUDA may differ in the last place (rarely visible once a draw is rounded to float).
NIBBLE_HD double philox_normal_hd(uint64_t seed, uint32_t stream, uint64_t i) {
  const uint64_t e = 2 * i;
  const Philox4 g = philox_group(seed, stream, e >> 2);
  const double u1 = philox_uniform_from_word(g.v[e & 3]);        // [0, 1)
  const double u2 = philox_uniform_from_word(g.v[(e + 1) & 3]);  // [0, 1)
  // Guard u1 = 0: 1 - u1 lies in [2^-24, 1], so the logarithm is finite.
  return sqrt(-2.0 * log(1.0 - u1)) * cos(2.0 * 3.14159265358979323846 * u2);
}

NIBBLE_HD float philox_sign(uint64_t seed, uint32_t stream, uint64_t i) {
  return (philox_word(seed, stream, i) & 1u) ? -1.0f : 1.0f;
}

}  // namespace nibble
