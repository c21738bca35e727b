// SPEC §7 weight quantizers against hand-derived values (inputs chosen so x = W/α is exact).
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "nibble/error.hpp"
#include "nibble/qat/weight_quant.hpp"

using namespace nibble;

TEST(QatLsq, FourBitForwardBackwardByHand) {
  const QatSpec s = QatSpec::make(4, "auto");
  ASSERT_EQ(s.kind, QatQuantizer::LSQ);
  // α = 0.25: x = [7, −3.5, 10.5, −20, 0.5, 0, 1.75, −8.75], Qn = −8, Qp = 7
  const std::vector<float> w = {1.75f, -0.875f, 2.625f, -5.0f, 0.125f, 0.0f, 0.4375f, -2.1875f};
  const std::vector<float> alpha = {0.25f};
  std::vector<float> wh(8);
  qat_forward(s, w.data(), alpha.data(), 1, 8, wh.data());
  // round half to even: −3.5 → −4, 0.5 → 0, 1.75 → 2; clamps: 10.5 → 7, −20 → −8, −8.75 → −8
  const std::vector<float> expect = {1.75f, -1.0f, 1.75f, -2.0f, 0.0f, 0.0f, 0.5f, -2.0f};
  EXPECT_EQ(wh, expect);
  const std::vector<float> ones(8, 1.0f);
  std::vector<float> dw(8, 99.0f), da = {0.5f};
  qat_backward(s, w.data(), alpha.data(), 1, 8, ones.data(), dw.data(), da.data());
  EXPECT_EQ(dw, (std::vector<float>{1, 1, 0, 0, 1, 1, 1, 0}));  // STE: 1 inside [Qn, Qp]
  // ∂Ŵ/∂α: 0, −0.5, Qp = 7, Qn = −8, −0.5, 0, 0.25, Qn = −8 → Σ = −9.75; g = 1/√(8·7)
  EXPECT_FLOAT_EQ(da[0], static_cast<float>(0.5 + -9.75 / std::sqrt(56.0)));
  std::vector<float> a0(1);
  qat_init_scales(s, w.data(), 1, 8, a0.data());
  EXPECT_FLOAT_EQ(a0[0], 5.0f / 7.0f);  // max|W| / Qp
}

TEST(QatSeq, TwoBitAndTernaryLevelsByHand) {
  const QatSpec two = QatSpec::make(2, "auto");
  ASSERT_EQ(two.kind, QatQuantizer::SEQ);
  const std::vector<float> w = {0.1f, 0.3f, -0.6f, 0.995f, -2.0f, 0.0f};
  const std::vector<float> one = {1.0f};
  std::vector<float> wh(6);
  qat_forward(two, w.data(), one.data(), 1, 6, wh.data());
  // q = (round(clamp(x, ±0.99)·2 − 0.5) + 0.5)/2: levels ±0.25, ±0.75 (x = 0 → round(−0.5) = −0 → 0.25)
  EXPECT_EQ(wh, (std::vector<float>{0.25f, 0.25f, -0.75f, 0.75f, -0.75f, 0.25f}));
  const std::vector<float> g(6, 1.0f);
  std::vector<float> dw(6), da = {0.0f};
  qat_backward(two, w.data(), one.data(), 1, 6, g.data(), dw.data(), da.data());
  EXPECT_EQ(dw, (std::vector<float>{1, 1, 1, 0, 0, 1}));  // inside |x| ≤ 0.99
  const double expect = (0.25 - double{0.1f}) + (0.25 - double{0.3f}) + (-0.75 - double{-0.6f}) + 0.75 - 0.75 + 0.25;
  EXPECT_FLOAT_EQ(da[0], static_cast<float>(expect));  // q − x inside, ±(n − shift)/n = ±0.75 outside
  std::vector<float> a0(1);
  qat_init_scales(two, w.data(), 1, 6, a0.data());
  EXPECT_EQ(a0[0], 2.0f);  // max|W|

  const QatSpec ter = QatSpec::make(1.58, "auto");
  ASSERT_EQ(ter.kind, QatQuantizer::SEQ);
  const std::vector<float> t = {0.2f, 0.4f, -0.5f, 1.2f};
  std::vector<float> th(4), tdw(4), tda = {0.0f};
  qat_forward(ter, t.data(), one.data(), 1, 4, th.data());
  EXPECT_EQ(th, (std::vector<float>{0.0f, static_cast<float>(2.0 / 3.0), static_cast<float>(-2.0 / 3.0),
                                    static_cast<float>(2.0 / 3.0)}));  // levels 0, ±2α/3
  const std::vector<float> g4(4, 1.0f);
  qat_backward(ter, t.data(), one.data(), 1, 4, g4.data(), tdw.data(), tda.data());
  EXPECT_EQ(tdw, (std::vector<float>{1, 1, 1, 0}));
  const double te = (0.0 - double{0.2f}) + (2.0 / 3.0 - double{0.4f}) + (-2.0 / 3.0 - double{-0.5f}) + 1.0;  // outside: (n − 0)/n = 1
  EXPECT_FLOAT_EQ(tda[0], static_cast<float>(te));
}

TEST(QatGroups, ScalesPerGroupAndTheWinqReset) {
  const QatSpec s = QatSpec::make(3, "lsq", 4);  // Qp = 3
  const std::vector<float> w = {0.5f, -1.5f, 0.75f, 0.0f, 6.0f, -3.0f, 1.5f, 0.375f};
  std::vector<float> a(2);
  qat_init_scales(s, w.data(), 1, 8, a.data());
  EXPECT_FLOAT_EQ(a[0], 0.5f);  // 1.5 / 3
  EXPECT_FLOAT_EQ(a[1], 2.0f);  // 6 / 3
  std::vector<float> wh(8);
  qat_forward(s, w.data(), a.data(), 1, 8, wh.data());
  // x = [1, −3, 1.5, 0 | 3, −1.5, 0.75, 0.1875] → round: [1, −3, 2, 0 | 3, −2, 1, 0]
  EXPECT_EQ(wh, (std::vector<float>{0.5f, -1.5f, 1.0f, 0.0f, 6.0f, -4.0f, 2.0f, 0.0f}));
  std::vector<float> r = w;
  winq_reset(s, r.data(), a.data(), 1, 8, 0.2);
  for (size_t i = 0; i < r.size(); ++i) EXPECT_FLOAT_EQ(r[i], static_cast<float>(0.2 * w[i] + 0.8 * wh[i])) << i;
  winq_reset(s, r.data(), a.data(), 1, 8, 0.0);  // a = 0: the weights become their quantized values
  EXPECT_EQ(r, wh);
}

TEST(QatSpecErrors, UnsupportedChoicesNameTheValue) {
  EXPECT_THROW(QatSpec::make(1, "auto"), Error);
  EXPECT_THROW(QatSpec::make(2, "lsq"), Error);
  EXPECT_THROW(QatSpec::make(4, "seq"), Error);
  EXPECT_THROW(QatSpec::make(4, "magic"), Error);
  EXPECT_THROW(QatSpec::make(4, "auto", -1), Error);
  const QatSpec s = QatSpec::make(4, "auto", 3);
  std::vector<float> w(8, 1.0f), a(3);
  EXPECT_THROW(qat_init_scales(s, w.data(), 1, 8, a.data()), Error);  // 3 does not divide 8
  try {
    QatSpec::make(5, "auto");
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("5"), std::string::npos) << e.what();
  }
  std::vector<float> q(8, 0.0f), one = {1.0f};
  EXPECT_THROW(winq_reset(QatSpec::make(4, "auto"), q.data(), one.data(), 1, 8, 1.5), Error);
}
