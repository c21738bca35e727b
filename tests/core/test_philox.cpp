// Philox4x32-10 against the published Random123 known-answer vectors (tests/kat_vectors).
#include <gtest/gtest.h>

#include <cmath>

#include "nibble/philox.hpp"

using namespace nibble;

TEST(Philox, Random123KnownAnswers) {
  struct Kat { uint32_t ctr[4]; uint32_t key[2]; uint32_t out[4]; };
  const Kat kats[] = {
      {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
      {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff},
       {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
      {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0},
       {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
  };
  for (const auto& k : kats) {
    const Philox4 r = philox4x32_10(Philox4{{k.ctr[0], k.ctr[1], k.ctr[2], k.ctr[3]}}, k.key[0], k.key[1]);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(r.v[i], k.out[i]);
  }
}

TEST(Philox, ElementIndexingFollowsSpec) {
  // seed 0x299f31d0a4093822 -> key (a4093822, 299f31d0); element i uses counter
  // (i/4, 0, stream, 0) and word i % 4.
  const uint64_t seed = 0x299f31d0a4093822ull;
  const Philox4 g = philox4x32_10(Philox4{{5, 0, 7, 0}}, 0xa4093822u, 0x299f31d0u);
  for (int j = 0; j < 4; ++j) EXPECT_EQ(philox_word(seed, 7, 20 + j), g.v[j]);
  // High half of the group index goes to counter word 1.
  const uint64_t big = (uint64_t{3} << 32) | 9;
  const Philox4 h = philox4x32_10(Philox4{{9, 3, 0, 0}}, 0xa4093822u, 0x299f31d0u);
  EXPECT_EQ(philox_word(seed, 0, big * 4 + 2), h.v[2]);
  // u = (word >> 8) * 2^-24, sign = word & 1.
  const uint32_t w = philox_word(seed, 7, 21);
  EXPECT_EQ(philox_uniform(seed, 7, 21), static_cast<float>(w >> 8) / 16777216.0f);
  EXPECT_EQ(philox_sign(seed, 7, 21), (w & 1) ? -1.0f : 1.0f);
}

TEST(Philox, UniformIsInUnitIntervalAndBalanced) {
  double sum = 0;
  const int n = 100000;
  for (int i = 0; i < n; ++i) {
    const float u = philox_uniform(42, 1, static_cast<uint64_t>(i));
    ASSERT_GE(u, 0.0f);
    ASSERT_LT(u, 1.0f);
    sum += u;
  }
  // mean 1/2, standard error sqrt(1/12/n) ≈ 9.1e-4: allow 5 standard errors.
  EXPECT_NEAR(sum / n, 0.5, 5 * std::sqrt(1.0 / 12.0 / n));
}
