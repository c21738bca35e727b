// Hugging Face LLaMA interop (see hf_interop.hpp).
#include "nibble/nn/hf_interop.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>

#include "nibble/dtype.hpp"
#include "nibble/error.hpp"
#include "nibble/fileio.hpp"
#include "nibble/safetensors.hpp"
#include "nibble/train/checkpoint.hpp"
#include "nibble/train/train_config.hpp"

namespace nibble {
namespace fs = std::filesystem;

namespace {

int64_t get_int(const Json& j, const char* key, const std::string& what) {
  if (!j.contains(key)) fail(what, ": field '", key, "' is missing");
  return j.at(key).as_int64();
}

// Fields that would change the architecture away from nibble's, refused by name.
void refuse_unsupported(const Json& hf, const std::string& what) {
  auto truthy = [&](const char* k) { return hf.contains(k) && !hf.at(k).is_null() && hf.at(k).is_bool() && hf.at(k).as_bool(); };
  if (truthy("attention_bias")) fail(what, ": attention_bias = true is not supported (nibble's projections have no bias)");
  if (truthy("mlp_bias")) fail(what, ": mlp_bias = true is not supported");
  if (hf.contains("rope_scaling") && !hf.at("rope_scaling").is_null())
    fail(what, ": rope_scaling is not supported (plain RoPE only)");
  if (hf.contains("hidden_act") && hf.at("hidden_act").as_string() != "silu")
    fail(what, ": hidden_act '", hf.at("hidden_act").as_string(), "' is not supported (silu only)");
  if (hf.contains("model_type") && hf.at("model_type").as_string() != "llama")
    fail(what, ": model_type '", hf.at("model_type").as_string(), "' (only llama)");
}

}  // namespace

ModelConfig model_config_from_hf(const Json& hf, const std::string& what, const std::string& tokenizer) {
  refuse_unsupported(hf, what);
  ModelConfig m;
  m.name = "hf";
  m.tokenizer = tokenizer;
  m.vocab_size = get_int(hf, "vocab_size", what);
  m.dim = get_int(hf, "hidden_size", what);
  m.n_layers = static_cast<int>(get_int(hf, "num_hidden_layers", what));
  m.n_heads = static_cast<int>(get_int(hf, "num_attention_heads", what));
  m.n_kv_heads = hf.contains("num_key_value_heads") ? static_cast<int>(hf.at("num_key_value_heads").as_int64()) : m.n_heads;
  m.ffn_dim = get_int(hf, "intermediate_size", what);
  m.max_seq = hf.contains("max_position_embeddings") ? hf.at("max_position_embeddings").as_int64() : 2048;
  m.rope_theta = hf.contains("rope_theta") ? hf.at("rope_theta").as_double() : 10000.0;
  m.norm_eps = hf.contains("rms_norm_eps") ? hf.at("rms_norm_eps").as_double() : 1e-6;
  m.tied_embeddings = hf.contains("tie_word_embeddings") && hf.at("tie_word_embeddings").as_bool();
  if (hf.contains("head_dim") && !hf.at("head_dim").is_null() && hf.at("head_dim").as_int64() != m.head_dim())
    fail(what, ": head_dim ", hf.at("head_dim").as_int64(), " differs from hidden_size / num_attention_heads = ", m.head_dim());
  m.validate();
  return m;
}

Json model_config_to_hf(const ModelConfig& m, const std::string& torch_dtype) {
  Json j = Json::object();
  Json arch = Json::array();
  arch.push_back(std::string("LlamaForCausalLM"));
  j["architectures"] = arch;
  j["model_type"] = "llama";
  j["hidden_size"] = m.dim;
  j["intermediate_size"] = m.ffn_dim;
  j["num_hidden_layers"] = m.n_layers;
  j["num_attention_heads"] = m.n_heads;
  j["num_key_value_heads"] = m.n_kv_heads;
  j["head_dim"] = m.head_dim();
  j["vocab_size"] = m.vocab_size;
  j["max_position_embeddings"] = m.max_seq;
  j["rms_norm_eps"] = m.norm_eps;
  j["rope_theta"] = m.rope_theta;
  j["tie_word_embeddings"] = m.tied_embeddings;
  j["hidden_act"] = "silu";
  j["attention_bias"] = false;
  j["mlp_bias"] = false;
  j["torch_dtype"] = torch_dtype;
  return j;
}

namespace {

// The checkpoint's tensors: model.safetensors, or the shards a model.safetensors.index.json
// maps each tensor to (how HF saves models above a few GB). `where` names the source in errors.
SafeTensors read_hf_tensors(const std::string& hf_dir, std::string& where) {
  const fs::path single = fs::path(hf_dir) / "model.safetensors";
  const fs::path index = fs::path(hf_dir) / "model.safetensors.index.json";
  if (fs::exists(single)) {
    where = single.string();
    return read_safetensors(where);
  }
  if (!fs::exists(index)) fail(hf_dir, ": neither model.safetensors nor model.safetensors.index.json");
  where = index.string();
  const Json j = Json::parse(read_file(where), where);
  const Json* map = j.find("weight_map");
  if (!map || !map->is_object()) fail(where, ": no \"weight_map\" object");
  std::map<std::string, std::vector<std::string>> by_file;  // shard → the tensors the index puts there
  for (const auto& [name, file] : map->as_object()) {
    if (!file.is_string()) fail(where, ": weight_map[\"", name, "\"] is not a file name");
    const std::string f = file.as_string();
    if (f.empty() || f.find('/') != std::string::npos || f.find("..") != std::string::npos)
      fail(where, ": weight_map[\"", name, "\"] = \"", f, "\" is not a file of this directory");
    by_file[f].push_back(name);
  }
  SafeTensors all;
  all.source = where;
  for (const auto& [file, names] : by_file) {
    const std::string path = (fs::path(hf_dir) / file).string();
    if (!fs::exists(path)) fail(where, ": shard ", file, " (of ", names.size(), " tensors) is missing");
    SafeTensors shard = read_safetensors(path);
    for (const std::string& name : names) {
      auto it = std::find_if(shard.tensors.begin(), shard.tensors.end(), [&](const auto& e) { return e.first == name; });
      if (it == shard.tensors.end()) fail(path, ": tensor '", name, "' is not there, though ", where, " says it is");
      all.add(name, std::move(it->second));
    }
  }
  return all;
}

}  // namespace

void import_hf(const std::string& hf_dir, const std::string& out_dir, const std::string& tokenizer) {
  const std::string cfg_path = (fs::path(hf_dir) / "config.json").string();
  if (!fs::exists(cfg_path)) fail(hf_dir, ": no config.json");
  TrainConfig tc;
  tc.model = model_config_from_hf(Json::parse(read_file(cfg_path), cfg_path), cfg_path, tokenizer);
  tc.recipe = Recipe::preset("bf16");
  tc.seq = std::min<int64_t>(tc.seq, tc.model.max_seq);
  tc.out = out_dir;
  std::string st_path;
  const SafeTensors in = read_hf_tensors(hf_dir, st_path);
  const std::vector<ParamInfo> params = transformer_param_layout(tc.model);
  SafeTensors out;
  for (const ParamInfo& p : params) {
    const Tensor& t = in.get(p.name);
    if (t.shape() != p.shape)
      fail(st_path, ": tensor '", p.name, "' has shape ", shape_str(t.shape()), ", the config implies ", shape_str(p.shape));
    out.add(p.name, t.to_f32());
  }
  if (tc.model.tied_embeddings) {
    if (const Tensor* head = in.find("lm_head.weight")) {
      const Tensor a = head->to_f32(), b = out.get("model.embed_tokens.weight");
      if (a.shape() != b.shape() || std::memcmp(a.data<float>(), b.data<float>(), static_cast<size_t>(b.numel()) * 4) != 0)
        fail(st_path, ": tie_word_embeddings is true but lm_head.weight differs from model.embed_tokens.weight");
    }
  }
  out.metadata["format"] = "pt";
  out.metadata["producer"] = "nibble (imported from Hugging Face)";
  fs::create_directories(out_dir);
  write_safetensors((fs::path(out_dir) / "model.safetensors").string(), out);
  write_file_atomic((fs::path(out_dir) / "config.json").string(), tc.to_json().dump(2) + "\n", Durability::Fsync);
}

void export_hf(const std::string& checkpoint, const std::string& out_dir, const std::string& dtype) {
  if (dtype != "f32" && dtype != "bf16") fail("export dtype '", dtype, "' (use f32 or bf16)");
  const std::string ck = resolve_checkpoint_dir(checkpoint);
  const TrainConfig tc = TrainConfig::from_json(read_checkpoint_config(ck), ck + "/config.json");
  const std::vector<ParamInfo> params = transformer_param_layout(tc.model);
  const Checkpoint c = load_checkpoint(ck, params, false);
  SafeTensors out;
  for (const ParamInfo& p : params) {
    if (dtype == "f32") {
      Tensor t(p.shape, DType::F32);
      std::copy(c.weights.begin() + p.offset, c.weights.begin() + p.offset + p.numel, t.data<float>());
      out.add(p.name, std::move(t));
    } else {
      Tensor t(p.shape, DType::BF16);
      uint16_t* d = t.data<uint16_t>();
      for (int64_t i = 0; i < p.numel; ++i) d[i] = bf16_from_float(c.weights[static_cast<size_t>(p.offset + i)]);
      out.add(p.name, std::move(t));
    }
  }
  out.metadata["format"] = "pt";
  fs::create_directories(out_dir);
  write_safetensors((fs::path(out_dir) / "model.safetensors").string(), out);
  write_file_atomic((fs::path(out_dir) / "config.json").string(),
                    model_config_to_hf(tc.model, dtype == "f32" ? "float32" : "bfloat16").dump(2) + "\n", Durability::Fsync);
}

}  // namespace nibble
