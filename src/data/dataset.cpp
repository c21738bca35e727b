#include "nibble/data/dataset.hpp"

#include "nibble/data/corpus.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <system_error>

#include "nibble/data/shard.hpp"
#include "nibble/error.hpp"
#include "nibble/fileio.hpp"
#include "nibble/json.hpp"

namespace nibble {

namespace fs = std::filesystem;

namespace {

constexpr int32_t kGpt2Vocab = 50257, kGpt2Eot = 50256;

// The expected vocabulary of a tokenizer name; 0 when nibble does not know the name.
int32_t known_vocab(const std::string& name) {
  if (name == "gpt2") return kGpt2Vocab;
  if (name == "byte") return 256;
  return 0;
}

std::vector<uint16_t> read_split(const std::vector<std::string>& files, int64_t vocab) {
  int64_t total = 0;
  for (const auto& f : files) total += shard_token_count(f);
  std::vector<uint16_t> out;
  out.reserve(static_cast<size_t>(total));
  for (const auto& f : files) {
    const std::vector<uint16_t> t = read_shard(f, vocab);
    out.insert(out.end(), t.begin(), t.end());
  }
  return out;
}

std::string human(int64_t n) {
  char buf[32];
  if (n >= 1000000000) std::snprintf(buf, sizeof buf, "%.2fB", static_cast<double>(n) / 1e9);
  else if (n >= 1000000) std::snprintf(buf, sizeof buf, "%.2fM", static_cast<double>(n) / 1e6);
  else if (n >= 1000) std::snprintf(buf, sizeof buf, "%.1fK", static_cast<double>(n) / 1e3);
  else std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(n));
  return buf;
}

}  // namespace

// "train" | "val" | "" from a file name: the split is one of the '_'-separated parts of the
// name without ".bin" (train_000000.bin, fineweb_val_000000.bin, tiny_shakespeare_train.bin).
std::string shard_split_of(std::string_view filename) {
  if (filename.size() <= 4 || filename.compare(filename.size() - 4, 4, ".bin") != 0) return "";
  const std::string_view stem = filename.substr(0, filename.size() - 4);
  bool train = false, val = false;
  for (size_t pos = 0; pos <= stem.size();) {
    size_t end = stem.find('_', pos);
    if (end == std::string_view::npos) end = stem.size();
    const std::string_view part = stem.substr(pos, end - pos);
    train |= part == "train";
    val |= part == "val";
    pos = end + 1;
  }
  if (train == val) return "";  // neither, or an ambiguous name
  return train ? "train" : "val";
}

TokenDataset TokenDataset::open(const std::string& dir, const DatasetOptions& options) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) fail("data directory ", dir, " does not exist");
  if (!fs::is_directory(dir, ec)) fail("data directory ", dir, " is not a directory");

  TokenDataset d;
  const std::string meta_path = (fs::path(dir) / "meta.json").string();
  const bool has_meta = file_exists(meta_path);
  const Json meta = has_meta ? Json::parse(read_file(meta_path), meta_path) : Json::object();
  if (has_meta) {
    if (!meta.is_object()) fail(meta_path, ": expected a JSON object, got ", meta.type_name());
    const Json* tok = meta.find("tokenizer");
    const Json* vocab = meta.find("vocab_size");
    if (!tok || !tok->is_string()) fail(meta_path, ": field 'tokenizer' (a string) is missing");
    if (!vocab || !vocab->is_int()) fail(meta_path, ": field 'vocab_size' (an integer) is missing");
    d.tokenizer = tok->as_string();
    const int64_t v = vocab->as_int64();
    if (v < 1 || v > 65536)
      fail(meta_path, ": vocab_size ", v, " does not fit uint16 tokens (1 .. 65536)");
    d.vocab_size = static_cast<int32_t>(v);
    if (const int32_t k = known_vocab(d.tokenizer); k != 0 && k != d.vocab_size)
      fail(meta_path, ": tokenizer '", d.tokenizer, "' has vocab_size ", k, ", not ", d.vocab_size);
    if (const Json* e = meta.find("eot"); e && e->is_int()) d.eot = static_cast<int32_t>(e->as_int64());
    else d.eot = d.tokenizer == "byte" ? 0 : d.vocab_size - 1;
    if (d.eot < 0 || d.eot >= d.vocab_size)
      fail(meta_path, ": eot ", d.eot, " is outside the vocabulary [0, ", d.vocab_size, ")");
  } else {
    // llm.c's shards carry no metadata; all of its GPT-2 data sets use these values.
    d.tokenizer = "gpt2";
    d.vocab_size = kGpt2Vocab;
    d.eot = kGpt2Eot;
  }

  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (!entry.is_regular_file(ec)) continue;
    const std::string split = shard_split_of(entry.path().filename().string());
    if (split == "train") d.train_sources.push_back(entry.path().string());
    if (split == "val") d.val_sources.push_back(entry.path().string());
  }
  if (ec) fail("data directory ", dir, ": cannot list: ", ec.message());
  std::sort(d.train_sources.begin(), d.train_sources.end());
  std::sort(d.val_sources.begin(), d.val_sources.end());
  if (d.train_sources.empty())
    fail("data directory ", dir, " has no train shards (expected train_*.bin from nibble data, or "
         "llm.c's *_train_*.bin)");

  d.train = read_split(d.train_sources, d.vocab_size);
  d.val = read_split(d.val_sources, d.vocab_size);
  if (has_meta) {  // a missing or extra shard shows as a count that differs from the record
    for (const char* split : {"train", "val"}) {
      const std::string key = std::string(split) + "_tokens";
      const Json* n = meta.find(key);
      const size_t have = split == std::string("train") ? d.train.size() : d.val.size();
      if (n && n->is_int() && n->as_int64() != static_cast<int64_t>(have))
        fail(meta_path, ": says ", n->as_int64(), " ", split, " tokens but the ", split,
             " shards in ", dir, " hold ", have, " (a shard missing, extra or from another run?)");
    }
  }
  if (d.train.empty()) fail("data directory ", dir, ": the train shards hold no tokens");

  if (d.val_sources.empty()) {
    if (!options.carve_val_if_missing)
      fail("data directory ", dir, " has no val shards (val_*.bin or *_val_*.bin)");
    const double f = options.carve_val_fraction;
    if (!(f > 0 && f < 1)) fail("dataset option carve_val_fraction ", f, " must be in (0, 1)");
    const auto n_val = static_cast<size_t>(std::floor(f * static_cast<double>(d.train.size())));
    if (n_val == 0 || n_val >= d.train.size())
      fail("data directory ", dir, " has no val shards, and its ", d.train.size(),
           " train tokens are too few to carve a validation split from");
    d.val.assign(d.train.end() - static_cast<std::ptrdiff_t>(n_val), d.train.end());
    d.train.resize(d.train.size() - n_val);
    char pct[32];
    std::snprintf(pct, sizeof pct, "%g%%", f * 100);
    d.warnings.push_back("data directory " + dir + " has no val shards: using the last " +
                         std::to_string(n_val) + " train tokens (" + pct +
                         ") as the validation split");
  }
  return d;
}

TokenDataset TokenDataset::from_text(const std::string& path, const Tokenizer& tokenizer,
                                     double val_fraction) {
  if (!(val_fraction >= 0 && val_fraction < 1))
    fail("validation fraction ", val_fraction, " must be in [0, 1)");
  if (tokenizer.vocab_size() > 65536)
    fail("tokenizer ", tokenizer.name(), " has ", tokenizer.vocab_size(),
         " ids, more than uint16 tokens hold");
  const std::string text = read_file(path);
  const std::vector<int32_t> ids = tokenizer.encode(text);
  TokenDataset d;
  d.tokenizer = tokenizer.name();
  d.vocab_size = tokenizer.vocab_size();
  d.eot = tokenizer.eot();
  std::vector<uint16_t> all;
  all.reserve(ids.size() + 1);
  all.push_back(static_cast<uint16_t>(d.eot));  // documents start with EOT, as in llm.c
  for (const int32_t id : ids) all.push_back(static_cast<uint16_t>(id));
  const auto n_val = static_cast<size_t>(std::floor(val_fraction * static_cast<double>(all.size())));
  d.val.assign(all.end() - static_cast<std::ptrdiff_t>(n_val), all.end());
  all.resize(all.size() - n_val);
  d.train = std::move(all);
  d.train_sources = {path};
  if (n_val > 0) d.val_sources = {path};
  return d;
}

std::string TokenDataset::describe() const {
  return tokenizer + " (vocab " + std::to_string(vocab_size) + "): " +
         human(static_cast<int64_t>(train.size())) + " train + " +
         human(static_cast<int64_t>(val.size())) + " val tokens";
}

TokenDataset open_run_data(const std::string& data_dir, const std::string& text_file, const Tokenizer& tokenizer,
                           double val_fraction) {
  if (!data_dir.empty()) return TokenDataset::open(data_dir);
  return TokenDataset::from_text(text_file.empty() ? default_corpus_path() : text_file, tokenizer, val_fraction);
}

}  // namespace nibble
