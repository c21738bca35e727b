#pragma once
// A tokenized corpus in memory: the train and validation token streams (uint16) and the
// tokenizer they belong to. Made from a directory of shards (nibble's or llm.c's) or, for
// small experiments, straight from a text file.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "nibble/data/tokenizer.hpp"

namespace nibble {

struct DatasetOptions {
  // A directory without val shards: carve the validation split from the last
  // `carve_val_fraction` of the train tokens and say so in TokenDataset::warnings (true),
  // or fail (false). llm.c's own downloads always have val shards; this is for home-made ones.
  bool carve_val_if_missing = true;
  double carve_val_fraction = 0.01;
};

struct TokenDataset {
  std::string tokenizer;  // "gpt2" | "byte" (make_tokenizer's names)
  int32_t vocab_size = 0;
  int32_t eot = -1;       // the document separator id
  std::vector<uint16_t> train, val;
  std::vector<std::string> train_sources, val_sources;  // shards read, in order (or the text file)
  std::vector<std::string> warnings;  // things a run should print (e.g. a carved val split)

  // A data directory in either layout:
  //   nibble's   meta.json + train_NNNNNN.bin + val_NNNNNN.bin (written by `nibble data`);
  //              meta.json gives the tokenizer, and its token counts are checked;
  //   llm.c's    no meta.json; shards named like fineweb_train_000001.bin / *_val_*.bin (or
  //              tiny_shakespeare_train.bin): GPT-2 tokens, vocab 50257, EOT 50256.
  // A shard belongs to a split when "train" or "val" is one of the '_'-separated parts of its
  // name (without .bin); the shards of a split are concatenated in name order.
  static TokenDataset open(const std::string& dir, const DatasetOptions& options = {});

  // Tokenizes a whole text file as one document: [EOT] + encode(text); the last
  // floor(val_fraction * tokens) tokens are the validation split (val_fraction in [0, 1)).
  static TokenDataset from_text(const std::string& path, const Tokenizer& tokenizer,
                                double val_fraction);

  std::string describe() const;  // "gpt2 (vocab 50257): 1.2M train + 12.3K val tokens"
};

// A run's data as its configuration names it: a token directory, else a text file, else the
// embedded default corpus (tokenized with `tokenizer`, `val_fraction` held out).
TokenDataset open_run_data(const std::string& data_dir, const std::string& text_file, const Tokenizer& tokenizer,
                           double val_fraction);

// The split a shard file name belongs to under the rule above: "train", "val" or "" (not a
// shard, or a name with both parts).
std::string shard_split_of(std::string_view filename);

}  // namespace nibble
