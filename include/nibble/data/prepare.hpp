#pragma once
// Text files -> a data directory of token shards (what `nibble data` runs):
//   DIR/train_000000.bin, train_000001.bin, ...   (shard.hpp, llm.c's layout)
//   DIR/val_000000.bin, ...
//   DIR/meta.json   {"tokenizer", "vocab_size", "eot", "train_tokens", "val_tokens",
//                    "train_shards", "val_shards", "shard_tokens", "val_fraction",
//                    "doc_separator", "sources": [{"path", "bytes", "documents",
//                    "tokens", "val_tokens"}]}
// Every document is prefixed with EOT (as llm.c does), except with DocSeparator::None.
// The last val_fraction of each input file's tokens goes to the validation split, so that
// every source is represented in it (the cut may fall inside a document).
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "nibble/data/tokenizer.hpp"

namespace nibble {

enum class DocSeparator {
  File,        // each input file is one document (the default)
  BlankLines,  // paragraphs: runs of non-blank lines; lines of spaces/tabs count as blank
  None,        // no EOT at all: the files' tokens are one stream
};
DocSeparator doc_separator_from_name(std::string_view name);  // "file" | "blank-lines" | "none"
std::string_view doc_separator_name(DocSeparator s);

// The documents of one file's text (views into `text`). Paragraphs exclude the newline
// that ends their last line. An empty text has no documents.
std::vector<std::string_view> split_documents(std::string_view text, DocSeparator sep);

struct PrepareOptions {
  std::vector<std::string> inputs;  // text files (UTF-8)
  std::string out_dir;              // created when missing
  double val_fraction = 0.01;       // in [0, 1)
  int64_t shard_tokens = 100'000'000;
  DocSeparator separator = DocSeparator::File;
  // DIR already holding shards or meta.json is an error (stale shards would mix with the
  // new ones); with overwrite those files (train_*.bin, val_*.bin, meta.json) are removed.
  bool overwrite = false;
};

struct PrepareSummary {
  int64_t files = 0, documents = 0, bytes = 0;
  int64_t train_tokens = 0, val_tokens = 0;
  std::vector<std::string> shards;  // paths written, in order
  double seconds = 0;               // wall time of the whole run
};

PrepareSummary prepare_dataset(const PrepareOptions& options, const Tokenizer& tokenizer);

}  // namespace nibble
