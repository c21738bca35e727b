// The whole transformer: float64 central-difference gradient check under the bf16 recipe
// (casts are the identity in float64), float vs double forward agreement, and shapes.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "nibble/error.hpp"
#include "nibble/nn/model.hpp"
#include "nibble/philox.hpp"

using namespace nibble;

namespace {
ModelConfig small_config() {
  ModelConfig c = ModelConfig::preset("tiny");
  c.name = "gradcheck";
  c.dim = 64;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;  // grouped-query attention
  c.ffn_dim = 64;
  c.max_seq = 16;
  c.tied_embeddings = false;
  c.init_std = 0.2;  // large enough that every op is far from linear
  return c;
}

struct Batch {
  std::vector<int32_t> x, y;
};
Batch batch(int64_t b, int64_t t) {
  Batch bt;
  for (int64_t i = 0; i < b * t; ++i) {
    bt.x.push_back(static_cast<int32_t>(philox_word(5, 0, static_cast<uint64_t>(i)) % 256));
    bt.y.push_back(static_cast<int32_t>(philox_word(6, 0, static_cast<uint64_t>(i)) % 256));
  }
  bt.y[3] = -1;  // an ignored target
  return bt;
}
}  // namespace

TEST(NnModel, ParameterNamesAndCounts) {
  Transformer<float> m(ModelConfig::preset("124m"));
  EXPECT_NEAR(static_cast<double>(m.num_params()), 124e6, 1.5e6);  // GPT-2 small size
  EXPECT_EQ(m.param("model.layers.11.mlp.down_proj.weight").shape, (Shape{768, 2048}));
  EXPECT_TRUE(m.param("model.layers.0.self_attn.q_proj.weight").decay);
  EXPECT_FALSE(m.param("model.embed_tokens.weight").decay);
  EXPECT_FALSE(m.param("model.norm.weight").decay);
  EXPECT_THROW(m.param("transformer.h.0.attn"), Error);
}

TEST(NnModel, ConfigValidationNamesTheField) {
  ModelConfig c = ModelConfig::preset("tiny");
  c.n_heads = 3;
  try {
    c.validate();
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("n_heads = 3 does not divide dim = 128"), std::string::npos) << e.what();
  }
  c = ModelConfig::preset("tiny");
  c.ffn_dim = 100;
  EXPECT_THROW(c.validate(), Error);
  EXPECT_THROW(ModelConfig::from_json(Json::parse(R"({"dimm": 64})"), "m.json"), Error);
}

TEST(NnModel, Float64GradientCheckUnderBf16Recipe) {
  const ModelConfig cfg = small_config();
  Transformer<double> m(cfg);
  m.init(7);
  m.set_recipe(Recipe::preset("bf16"));
  const int64_t b = 2, t = 6;
  const Batch bt = batch(b, t);
  StepContext ctx;
  m.zero_grad();
  m.forward(bt.x.data(), bt.y.data(), b, t, ctx);
  m.backward(ctx);
  const std::vector<double> analytic(m.grads(), m.grads() + m.num_params());
  int checked = 0;
  double worst = 0;
  for (const ParamInfo& p : m.params()) {
    for (int s = 0; s < 6; ++s) {  // a few elements of every tensor
      const int64_t j = p.offset + static_cast<int64_t>(philox_word(9, static_cast<uint32_t>(checked), 0) % static_cast<uint32_t>(p.numel));
      double& w = m.weights()[j];
      const double w0 = w, h = 1e-5;
      w = w0 + h;
      const double lp = m.forward(bt.x.data(), bt.y.data(), b, t, ctx);
      w = w0 - h;
      const double lm = m.forward(bt.x.data(), bt.y.data(), b, t, ctx);
      w = w0;
      const double numeric = (lp - lm) / (2 * h);
      const double err = std::fabs(numeric - analytic[static_cast<size_t>(j)]) /
                         std::max(1e-3, std::fabs(numeric) + std::fabs(analytic[static_cast<size_t>(j)]));
      worst = std::max(worst, err);
      EXPECT_LT(err, 1e-5) << p.name << "[" << j - p.offset << "]: numeric " << numeric << " analytic "
                           << analytic[static_cast<size_t>(j)];
      ++checked;
    }
  }
  EXPECT_GT(checked, 60);
  std::printf("checked %d gradient entries, worst relative error %.2e\n", checked, worst);
}

TEST(NnModel, FloatForwardMatchesDoubleUnderFp32Recipe) {
  const ModelConfig cfg = small_config();
  Transformer<double> md(cfg);
  Transformer<float> mf(cfg);
  md.init(3);
  mf.init(3);
  md.set_recipe(Recipe::preset("fp32"));
  mf.set_recipe(Recipe::preset("fp32"));
  const Batch bt = batch(2, 8);
  StepContext ctx;
  const double ld = md.forward(bt.x.data(), bt.y.data(), 2, 8, ctx);
  const double lf = mf.forward(bt.x.data(), bt.y.data(), 2, 8, ctx);
  EXPECT_NEAR(lf, ld, 1e-5 * std::fabs(ld));
  md.backward(ctx);
  mf.backward(ctx);
  double scale = 0, err = 0;
  for (int64_t i = 0; i < md.num_params(); ++i) {
    scale = std::max(scale, std::fabs(md.grads()[i]));
    err = std::max(err, std::fabs(md.grads()[i] - mf.grads()[i]));
  }
  EXPECT_LT(err, 1e-4 * scale);
}

TEST(NnModel, RejectsTokensOutsideVocabAndLongSequences) {
  Transformer<float> m(small_config());
  std::vector<int32_t> x(8, 1), y(8, 2);
  x[5] = 256;
  StepContext ctx;
  EXPECT_THROW(m.forward(x.data(), y.data(), 1, 8, ctx), Error);
  std::vector<int32_t> big(40, 1);
  EXPECT_THROW(m.forward(big.data(), big.data(), 1, 40, ctx), Error);
}
