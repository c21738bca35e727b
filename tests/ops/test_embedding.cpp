// Embedding lookup and scatter-add backward: values, repeated tokens, accumulation, gradient.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "nibble/ops/ops.hpp"
#include "support/random_data.hpp"

using namespace nibble;
using nibble::testing::random_vec;

namespace {
}  // namespace

TEST(OpsEmbedding, ForwardCopiesRowsAndBackwardAddsRepeatedTokens) {
  const std::vector<float> wte = {0, 1, 10, 11, 20, 21};  // V = 3, C = 2
  const std::vector<int32_t> tok = {2, 0, 2};
  std::vector<float> out(6);
  ops::embedding_forward(tok.data(), wte.data(), out.data(), 3, 2);
  EXPECT_EQ(out, (std::vector<float>{20, 21, 0, 1, 20, 21}));
  std::vector<float> dwte = {1, 1, 1, 1, 1, 1};
  const std::vector<float> dout = {1, 2, 3, 4, 5, 6};
  ops::embedding_backward(tok.data(), dout.data(), dwte.data(), 3, 2);
  EXPECT_EQ(dwte, (std::vector<float>{1 + 3, 1 + 4, 1, 1, 1 + 1 + 5, 1 + 2 + 6}));  // row 1 untouched
}

TEST(OpsEmbedding, LargeBackwardMatchesSerialSum) {
  const int64_t n = 1000, c = 150, v = 37;  // parallel path, columns not a multiple of the block
  std::vector<int32_t> tok(n);
  for (int64_t i = 0; i < n; ++i) tok[i] = static_cast<int32_t>((i * 7 + i / 3) % v);
  const auto d64 = random_vec(n * c, 1);
  std::vector<float> dout(d64.begin(), d64.end()), dwte(v * c, 0.5f), ref(v * c, 0.5f);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < c; ++j) ref[tok[i] * c + j] += dout[i * c + j];
  ops::embedding_backward(tok.data(), dout.data(), dwte.data(), n, c);
  EXPECT_EQ(dwte, ref);  // same order (tokens ascending), same bits
}

TEST(OpsEmbedding, Float64GradientCheck) {
  const int64_t n = 6, c = 4, v = 5;
  const std::vector<int32_t> tok = {1, 3, 1, 0, 4, 1};
  auto wte = random_vec(v * c, 2);
  const auto r = random_vec(n * c, 3);
  auto loss = [&] {
    std::vector<double> out(n * c);
    ops::embedding_forward(tok.data(), wte.data(), out.data(), n, c);
    double l = 0;
    for (int64_t i = 0; i < n * c; ++i) l += out[i] * r[i];
    return l;
  };
  std::vector<double> g(v * c, 0.0);
  ops::embedding_backward(tok.data(), r.data(), g.data(), n, c);
  for (size_t i = 0; i < wte.size(); ++i) {
    const double x0 = wte[i], h = 1e-6 * std::max(1.0, std::fabs(x0));
    wte[i] = x0 + h;
    const double lp = loss();
    wte[i] = x0 - h;
    const double lm = loss();
    wte[i] = x0;
    ASSERT_NEAR((lp - lm) / (2 * h), g[i], 1e-7 * std::max(1.0, std::fabs(g[i]))) << i;
  }
  for (int64_t j = 0; j < c; ++j) EXPECT_EQ(g[2 * c + j], 0.0);  // token 2 unused
}
