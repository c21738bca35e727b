#include "nibble/nn/recipe.hpp"

#include <algorithm>
#include <charconv>
#include <set>

#include "nibble/error.hpp"
#include "nibble/fileio.hpp"

namespace nibble {

namespace {

OperandSpec exact_bf16() { return OperandSpec{}; }

OperandSpec quant(Format f, Rounding r = Rounding::RNE, bool tile2d = false) {
  OperandSpec o;
  o.kind = OperandKind::QUANT;
  o.quant = QuantSpec::for_format(f);
  o.quant.rounding = r;
  o.quant.tile2d = tile2d;
  return o;
}

Recipe all_bf16(const std::string& name) {
  Recipe r;
  r.name = name;
  r.fprop = {exact_bf16(), exact_bf16(), 0};
  r.dgrad = {exact_bf16(), exact_bf16(), 0};
  r.wgrad = {exact_bf16(), exact_bf16(), 0};
  return r;
}

// NVIDIA's NVFP4 training recipe (as in Transformer Engine): W in 16×16 tiles so the
// rowwise and columnwise copies agree, SR on gradients, RHT16 on wgrad, last block bf16.
Recipe nvfp4_recipe() {
  Recipe r;
  r.name = "nvfp4";
  r.fprop = {quant(Format::NVFP4), quant(Format::NVFP4, Rounding::RNE, true), 0};
  r.dgrad = {quant(Format::NVFP4, Rounding::SR), quant(Format::NVFP4, Rounding::RNE, true), 0};
  r.wgrad = {quant(Format::NVFP4, Rounding::SR), quant(Format::NVFP4), 16};
  r.high_precision_blocks = "last:1";
  return r;
}

Recipe mxfp4_recipe() {
  Recipe r;
  r.name = "mxfp4";
  r.fprop = {quant(Format::MXFP4), quant(Format::MXFP4), 0};
  r.dgrad = {quant(Format::MXFP4, Rounding::SR), quant(Format::MXFP4), 0};
  r.wgrad = {quant(Format::MXFP4, Rounding::SR), quant(Format::MXFP4), 32};
  return r;
}

// UFP4: the uniform int4 grid, RHT16 on all three GEMMs, SR on dY only. W uses 1×16
// blocks: with an RHT along K (fprop) and along N (dgrad) the two copies differ anyway.
Recipe ufp4_recipe() {
  Recipe r;
  r.name = "ufp4";
  r.fprop = {quant(Format::INT4), quant(Format::INT4), 16};
  r.dgrad = {quant(Format::INT4, Rounding::SR), quant(Format::INT4), 16};
  r.wgrad = {quant(Format::INT4, Rounding::SR), quant(Format::INT4), 16};
  return r;
}

// Mean-bias removal at the source: X in fprop, dY in dgrad, both in wgrad.
Recipe with_mean_removal(Recipe r, const std::string& name) {
  r.name = name;
  r.fprop.a.center = true;
  r.dgrad.a.center = true;
  r.wgrad.a.center = true;
  r.wgrad.b.center = true;
  return r;
}

// Metis-style spectral baseline: nvfp4-shaped quantizers, dY split into a rank-k part kept in
// fp32 and a quantized residual, in dgrad and wgrad (rank auto: min(64, N/16)).
Recipe metis_recipe() {
  Recipe r = nvfp4_recipe();
  r.name = "metis";
  r.wgrad.rht = 0;
  r.high_precision_blocks = "none";
  r.dgrad.a.spectral_rank = -1;
  r.wgrad.a.spectral_rank = -1;
  return r;
}

const char* kind_name(OperandKind k) {
  return k == OperandKind::FP32 ? "fp32" : k == OperandKind::BF16 ? "bf16" : "quant";
}

// ---- JSON overrides with strict field checking ----------------------------------------
std::string path_join(const std::string& a, const std::string& b) { return a.empty() ? b : a + "." + b; }

void expect_keys(const Json& j, const std::string& where, std::initializer_list<const char*> allowed) {
  if (!j.is_object()) fail(where, ": expected an object, got ", j.type_name());
  for (const auto& [k, v] : j.as_object()) {
    bool ok = false;
    for (const char* a : allowed) ok = ok || k == a;
    if (!ok) {
      std::string list;
      for (const char* a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
      fail(where, ": unknown recipe field '", k, "' (known: ", list, ")");
    }
  }
}

int get_int(const Json& v, const std::string& where) {
  if (!v.is_number()) fail(where, ": expected a number, got ", v.type_name());
  const double d = v.as_double();
  if (d != static_cast<double>(static_cast<int>(d))) fail(where, ": expected an integer, got ", d);
  return static_cast<int>(d);
}
bool get_bool(const Json& v, const std::string& where) {
  if (!v.is_bool()) fail(where, ": expected true or false, got ", v.type_name());
  return v.as_bool();
}
std::string get_str(const Json& v, const std::string& where) {
  if (!v.is_string()) fail(where, ": expected a string, got ", v.type_name());
  return v.as_string();
}

void apply_operand(OperandSpec& o, const Json& j, const std::string& where) {
  expect_keys(j, where, {"format", "block", "tile2d", "scale_rule", "rounding", "center", "spectral_rank", "power_iters"});
  if (const Json* f = j.find("format")) {
    const std::string s = get_str(*f, where + ".format");
    if (s == "fp32") o.kind = OperandKind::FP32;
    else if (s == "bf16") o.kind = OperandKind::BF16;
    else {
      try {
        const Format fmt = format_from_name(s);
        const QuantSpec old = o.quant;
        const bool was_quant = o.kind == OperandKind::QUANT;
        o.kind = OperandKind::QUANT;
        o.quant = QuantSpec::for_format(fmt);
        if (was_quant) {  // keep rounding and tiling from the base operand
          o.quant.rounding = old.rounding;
          o.quant.tile2d = old.tile2d;
        }
      } catch (const Error&) {
        fail(where, ".format: unknown format '", s, "' (valid: fp32, bf16, nvfp4, mxfp4, int4)");
      }
    }
  }
  try {
    if (const Json* v = j.find("block")) o.quant.block = get_int(*v, where + ".block");
    if (const Json* v = j.find("tile2d")) o.quant.tile2d = get_bool(*v, where + ".tile2d");
    if (const Json* v = j.find("scale_rule")) o.quant.scale_rule = scale_rule_from_name(get_str(*v, where + ".scale_rule"));
    if (const Json* v = j.find("rounding")) o.quant.rounding = rounding_from_name(get_str(*v, where + ".rounding"));
  } catch (const Error& e) {
    const std::string m = e.what();
    fail(m.rfind(where, 0) == 0 ? m : where + ": " + m);
  }
  if (const Json* v = j.find("center")) o.center = get_bool(*v, where + ".center");
  if (const Json* v = j.find("spectral_rank")) o.spectral_rank = get_int(*v, where + ".spectral_rank");
  if (const Json* v = j.find("power_iters")) o.power_iters = get_int(*v, where + ".power_iters");
  if (o.quant.block != 16 && o.quant.block != 32) fail(where, ".block: ", o.quant.block, " is not 16 or 32");
  if (o.power_iters < 0) fail(where, ".power_iters: must be >= 0");
  if (o.spectral_rank < -1) fail(where, ".spectral_rank: must be >= 0 (or -1 = auto)");
}

void apply_gemm(GemmSpec& g, const Json& j, const std::string& where, const char* a, const char* b) {
  expect_keys(j, where, {a, b, "rht"});
  if (const Json* v = j.find(a)) apply_operand(g.a, *v, path_join(where, a));
  if (const Json* v = j.find(b)) apply_operand(g.b, *v, path_join(where, b));
  if (const Json* v = j.find("rht")) {
    g.rht = get_int(*v, where + ".rht");
    if (g.rht != 0 && g.rht != 16 && g.rht != 32 && g.rht != 64 && g.rht != 128)
      fail(where, ".rht: ", g.rht, " is not 0, 16, 32, 64 or 128");
  }
}

Json gemm_json(const GemmSpec& g, const char* a, const char* b) {
  Json j = Json::object();
  j[a] = g.a.to_json();
  j[b] = g.b.to_json();
  j["rht"] = g.rht;
  return j;
}

std::vector<int> parse_int_list(const std::string& s, const std::string& what) {
  std::vector<int> out;
  size_t p = 0;
  while (p <= s.size()) {
    const size_t q = s.find(',', p);
    const std::string tok = s.substr(p, q == std::string::npos ? std::string::npos : q - p);
    int v = 0;
    const auto r = std::from_chars(tok.data(), tok.data() + tok.size(), v);
    if (tok.empty() || r.ec != std::errc() || r.ptr != tok.data() + tok.size() || v < 0)
      fail(what, ": '", tok, "' is not a block index");
    out.push_back(v);
    if (q == std::string::npos) break;
    p = q + 1;
  }
  return out;
}

}  // namespace

Json OperandSpec::to_json() const {
  Json j = Json::object();
  if (kind == OperandKind::QUANT) {
    j["format"] = std::string(format_name(quant.format));
    j["block"] = quant.block;
    j["tile2d"] = quant.tile2d;
    j["scale_rule"] = std::string(scale_rule_name(quant.scale_rule));
    j["rounding"] = std::string(rounding_name(quant.rounding));
  } else {
    j["format"] = kind_name(kind);
  }
  j["center"] = center;
  j["spectral_rank"] = spectral_rank;
  if (spectral_rank != 0) j["power_iters"] = power_iters;
  return j;
}

std::string OperandSpec::describe() const {
  std::string s = kind == OperandKind::QUANT ? std::string(format_name(quant.format)) : kind_name(kind);
  if (kind == OperandKind::QUANT) {
    if (quant.tile2d) s += " " + std::to_string(quant.block) + "x" + std::to_string(quant.block);
    if (quant.rounding == Rounding::SR) s += " sr";
    if (quant.format == Format::MXFP4 && quant.scale_rule == ScaleRule::RCEIL) s += " rceil";
  }
  if (center) s += " +centre";
  if (spectral_rank != 0) s += " +spectral";
  return s;
}

std::vector<std::string> Recipe::preset_names() {
  return {"bf16", "nvfp4", "mxfp4", "nvfp4-mean", "ufp4", "ufp4-mean", "metis", "fp32"};
}

Recipe Recipe::preset(const std::string& name) {
  if (name == "bf16") return all_bf16("bf16");
  if (name == "nvfp4") return nvfp4_recipe();
  if (name == "mxfp4") return mxfp4_recipe();
  if (name == "nvfp4-mean") return with_mean_removal(nvfp4_recipe(), "nvfp4-mean");
  if (name == "ufp4") return ufp4_recipe();
  if (name == "ufp4-mean") return with_mean_removal(ufp4_recipe(), "ufp4-mean");
  if (name == "metis") return metis_recipe();
  if (name == "fp32") {  // every operand in fp32: the exact CPU reference (not a GPU recipe)
    Recipe r = all_bf16("fp32");
    for (GemmSpec* g : {&r.fprop, &r.dgrad, &r.wgrad}) g->a.kind = g->b.kind = OperandKind::FP32;
    r.high_precision_kind = OperandKind::FP32;
    return r;
  }
  std::string list;
  for (const auto& n : preset_names()) list += (list.empty() ? "" : ", ") + n;
  fail("unknown recipe '", name, "' (presets: ", list, "; or a path to a recipe .json file)");
}

Recipe Recipe::high_precision() const {
  Recipe r = all_bf16(high_precision_kind == OperandKind::FP32 ? "fp32" : "bf16");
  for (GemmSpec* g : {&r.fprop, &r.dgrad, &r.wgrad}) g->a.kind = g->b.kind = high_precision_kind;
  r.high_precision_kind = high_precision_kind;
  return r;
}

Recipe Recipe::from_json(const Json& j, const std::string& what) {
  expect_keys(j, what, {"name", "base", "fprop", "dgrad", "wgrad", "high_precision_blocks", "high_precision_format"});
  Recipe r = preset(j.contains("base") ? get_str(j.at("base"), what + ".base") : "bf16");
  r.name = j.contains("name") ? get_str(j.at("name"), what + ".name")
                              : (j.contains("base") ? r.name + "-custom" : "custom");
  if (const Json* v = j.find("fprop")) apply_gemm(r.fprop, *v, what + ":fprop", "x", "w");
  if (const Json* v = j.find("dgrad")) apply_gemm(r.dgrad, *v, what + ":dgrad", "dy", "w");
  if (const Json* v = j.find("wgrad")) apply_gemm(r.wgrad, *v, what + ":wgrad", "dy", "x");
  if (const Json* v = j.find("high_precision_blocks"))
    r.high_precision_blocks = get_str(*v, what + ".high_precision_blocks");
  if (const Json* v = j.find("high_precision_format")) {
    const std::string f = get_str(*v, what + ".high_precision_format");
    if (f == "bf16") r.high_precision_kind = OperandKind::BF16;
    else if (f == "fp32") r.high_precision_kind = OperandKind::FP32;
    else fail(what, ".high_precision_format: '", f, "' (use bf16 or fp32)");
  }
  r.block_in_high_precision(0, 1);  // validates the syntax
  return r;
}

Recipe Recipe::resolve(const std::string& spec) {
  const bool is_file = spec.find('/') != std::string::npos || (spec.size() > 5 && spec.substr(spec.size() - 5) == ".json");
  if (!is_file) return preset(spec);
  return from_json(Json::parse(read_file(spec), spec), spec);
}

Json Recipe::to_json() const {
  Json j = Json::object();
  j["name"] = name;
  j["fprop"] = gemm_json(fprop, "x", "w");
  j["dgrad"] = gemm_json(dgrad, "dy", "w");
  j["wgrad"] = gemm_json(wgrad, "dy", "x");
  j["high_precision_blocks"] = high_precision_blocks;
  j["high_precision_format"] = high_precision_kind == OperandKind::FP32 ? "fp32" : "bf16";
  return j;
}

bool Recipe::block_in_high_precision(int layer, int n_layers) const {
  const std::string& s = high_precision_blocks;
  if (s.empty() || s == "none") return false;
  const std::string what = "recipe field high_precision_blocks = '" + s + "'";
  for (const char* prefix : {"last:", "first:"}) {
    const std::string p = prefix;
    if (s.rfind(p, 0) == 0) {
      const std::vector<int> v = parse_int_list(s.substr(p.size()), what);
      if (v.size() != 1) fail(what, ": expected one count after '", p, "'");
      return p == "last:" ? layer >= n_layers - v[0] : layer < v[0];
    }
  }
  const std::vector<int> v = parse_int_list(s, what + " (use none, last:N, first:N or indices like 0,11)");
  return std::find(v.begin(), v.end(), layer) != v.end();
}

void Recipe::validate(int64_t dim, int64_t ffn, int64_t tokens_per_step, int n_layers) const {
  block_in_high_precision(0, n_layers);
  struct Check { const GemmSpec* g; const char* gemm; const char* reduction; };
  // Reduction dims: fprop reduces over in_features (dim or ffn), dgrad over out_features
  // (dim, kv width or ffn), wgrad over tokens.
  auto need = [&](const std::string& where, int64_t value, int64_t multiple, const char* what_dim) {
    if (multiple > 0 && value % multiple != 0)
      fail("recipe ", name, ": ", where, " needs ", what_dim, " = ", value, " to be a multiple of ", multiple);
  };
  const std::pair<const GemmSpec*, const char*> gemms[] = {{&fprop, "fprop"}, {&dgrad, "dgrad"}, {&wgrad, "wgrad"}};
  for (const auto& [g, gname] : gemms) {
    int64_t m = g->rht;
    for (const OperandSpec* o : {&g->a, &g->b})
      if (o->kind == OperandKind::QUANT) m = std::max<int64_t>(m, o->quant.block);
    if (std::string(gname) == "wgrad") {
      need("wgrad", tokens_per_step, m, "tokens per step (batch x seq)");
    } else {
      need(gname, dim, m, "the model width");
      need(gname, ffn, m, "the MLP width");
    }
    if (g->b.spectral_rank != 0) fail("recipe ", name, ": ", gname, ": the spectral split applies to dy only");
    if (g->a.spectral_rank != 0 && std::string(gname) == "fprop")
      fail("recipe ", name, ": fprop: the spectral split applies to dy only (dgrad, wgrad)");
    if (g->a.spectral_rank != 0 && g->a.center)
      fail("recipe ", name, ": ", gname, ".dy: centring and the spectral split are exclusive");
    if (std::string(gname) != "wgrad" && g->b.center)
      fail("recipe ", name, ": ", gname, ".w: weights are not centred (only x and dy)");
    for (const OperandSpec* o : {&g->a, &g->b})
      if (o->kind == OperandKind::QUANT && o->quant.tile2d && std::string(gname) == "wgrad")
        fail("recipe ", name, ": wgrad operands are activations/gradients; 2-D tiles are for weights");
  }
}

}  // namespace nibble
