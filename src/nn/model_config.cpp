#include <cmath>

#include "nibble/error.hpp"
#include "nibble/fileio.hpp"
#include "nibble/nn/model.hpp"

namespace nibble {

namespace {
ModelConfig make(const char* name, const char* tok, int64_t vocab, int64_t dim, int layers, int heads,
                 int kv_heads, int64_t ffn, int64_t seq, bool tied) {
  ModelConfig c;
  c.name = name;
  c.tokenizer = tok;
  c.vocab_size = vocab;
  c.dim = dim;
  c.n_layers = layers;
  c.n_heads = heads;
  c.n_kv_heads = kv_heads;
  c.ffn_dim = ffn;
  c.max_seq = seq;
  c.tied_embeddings = tied;
  return c;
}
constexpr int64_t kGpt2Vocab = 50304;  // 50257 padded to a multiple of 128
}  // namespace

std::vector<std::string> ModelConfig::preset_names() { return {"tiny", "20m", "60m", "124m", "350m"}; }

ModelConfig ModelConfig::preset(const std::string& name) {
  //                  name    tokenizer vocab       dim  L   H   KV  ffn   seq   tied
  if (name == "tiny") return make("tiny", "byte", 256, 128, 4, 4, 4, 384, 256, true);
  if (name == "20m") return make("20m", "gpt2", kGpt2Vocab, 256, 8, 8, 8, 768, 1024, true);
  if (name == "60m") return make("60m", "gpt2", kGpt2Vocab, 512, 10, 8, 8, 1408, 1024, true);
  if (name == "124m") return make("124m", "gpt2", kGpt2Vocab, 768, 12, 12, 12, 2048, 1024, true);
  if (name == "350m") return make("350m", "gpt2", kGpt2Vocab, 1024, 24, 16, 16, 2816, 1024, true);
  fail("unknown model '", name, "' (presets: tiny, 20m, 60m, 124m, 350m; or a path to a model .json)");
}

ModelConfig ModelConfig::from_json(const Json& j, const std::string& what) {
  if (!j.is_object()) fail(what, ": a model config must be a JSON object");
  ModelConfig c = preset(j.contains("base") ? j.at("base").as_string() : "tiny");
  if (!j.contains("name")) c.name = "custom";
  for (const auto& [k, v] : j.as_object()) {
    const std::string where = what + ": field '" + k + "'";
    auto integer = [&]() {
      if (!v.is_number() || v.as_double() != std::floor(v.as_double()))
        fail(where, ": expected an integer, got ", v.dump());
      return v.as_int64();
    };
    auto number = [&]() {
      if (!v.is_number()) fail(where, ": expected a number, got ", v.dump());
      return v.as_double();
    };
    if (k == "base") continue;
    else if (k == "name") c.name = v.as_string();
    else if (k == "tokenizer") c.tokenizer = v.as_string();
    else if (k == "vocab_size") c.vocab_size = integer();
    else if (k == "dim") c.dim = integer();
    else if (k == "n_layers") c.n_layers = static_cast<int>(integer());
    else if (k == "n_heads") c.n_heads = static_cast<int>(integer());
    else if (k == "n_kv_heads") c.n_kv_heads = static_cast<int>(integer());
    else if (k == "ffn_dim") c.ffn_dim = integer();
    else if (k == "max_seq") c.max_seq = integer();
    else if (k == "rope_theta") c.rope_theta = number();
    else if (k == "norm_eps") c.norm_eps = number();
    else if (k == "init_std") c.init_std = number();
    else if (k == "tied_embeddings") {
      if (!v.is_bool()) fail(where, ": expected true or false");
      c.tied_embeddings = v.as_bool();
    } else {
      fail(what, ": unknown model field '", k,
           "' (known: base, name, tokenizer, vocab_size, dim, n_layers, n_heads, n_kv_heads, ffn_dim, "
           "max_seq, rope_theta, norm_eps, tied_embeddings, init_std)");
    }
  }
  if (!j.contains("n_kv_heads") && j.contains("n_heads")) c.n_kv_heads = c.n_heads;
  c.validate();
  return c;
}

ModelConfig ModelConfig::resolve(const std::string& spec) {
  const bool is_file = spec.find('/') != std::string::npos || (spec.size() > 5 && spec.substr(spec.size() - 5) == ".json");
  if (!is_file) return preset(spec);
  try {
    return from_json(Json::parse(read_file(spec), spec), spec);
  } catch (const Error& e) {
    const std::string m = e.what();
    if (m.rfind(spec, 0) == 0) throw;
    fail(spec, ": ", m);
  }
}

Json ModelConfig::to_json() const {
  Json j = Json::object();
  j["name"] = name;
  j["tokenizer"] = tokenizer;
  j["vocab_size"] = vocab_size;
  j["dim"] = dim;
  j["n_layers"] = n_layers;
  j["n_heads"] = n_heads;
  j["n_kv_heads"] = n_kv_heads;
  j["ffn_dim"] = ffn_dim;
  j["max_seq"] = max_seq;
  j["rope_theta"] = rope_theta;
  j["norm_eps"] = norm_eps;
  j["tied_embeddings"] = tied_embeddings;
  j["init_std"] = init_std;
  return j;
}

void ModelConfig::validate() const {
  auto positive = [&](const char* f, int64_t v) {
    if (v <= 0) fail("model ", name, ": ", f, " = ", v, " must be positive");
  };
  positive("vocab_size", vocab_size);
  positive("dim", dim);
  positive("n_layers", n_layers);
  positive("n_heads", n_heads);
  positive("n_kv_heads", n_kv_heads);
  positive("ffn_dim", ffn_dim);
  positive("max_seq", max_seq);
  if (dim % n_heads != 0) fail("model ", name, ": n_heads = ", n_heads, " does not divide dim = ", dim);
  if (n_heads % n_kv_heads != 0)
    fail("model ", name, ": n_kv_heads = ", n_kv_heads, " does not divide n_heads = ", n_heads);
  if (head_dim() % 2 != 0) fail("model ", name, ": head_dim = ", head_dim(), " must be even (RoPE)");
  for (auto [f, v] : {std::pair<const char*, int64_t>{"dim", dim}, {"ffn_dim", ffn_dim}, {"kv width (head_dim*n_kv_heads)", kv_dim()}})
    if (v % 32 != 0) fail("model ", name, ": ", f, " = ", v, " must be a multiple of 32 (4-bit blocks of 16 and 32)");
  if (tokenizer != "byte" && tokenizer != "gpt2") fail("model ", name, ": tokenizer '", tokenizer, "' (use byte or gpt2)");
  if (tokenizer == "byte" && vocab_size < 256) fail("model ", name, ": vocab_size ", vocab_size, " < 256 for the byte tokenizer");
  if (tokenizer == "gpt2" && vocab_size < 50257) fail("model ", name, ": vocab_size ", vocab_size, " < 50257 for the gpt2 tokenizer");
  if (!(norm_eps > 0) || !(rope_theta > 0) || !(init_std > 0)) fail("model ", name, ": norm_eps, rope_theta and init_std must be positive");
}

}  // namespace nibble
