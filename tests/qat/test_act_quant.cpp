// Per-token activation fake quantization (nibble/qat/act_quant.hpp) by hand, and inside a
// QuantLinear: the forward multiplies x̂ and the weight gradient uses x̂ (the operand the
// forward saw), while dX passes straight through.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "nibble/error.hpp"
#include "nibble/nn/linear.hpp"
#include "nibble/nn/recipe.hpp"
#include "nibble/ops/ops.hpp"
#include "nibble/qat/act_quant.hpp"

using namespace nibble;

TEST(ActQuant, RowsByHand) {
  // 8 bits: Qp = 127, s = max|x| / 127 per row
  const std::vector<float> x = {0.5f, -1.0f, 0.25f, 0.0f,  // row 0: s = 1/127
                                0.0f, 0.0f, 0.0f, 0.0f,    // row 1: zeros stay zero
                                3.0f, -0.1f, 1.0f, 2.0f};  // row 2: s = 3/127
  std::vector<float> y(x.size());
  fake_quantize_rows(x.data(), 3, 4, 8, y.data());
  const float s0 = 1.0f / 127.0f, s2 = 3.0f / 127.0f;
  // 0.5·127 = 63.5 rounds to even (64); 0.25·127 = 31.75 → 32
  EXPECT_EQ(y[0], s0 * 64.0f);
  EXPECT_EQ(y[1], s0 * -127.0f);
  EXPECT_EQ(y[2], s0 * 32.0f);
  EXPECT_EQ(y[3], 0.0f);
  for (int j = 4; j < 8; ++j) EXPECT_EQ(y[static_cast<size_t>(j)], 0.0f);
  EXPECT_EQ(y[8], s2 * 127.0f);
  EXPECT_EQ(y[9], s2 * std::nearbyint(-0.1f / s2));  // −4.23 → −4
  EXPECT_EQ(y[9], s2 * -4.0f);
  EXPECT_EQ(y[10], s2 * std::nearbyint(1.0f / s2));
}

TEST(ActQuant, TwoBitRoundingAndBadWidths) {
  const std::vector<float> x = {0.5f, -1.0f, 0.75f, 0.2f};
  std::vector<float> y(4);
  fake_quantize_rows(x.data(), 1, 4, 2, y.data());
  // s = 1: round(0.5) = 0 (half to even), −1, round(0.75) = 1, round(0.2) = 0
  EXPECT_EQ(y, (std::vector<float>{0.0f, -1.0f, 1.0f, 0.0f}));
  EXPECT_THROW(fake_quantize_rows(x.data(), 1, 4, 1, y.data()), Error);
  EXPECT_THROW(fake_quantize_rows(x.data(), 1, 4, 9, y.data()), Error);
}

TEST(ActQuant, QuantLinearMultipliesAndDifferentiatesTheQuantizedInput) {
  const int64_t t = 6, in = 8, out = 5;
  std::vector<float> x(t * in), w(out * in), dy(t * out);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.7f * static_cast<float>(i)) * (1.0f + 0.1f * static_cast<float>(i % 5));
  for (size_t i = 0; i < w.size(); ++i) w[i] = std::cos(0.3f * static_cast<float>(i)) * 0.2f;
  for (size_t i = 0; i < dy.size(); ++i) dy[i] = std::sin(1.3f * static_cast<float>(i)) * 0.1f;
  std::vector<float> xq(x.size());
  fake_quantize_rows(x.data(), t, in, 4, xq.data());
  ASSERT_NE(xq, x);

  std::vector<float> dw(w.size(), 0.0f), y(t * out), dx(t * in);
  QuantLinear<float> lin("l", in, out, 0);
  lin.bind(w.data(), dw.data());
  lin.set_recipe(Recipe::preset("fp32"));
  lin.set_activation_bits(4);
  StepContext ctx;
  lin.forward(x.data(), y.data(), t, ctx);
  lin.backward(dy.data(), dx.data(), t, ctx);

  std::vector<float> y_ref(t * out), dx_ref(t * in), dw_ref(w.size(), 0.0f);
  ops::matmul_nt(xq.data(), w.data(), y_ref.data(), t, out, in);  // y = x̂ Wᵀ
  EXPECT_EQ(y, y_ref);
  for (int64_t i = 0; i < t; ++i)  // dX = dY W (straight through)
    for (int64_t k = 0; k < in; ++k) {
      double s = 0;
      for (int64_t o = 0; o < out; ++o) s += static_cast<double>(dy[i * out + o]) * w[o * in + k];
      EXPECT_NEAR(dx[i * in + k], s, 1e-6);
    }
  for (int64_t o = 0; o < out; ++o)  // dW = dYᵀ x̂
    for (int64_t k = 0; k < in; ++k) {
      double s = 0;
      for (int64_t i = 0; i < t; ++i) s += static_cast<double>(dy[i * out + o]) * xq[i * in + k];
      EXPECT_NEAR(dw[o * in + k], s, 1e-6);
    }
}
