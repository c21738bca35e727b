// Recipes are data: presets as SPEC §5 tabulates them, JSON overrides with strict fields.
#include <gtest/gtest.h>

#include "nibble/error.hpp"
#include "nibble/nn/recipe.hpp"

using namespace nibble;

namespace {
bool is_quant(const OperandSpec& o, Format f, Rounding r) {
  return o.kind == OperandKind::QUANT && o.quant.format == f && o.quant.rounding == r;
}
}  // namespace

TEST(NnRecipe, PresetsFollowSpecTable) {
  const Recipe bf = Recipe::preset("bf16");
  EXPECT_EQ(bf.fprop.a.kind, OperandKind::BF16);
  EXPECT_EQ(bf.wgrad.b.kind, OperandKind::BF16);

  const Recipe nv = Recipe::preset("nvfp4");
  EXPECT_TRUE(is_quant(nv.fprop.a, Format::NVFP4, Rounding::RNE));
  EXPECT_TRUE(nv.fprop.b.quant.tile2d);                                // W in 16x16 tiles
  EXPECT_TRUE(is_quant(nv.dgrad.a, Format::NVFP4, Rounding::SR));      // dY SR
  EXPECT_TRUE(nv.dgrad.b.quant.tile2d);
  EXPECT_TRUE(is_quant(nv.wgrad.a, Format::NVFP4, Rounding::SR));
  EXPECT_EQ(nv.wgrad.rht, 16);                                         // RHT16 on wgrad only
  EXPECT_EQ(nv.fprop.rht, 0);
  EXPECT_EQ(nv.dgrad.rht, 0);
  EXPECT_EQ(nv.high_precision_blocks, "last:1");
  EXPECT_TRUE(nv.block_in_high_precision(11, 12));
  EXPECT_FALSE(nv.block_in_high_precision(10, 12));

  const Recipe mx = Recipe::preset("mxfp4");
  EXPECT_TRUE(is_quant(mx.fprop.a, Format::MXFP4, Rounding::RNE));
  EXPECT_EQ(mx.fprop.a.quant.block, 32);
  EXPECT_TRUE(is_quant(mx.dgrad.a, Format::MXFP4, Rounding::SR));
  EXPECT_EQ(mx.wgrad.rht, 32);

  const Recipe nm = Recipe::preset("nvfp4-mean");
  EXPECT_TRUE(nm.fprop.a.center);
  EXPECT_TRUE(nm.dgrad.a.center);
  EXPECT_TRUE(nm.wgrad.a.center && nm.wgrad.b.center);

  const Recipe u = Recipe::preset("ufp4");
  for (const GemmSpec* g : {&u.fprop, &u.dgrad, &u.wgrad}) {
    EXPECT_EQ(g->rht, 16);  // RHT on all three GEMMs
    EXPECT_EQ(g->a.quant.format, Format::INT4);
    EXPECT_EQ(g->b.quant.format, Format::INT4);
    EXPECT_EQ(g->b.quant.rounding, Rounding::RNE);  // SR on dY only
  }
  EXPECT_EQ(u.fprop.a.quant.rounding, Rounding::RNE);
  EXPECT_EQ(u.dgrad.a.quant.rounding, Rounding::SR);
  EXPECT_EQ(u.wgrad.a.quant.rounding, Rounding::SR);
  EXPECT_FALSE(u.fprop.a.center);
  EXPECT_TRUE(Recipe::preset("ufp4-mean").fprop.a.center);

  const Recipe m = Recipe::preset("metis");
  EXPECT_NE(m.dgrad.a.spectral_rank, 0);
  EXPECT_NE(m.wgrad.a.spectral_rank, 0);
  EXPECT_EQ(m.fprop.a.spectral_rank, 0);
  EXPECT_EQ(m.fprop.a.quant.format, Format::NVFP4);
}

TEST(NnRecipe, JsonOverridesAndRoundTrip) {
  const Json j = Json::parse(R"({"base": "nvfp4", "name": "mine",
    "fprop": {"x": {"format": "int4", "center": true}, "rht": 32},
    "wgrad": {"dy": {"rounding": "rne"}},
    "high_precision_blocks": "0,3"})", "t");
  const Recipe r = Recipe::from_json(j, "mine.json");
  EXPECT_EQ(r.name, "mine");
  EXPECT_EQ(r.fprop.a.quant.format, Format::INT4);
  EXPECT_EQ(r.fprop.a.quant.block, 16);
  EXPECT_TRUE(r.fprop.a.center);
  EXPECT_EQ(r.fprop.rht, 32);
  EXPECT_EQ(r.wgrad.a.quant.rounding, Rounding::RNE);
  EXPECT_EQ(r.dgrad.a.quant.rounding, Rounding::SR);  // untouched fields keep the base's
  EXPECT_TRUE(r.block_in_high_precision(3, 8));
  EXPECT_FALSE(r.block_in_high_precision(1, 8));
  // the resolved form reads back to the same recipe
  const Recipe back = Recipe::from_json(r.to_json(), "back");
  EXPECT_EQ(back.to_json().dump(), r.to_json().dump());
  for (const auto& name : Recipe::preset_names()) {
    const Recipe p = Recipe::preset(name);
    EXPECT_EQ(Recipe::from_json(p.to_json(), name).to_json().dump(), p.to_json().dump()) << name;
  }
}

// recipes/metis-base.json, the study's ablation of metis: the preset with only the split removed.
TEST(NnRecipe, MetisBaseFileIsMetisWithoutTheSplit) {
  const Recipe b = Recipe::resolve(std::string(NIBBLE_SOURCE_DIR) + "/recipes/metis-base.json");
  Recipe expect = Recipe::preset("metis");
  expect.name = "metis-base";
  expect.dgrad.a.spectral_rank = 0;
  expect.wgrad.a.spectral_rank = 0;
  EXPECT_EQ(b.to_json().dump(), expect.to_json().dump());
  // and it is not nvfp4: metis's other two changes stay
  EXPECT_EQ(b.wgrad.rht, 0);
  EXPECT_EQ(Recipe::preset("nvfp4").wgrad.rht, 16);
  EXPECT_FALSE(b.block_in_high_precision(11, 12));
  EXPECT_TRUE(Recipe::preset("nvfp4").block_in_high_precision(11, 12));
}

TEST(NnRecipe, UnknownFieldsAndBadValuesNameTheirPath) {
  auto err = [](const char* text) {
    try {
      Recipe::from_json(Json::parse(text, "t"), "r.json");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(err(R"({"fprop": {"x": {"formta": "int4"}}})").find("r.json:fprop.x: unknown recipe field 'formta'"), std::string::npos);
  EXPECT_NE(err(R"({"frop": {}})").find("unknown recipe field 'frop'"), std::string::npos);
  EXPECT_NE(err(R"({"fprop": {"x": {"format": "fp8"}}})").find("unknown format 'fp8'"), std::string::npos);
  EXPECT_NE(err(R"({"fprop": {"rht": 12}})").find("fprop.rht: 12"), std::string::npos);
  EXPECT_NE(err(R"({"fprop": {"x": {"block": 64}}})").find("block: 64"), std::string::npos);
  EXPECT_NE(err(R"({"base": "nvfp5"})").find("unknown recipe 'nvfp5'"), std::string::npos);
  EXPECT_NE(err(R"({"high_precision_blocks": "last:x"})").find("high_precision_blocks"), std::string::npos);
  EXPECT_THROW(Recipe::preset("nvfp4").validate(96 + 8, 384, 2048, 4), Error);   // width not a multiple of 16
  EXPECT_THROW(Recipe::preset("ufp4").validate(128, 384, 2040, 4), Error);        // tokens % 16 for wgrad
  EXPECT_NO_THROW(Recipe::preset("ufp4").validate(128, 384, 2048, 4));
}
