// nibble data: tokenize text files into llm.c-layout token shards plus meta.json, the input
// of the trainer's DataLoader (the work is nibble::prepare_dataset; this file parses options
// and prints the summary).
#include <cstdio>

#include "args.hpp"
#include "data_command.hpp"
#include "nibble/data/prepare.hpp"
#include "nibble/data/tokenizer.hpp"
#include "nibble/error.hpp"

namespace nibble::cli {

namespace {

Args data_args() {
  Args a("data",
         "nibble data --input FILE... --tokenizer byte|gpt2 --out DIR [options]",
         "Tokenizes UTF-8 text files into DIR/train_NNNNNN.bin and DIR/val_NNNNNN.bin (llm.c's\n"
         "shard layout: a 256 x int32 header, then uint16 tokens) and DIR/meta.json.\n"
         "Every document starts with the EOT token (gpt2: 50256; byte: 0, the NUL byte).\n"
         "The last --val-fraction of each file's tokens goes to the validation split.");
  a.option("input", "FILE...", "text files (one or more values, or --input repeated)");
  a.option("tokenizer", "T", "byte | gpt2 (GPT-2 BPE from data/gpt2/)");
  a.option("out", "DIR", "output directory (created when missing)");
  a.option("val-fraction", "F", "share of each file's tokens for validation, in [0, 1)", "0.01");
  a.option("shard-tokens", "N", "tokens per shard", "100000000");
  a.option("doc-separator", "S", "file (each file is one document) | blank-lines\n(paragraphs) | none (no EOT at all)", "file");
  a.flag("overwrite", "replace the shards and meta.json of an earlier run in DIR");
  a.option("gpt2-dir", "DIR", "folder with encoder.json and vocab.bpe [default: data/gpt2]");
  return a;
}

// --input takes every following value up to the next option (`--input a.txt b.txt`), and
// may be repeated; Args parses single values, so the inputs are taken out first.
std::vector<std::string> take_inputs(const std::vector<std::string>& argv, std::vector<std::string>& rest) {
  std::vector<std::string> inputs;
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    if (a.rfind("--input=", 0) == 0) {
      inputs.push_back(a.substr(8));
    } else if (a == "--input") {
      const size_t before = inputs.size();
      while (i + 1 < argv.size() && argv[i + 1].rfind("--", 0) != 0) inputs.push_back(argv[++i]);
      if (inputs.size() == before) fail("option --input needs a value (FILE...)");
    } else {
      rest.push_back(a);
    }
  }
  return inputs;
}

}  // namespace

int run_data(const std::vector<std::string>& argv) {
  Args a = data_args();
  std::vector<std::string> rest;
  PrepareOptions o;
  o.inputs = take_inputs(argv, rest);
  if (!a.parse(rest)) return 0;
  if (o.inputs.empty()) fail("option --input is required (see nibble data --help)");
  const std::string tok_name = a.required("tokenizer");
  o.out_dir = a.required("out");
  o.val_fraction = a.number("val-fraction");
  if (!(o.val_fraction >= 0 && o.val_fraction < 1))
    fail("option --val-fraction: ", o.val_fraction, " must be in [0, 1)");
  o.shard_tokens = a.integer("shard-tokens");
  if (o.shard_tokens < 1 || o.shard_tokens > 2147483647)
    fail("option --shard-tokens: ", o.shard_tokens, " must be in [1, 2147483647]");
  o.separator = doc_separator_from_name(a.choice("doc-separator", {"file", "blank-lines", "none"}));
  o.overwrite = a.flag_set("overwrite");
  if (a.has("gpt2-dir") && tok_name != "gpt2") fail("option --gpt2-dir applies to --tokenizer gpt2 only");
  const auto tokenizer = make_tokenizer(tok_name, a.has("gpt2-dir") ? a.str("gpt2-dir") : "");

  const PrepareSummary s = prepare_dataset(o, *tokenizer);
  const double mb = static_cast<double>(s.bytes) / 1e6;
  std::printf("nibble data: %lld file%s, %lld document%s, %.2f MB -> %lld train + %lld val tokens "
              "(%s, %.2f bytes/token)\n",
              static_cast<long long>(s.files), s.files == 1 ? "" : "s",
              static_cast<long long>(s.documents), s.documents == 1 ? "" : "s", mb,
              static_cast<long long>(s.train_tokens), static_cast<long long>(s.val_tokens),
              tok_name.c_str(),
              static_cast<double>(s.bytes) / static_cast<double>(s.train_tokens + s.val_tokens));
  std::printf("nibble data: wrote %zu shard%s and meta.json to %s in %.2f s (%.2f MB/s)\n",
              s.shards.size(), s.shards.size() == 1 ? "" : "s", o.out_dir.c_str(), s.seconds,
              s.seconds > 0 ? mb / s.seconds : 0.0);
  return 0;
}

}  // namespace nibble::cli
