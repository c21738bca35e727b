#include "nibble/data/prepare.hpp"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <span>
#include <system_error>

#include "nibble/data/dataset.hpp"
#include "nibble/data/shard.hpp"
#include "nibble/error.hpp"
#include "nibble/fileio.hpp"
#include "nibble/json.hpp"

namespace nibble {

namespace fs = std::filesystem;

DocSeparator doc_separator_from_name(std::string_view name) {
  if (name == "file") return DocSeparator::File;
  if (name == "blank-lines") return DocSeparator::BlankLines;
  if (name == "none") return DocSeparator::None;
  fail("unknown document separator '", name, "' (valid: file, blank-lines, none)");
}

std::string_view doc_separator_name(DocSeparator s) {
  switch (s) {
    case DocSeparator::File: return "file";
    case DocSeparator::BlankLines: return "blank-lines";
    case DocSeparator::None: return "none";
  }
  return "?";
}

std::vector<std::string_view> split_documents(std::string_view text, DocSeparator sep) {
  if (text.empty()) return {};
  if (sep != DocSeparator::BlankLines) return {text};
  std::vector<std::string_view> docs;
  size_t doc_begin = std::string_view::npos, doc_end = 0;
  for (size_t pos = 0; pos < text.size();) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string_view::npos) eol = text.size();
    const bool blank = text.substr(pos, eol - pos).find_first_not_of(" \t\r\f\v") == std::string_view::npos;
    if (blank) {
      if (doc_begin != std::string_view::npos) docs.push_back(text.substr(doc_begin, doc_end - doc_begin));
      doc_begin = std::string_view::npos;
    } else {
      if (doc_begin == std::string_view::npos) doc_begin = pos;
      doc_end = eol;
    }
    pos = eol + 1;
  }
  if (doc_begin != std::string_view::npos) docs.push_back(text.substr(doc_begin, doc_end - doc_begin));
  return docs;
}

namespace {

// Cuts one split's token stream into shards of exactly shard_tokens (the last one shorter).
class ShardWriter {
 public:
  ShardWriter(std::string dir, std::string split, int64_t shard_tokens, std::vector<std::string>& written)
      : dir_(std::move(dir)), split_(std::move(split)), shard_tokens_(static_cast<size_t>(shard_tokens)),
        written_(written) {}

  void add(std::span<const uint16_t> tokens) {
    while (!tokens.empty()) {
      const size_t take = std::min(shard_tokens_ - buf_.size(), tokens.size());
      buf_.insert(buf_.end(), tokens.begin(), tokens.begin() + static_cast<std::ptrdiff_t>(take));
      tokens = tokens.subspan(take);
      if (buf_.size() == shard_tokens_) flush();
    }
  }
  void flush() {
    if (buf_.empty()) return;
    char name[64];
    std::snprintf(name, sizeof name, "%s_%06d.bin", split_.c_str(), index_++);
    const std::string path = (fs::path(dir_) / name).string();
    write_shard(path, buf_);
    written_.push_back(path);
    names_.push_back(name);
    buf_.clear();
  }
  const std::vector<std::string>& names() const { return names_; }

 private:
  std::string dir_, split_;
  size_t shard_tokens_;
  std::vector<std::string>& written_;
  std::vector<std::string> names_;
  std::vector<uint16_t> buf_;
  int index_ = 0;
};

// Files of an earlier run that the new one would mix with: shards and meta.json.
std::vector<fs::path> stale_outputs(const std::string& dir) {
  std::vector<fs::path> found;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name == "meta.json" || !shard_split_of(name).empty()) found.push_back(entry.path());
  }
  if (ec) fail(dir, ": cannot list: ", ec.message());
  return found;
}

}  // namespace

PrepareSummary prepare_dataset(const PrepareOptions& o, const Tokenizer& tokenizer) {
  const auto t0 = std::chrono::steady_clock::now();
  if (o.inputs.empty()) fail("no input files");
  if (o.out_dir.empty()) fail("no output directory");
  if (!(o.val_fraction >= 0 && o.val_fraction < 1))
    fail("validation fraction ", o.val_fraction, " must be in [0, 1)");
  if (o.shard_tokens < 1 || o.shard_tokens > std::numeric_limits<int32_t>::max())
    fail("shard size ", o.shard_tokens, " tokens must be in [1, 2^31 - 1]");
  if (tokenizer.vocab_size() > 65536)
    fail("tokenizer ", tokenizer.name(), " has ", tokenizer.vocab_size(),
         " ids, more than uint16 shards hold");
  std::error_code ec;
  for (const auto& in : o.inputs)  // fail on a typo before any work is done
    if (!fs::is_regular_file(in, ec)) fail(in, ": no such input file");

  fs::create_directories(o.out_dir, ec);
  if (ec) fail(o.out_dir, ": cannot create the output directory: ", ec.message());
  if (const auto stale = stale_outputs(o.out_dir); !stale.empty()) {
    if (!o.overwrite)
      fail(o.out_dir, " already holds a data set (", stale.front().filename().string(),
           "); choose an empty directory or overwrite it (nibble data --overwrite)");
    for (const auto& p : stale) {
      fs::remove(p, ec);
      if (ec) fail(p.string(), ": cannot remove: ", ec.message());
    }
  }

  PrepareSummary sum;
  ShardWriter train(o.out_dir, "train", o.shard_tokens, sum.shards);
  ShardWriter val(o.out_dir, "val", o.shard_tokens, sum.shards);
  Json sources = Json::array();
  const auto eot = static_cast<uint16_t>(tokenizer.eot());
  for (const auto& in : o.inputs) {
    const std::string text = read_file(in);
    const std::vector<std::string_view> docs = split_documents(text, o.separator);
    std::vector<uint16_t> tokens;
    tokens.reserve(text.size() / 3 + docs.size());
    for (const std::string_view doc : docs) {
      if (o.separator != DocSeparator::None) tokens.push_back(eot);
      for (const int32_t id : tokenizer.encode(doc)) tokens.push_back(static_cast<uint16_t>(id));
    }
    const auto n_val = static_cast<size_t>(std::floor(o.val_fraction * static_cast<double>(tokens.size())));
    const std::span<const uint16_t> all(tokens);
    train.add(all.first(all.size() - n_val));
    val.add(all.last(n_val));

    Json src = Json::object();
    src["path"] = in;
    src["bytes"] = static_cast<int64_t>(text.size());
    src["documents"] = static_cast<int64_t>(docs.size());
    src["tokens"] = static_cast<int64_t>(tokens.size());
    src["val_tokens"] = static_cast<int64_t>(n_val);
    sources.push_back(std::move(src));
    sum.files += 1;
    sum.documents += static_cast<int64_t>(docs.size());
    sum.bytes += static_cast<int64_t>(text.size());
    sum.train_tokens += static_cast<int64_t>(tokens.size() - n_val);
    sum.val_tokens += static_cast<int64_t>(n_val);
  }
  if (sum.train_tokens == 0) fail("the inputs hold no text: no train tokens");
  if (o.val_fraction > 0 && sum.val_tokens == 0)
    fail("the validation split is empty: ", o.val_fraction, " of each file's tokens rounds to 0 (",
         sum.train_tokens, " tokens in all); use more text or a larger validation fraction");
  train.flush();
  val.flush();

  Json meta = Json::object();
  meta["format"] = "llm.c token shards: 256 x int32 header (20240520, 1, n), then n uint16 tokens";
  meta["tokenizer"] = tokenizer.name();
  meta["vocab_size"] = tokenizer.vocab_size();
  meta["eot"] = tokenizer.eot();
  meta["train_tokens"] = sum.train_tokens;
  meta["val_tokens"] = sum.val_tokens;
  Json train_names = Json::array(), val_names = Json::array();
  for (const auto& n : train.names()) train_names.push_back(n);
  for (const auto& n : val.names()) val_names.push_back(n);
  meta["train_shards"] = std::move(train_names);
  meta["val_shards"] = std::move(val_names);
  meta["shard_tokens"] = o.shard_tokens;
  meta["val_fraction"] = o.val_fraction;
  meta["doc_separator"] = doc_separator_name(o.separator);
  meta["sources"] = std::move(sources);
  // Written last: a directory with meta.json is a finished data set.
  write_file_atomic((fs::path(o.out_dir) / "meta.json").string(), meta.dump(2) + "\n");
  sum.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return sum;
}

}  // namespace nibble
