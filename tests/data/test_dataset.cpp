// Token data sets: llm.c's directory layout, nibble's (from prepare_dataset, the work of
// `nibble data`), a text file tokenized in memory, and the errors.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "nibble/data/corpus.hpp"
#include "nibble/data/dataset.hpp"
#include "nibble/data/prepare.hpp"
#include "nibble/data/shard.hpp"
#include "nibble/data/tokenizer.hpp"
#include "nibble/error.hpp"
#include "nibble/fileio.hpp"
#include "nibble/json.hpp"
#include "support/cli_runner.hpp"

using namespace nibble;
using nibble::testing::ScratchDir;
namespace fs = std::filesystem;

namespace {

std::vector<uint16_t> seq(uint16_t from, uint16_t n) {
  std::vector<uint16_t> v(n);
  for (uint16_t i = 0; i < n; ++i) v[i] = static_cast<uint16_t>(from + i);
  return v;
}

template <class F>
void expect_error(F&& f, const std::vector<std::string>& phrases) {
  try {
    f();
    ADD_FAILURE() << "no error; expected: " << phrases.front();
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& ph : phrases) EXPECT_NE(msg.find(ph), std::string::npos) << "expected '" << ph << "' in: " << msg;
  }
}

std::vector<uint16_t> byte_tokens(const std::string& s) {
  std::vector<uint16_t> v;
  for (const char c : s) v.push_back(static_cast<unsigned char>(c));
  return v;
}

}  // namespace

// ---- reading directories ------------------------------------------------------------------

TEST(DatasetDir, ReadsLlmcLayout) {
  ScratchDir dir;
  // As llm.c's fineweb.py names them: shard 0 is val, the train shards follow.
  write_shard(dir.file("fineweb_val_000000.bin"), seq(50000, 100));
  write_shard(dir.file("fineweb_train_000002.bin"), seq(2000, 300));
  write_shard(dir.file("fineweb_train_000001.bin"), seq(1000, 200));
  write_file_atomic(dir.file("README.txt"), "not a shard");
  write_file_atomic(dir.file("weights.bin"), "not a shard either");
  const TokenDataset d = TokenDataset::open(dir.path().string());
  EXPECT_EQ(d.tokenizer, "gpt2");
  EXPECT_EQ(d.vocab_size, 50257);
  EXPECT_EQ(d.eot, 50256);
  std::vector<uint16_t> train = seq(1000, 200), more = seq(2000, 300);
  train.insert(train.end(), more.begin(), more.end());
  EXPECT_EQ(d.train, train);  // in name order
  EXPECT_EQ(d.val, seq(50000, 100));
  ASSERT_EQ(d.train_sources.size(), 2u);
  EXPECT_TRUE(d.train_sources[0].ends_with("fineweb_train_000001.bin"));
  EXPECT_TRUE(d.warnings.empty());
  EXPECT_EQ(d.describe(), "gpt2 (vocab 50257): 500 train + 100 val tokens");
}

TEST(DatasetDir, ReadsTinyShakespeareNaming) {
  ScratchDir dir;
  write_shard(dir.file("tiny_shakespeare_train.bin"), seq(0, 50));
  write_shard(dir.file("tiny_shakespeare_val.bin"), seq(100, 10));
  const TokenDataset d = TokenDataset::open(dir.path().string());
  EXPECT_EQ(d.train, seq(0, 50));
  EXPECT_EQ(d.val, seq(100, 10));
}

TEST(DatasetDir, ShardSplitOfNames) {
  EXPECT_EQ(shard_split_of("train_000000.bin"), "train");
  EXPECT_EQ(shard_split_of("val_000003.bin"), "val");
  EXPECT_EQ(shard_split_of("fineweb_train_000001.bin"), "train");
  EXPECT_EQ(shard_split_of("edu_fineweb_val_000000.bin"), "val");
  EXPECT_EQ(shard_split_of("tiny_shakespeare_val.bin"), "val");
  EXPECT_EQ(shard_split_of("training_000000.bin"), "");
  EXPECT_EQ(shard_split_of("train_000000.txt"), "");
  EXPECT_EQ(shard_split_of("meta.json"), "");
  EXPECT_EQ(shard_split_of("train_val.bin"), "");
}

TEST(DatasetDir, MissingDirectoryAndNoTrainShards) {
  ScratchDir dir;
  expect_error([&] { (void)TokenDataset::open(dir.file("nope")); }, {dir.file("nope"), "does not exist"});
  write_shard(dir.file("fineweb_val_000000.bin"), seq(0, 10));
  expect_error([&] { (void)TokenDataset::open(dir.path().string()); },
               {dir.path().string(), "no train shards"});
}

TEST(DatasetDir, NoValShardsCarvesOrFails) {
  ScratchDir dir;
  write_shard(dir.file("fineweb_train_000001.bin"), seq(0, 1000));
  DatasetOptions strict;
  strict.carve_val_if_missing = false;
  expect_error([&] { (void)TokenDataset::open(dir.path().string(), strict); }, {"no val shards"});
  const TokenDataset d = TokenDataset::open(dir.path().string());  // default: carve 1%
  EXPECT_EQ(d.train, seq(0, 990));
  EXPECT_EQ(d.val, seq(990, 10));
  ASSERT_EQ(d.warnings.size(), 1u);
  EXPECT_NE(d.warnings[0].find("no val shards: using the last 10 train tokens (1%)"), std::string::npos)
      << d.warnings[0];
}

TEST(DatasetDir, TokenOutsideTheVocabularyNamesTheShard) {
  ScratchDir dir;
  write_shard(dir.file("fineweb_train_000001.bin"), std::vector<uint16_t>{1, 2, 50257, 3});
  write_shard(dir.file("fineweb_val_000000.bin"), std::vector<uint16_t>{1});
  expect_error([&] { (void)TokenDataset::open(dir.path().string()); },
               {"fineweb_train_000001.bin", "token 50257 at index 2", "vocab_size 50257"});
}

TEST(DatasetDir, MetaJsonGivesTheTokenizerAndIsChecked) {
  ScratchDir dir;
  write_shard(dir.file("train_000000.bin"), std::vector<uint16_t>{0, 72, 105, 255});
  write_shard(dir.file("val_000000.bin"), std::vector<uint16_t>{0, 33});
  Json meta = Json::object();
  meta["tokenizer"] = "byte";
  meta["vocab_size"] = 256;
  meta["eot"] = 0;
  meta["train_tokens"] = 4;
  meta["val_tokens"] = 2;
  write_file_atomic(dir.file("meta.json"), meta.dump(2));
  const TokenDataset d = TokenDataset::open(dir.path().string());
  EXPECT_EQ(d.tokenizer, "byte");
  EXPECT_EQ(d.vocab_size, 256);
  EXPECT_EQ(d.eot, 0);
  EXPECT_EQ(d.train, (std::vector<uint16_t>{0, 72, 105, 255}));

  meta["train_tokens"] = 8;  // a shard went missing
  write_file_atomic(dir.file("meta.json"), meta.dump(2));
  expect_error([&] { (void)TokenDataset::open(dir.path().string()); },
               {"meta.json", "says 8 train tokens", "hold 4"});
  meta["train_tokens"] = 4;
  meta["vocab_size"] = 300;
  write_file_atomic(dir.file("meta.json"), meta.dump(2));
  expect_error([&] { (void)TokenDataset::open(dir.path().string()); }, {"'byte' has vocab_size 256, not 300"});
  meta["vocab_size"] = 256;
  write_shard(dir.file("train_000001.bin"), std::vector<uint16_t>{256});  // out of the byte vocabulary
  meta["train_tokens"] = 5;
  write_file_atomic(dir.file("meta.json"), meta.dump(2));
  expect_error([&] { (void)TokenDataset::open(dir.path().string()); },
               {"train_000001.bin", "token 256 at index 0"});
}

// ---- from text ----------------------------------------------------------------------------

TEST(DatasetText, TokenizesAFileWithALeadingEot) {
  ScratchDir dir;
  const std::string text(199, 'x');
  write_file_atomic(dir.file("t.txt"), text);
  const auto tok = make_tokenizer("byte");
  const TokenDataset d = TokenDataset::from_text(dir.file("t.txt"), *tok, 0.1);
  // 200 tokens: EOT + 199 bytes; the last 20 are validation.
  ASSERT_EQ(d.train.size(), 180u);
  ASSERT_EQ(d.val.size(), 20u);
  EXPECT_EQ(d.train[0], 0);
  EXPECT_EQ(d.train[1], 'x');
  EXPECT_EQ(d.val.back(), 'x');
  EXPECT_EQ(d.tokenizer, "byte");
  expect_error([&] { (void)TokenDataset::from_text(dir.file("t.txt"), *tok, 1.0); }, {"must be in [0, 1)"});
  expect_error([&] { (void)TokenDataset::from_text(dir.file("missing.txt"), *tok, 0.1); }, {"missing.txt"});
}

TEST(DatasetText, TheBundledCorpusWithGpt2) {
  const auto tok = make_tokenizer("gpt2");
  const TokenDataset d = TokenDataset::from_text(default_corpus_path(), *tok, 0.01);
  // 797616 tokens (see test_tokenizer.cpp) + the leading EOT.
  EXPECT_EQ(d.train.size() + d.val.size(), 797617u);
  EXPECT_EQ(d.val.size(), 7976u);
  EXPECT_EQ(d.train[0], 50256);
}

// ---- prepare_dataset (nibble data) ---------------------------------------------------------

TEST(DatasetPrepare, SplitsDocumentsOnBlankLines) {
  const std::string text = "\n\npara one\nline two\n \t\n\npara two\n\n\nlast";
  EXPECT_EQ(split_documents(text, DocSeparator::BlankLines),
            (std::vector<std::string_view>{"para one\nline two", "para two", "last"}));
  EXPECT_EQ(split_documents(text, DocSeparator::File), (std::vector<std::string_view>{text}));
  EXPECT_TRUE(split_documents("", DocSeparator::File).empty());
  EXPECT_TRUE(split_documents("\n \n", DocSeparator::BlankLines).empty());
  EXPECT_EQ(doc_separator_from_name("blank-lines"), DocSeparator::BlankLines);
  expect_error([] { (void)doc_separator_from_name("lines"); }, {"'lines'", "file, blank-lines, none"});
}

TEST(DatasetPrepare, WritesShardsAndMetaThatReadBack) {
  ScratchDir dir;
  const std::string a = std::string(150, 'a') + "\n\n" + std::string(49, 'b');  // 201 bytes
  const std::string b(99, 'c');
  write_file_atomic(dir.file("a.txt"), a);
  write_file_atomic(dir.file("b.txt"), b);
  const auto tok = make_tokenizer("byte");
  PrepareOptions o;
  o.inputs = {dir.file("a.txt"), dir.file("b.txt")};
  o.out_dir = dir.file("out");
  o.val_fraction = 0.1;
  o.shard_tokens = 128;
  const PrepareSummary s = prepare_dataset(o, *tok);
  // a: EOT + 201 bytes = 202 tokens, 20 to val; b: EOT + 99 = 100 tokens, 10 to val.
  EXPECT_EQ(s.files, 2);
  EXPECT_EQ(s.documents, 2);
  EXPECT_EQ(s.bytes, 300);
  EXPECT_EQ(s.train_tokens, 272);
  EXPECT_EQ(s.val_tokens, 30);
  EXPECT_TRUE(file_exists(dir.file("out/train_000000.bin")));
  EXPECT_TRUE(file_exists(dir.file("out/train_000002.bin")));  // 128 + 128 + 16
  EXPECT_FALSE(file_exists(dir.file("out/train_000003.bin")));
  EXPECT_EQ(shard_token_count(dir.file("out/train_000002.bin")), 16);
  EXPECT_EQ(shard_token_count(dir.file("out/val_000000.bin")), 30);

  std::vector<uint16_t> ta = byte_tokens(a), tb = byte_tokens(b);
  ta.insert(ta.begin(), 0);
  tb.insert(tb.begin(), 0);
  std::vector<uint16_t> train(ta.begin(), ta.end() - 20), val(ta.end() - 20, ta.end());
  train.insert(train.end(), tb.begin(), tb.end() - 10);
  val.insert(val.end(), tb.end() - 10, tb.end());
  const TokenDataset d = TokenDataset::open(o.out_dir);
  EXPECT_EQ(d.tokenizer, "byte");
  EXPECT_EQ(d.vocab_size, 256);
  EXPECT_EQ(d.train, train);
  EXPECT_EQ(d.val, val);

  const Json meta = Json::parse(read_file(dir.file("out/meta.json")));
  EXPECT_EQ(meta.at("tokenizer").as_string(), "byte");
  EXPECT_EQ(meta.at("vocab_size").as_int64(), 256);
  EXPECT_EQ(meta.at("eot").as_int64(), 0);
  EXPECT_EQ(meta.at("train_tokens").as_int64(), 272);
  EXPECT_EQ(meta.at("val_tokens").as_int64(), 30);
  EXPECT_EQ(meta.at("train_shards").size(), 3u);
  ASSERT_EQ(meta.at("sources").size(), 2u);
  EXPECT_EQ(meta.at("sources").as_array()[0].at("path").as_string(), dir.file("a.txt"));
  EXPECT_EQ(meta.at("sources").as_array()[0].at("tokens").as_int64(), 202);
}

TEST(DatasetPrepare, BlankLineDocumentsEachStartWithEot) {
  ScratchDir dir;
  write_file_atomic(dir.file("a.txt"), "one\n\ntwo\n\n\nthree\n");
  const auto tok = make_tokenizer("byte");
  PrepareOptions o;
  o.inputs = {dir.file("a.txt")};
  o.out_dir = dir.file("out");
  o.val_fraction = 0;
  o.separator = DocSeparator::BlankLines;
  const PrepareSummary s = prepare_dataset(o, *tok);
  EXPECT_EQ(s.documents, 3);
  EXPECT_EQ(read_shard(dir.file("out/train_000000.bin"), 256), byte_tokens(std::string("\0one\0two\0three", 14)));
  EXPECT_FALSE(file_exists(dir.file("out/val_000000.bin")));
  // none: the text as one stream, no EOT.
  o.separator = DocSeparator::None;
  o.overwrite = true;
  (void)prepare_dataset(o, *tok);
  EXPECT_EQ(read_shard(dir.file("out/train_000000.bin"), 256), byte_tokens("one\n\ntwo\n\n\nthree\n"));
}

TEST(DatasetPrepare, RefusesToMixWithAnEarlierRun) {
  ScratchDir dir;
  write_file_atomic(dir.file("a.txt"), std::string(1000, 'a'));
  const auto tok = make_tokenizer("byte");
  PrepareOptions o;
  o.inputs = {dir.file("a.txt")};
  o.out_dir = dir.file("out");
  o.shard_tokens = 100;
  (void)prepare_dataset(o, *tok);
  EXPECT_TRUE(file_exists(dir.file("out/train_000009.bin")));
  expect_error([&] { (void)prepare_dataset(o, *tok); }, {dir.file("out"), "already holds a data set"});
  o.overwrite = true;
  o.shard_tokens = 1000;
  (void)prepare_dataset(o, *tok);
  EXPECT_FALSE(file_exists(dir.file("out/train_000009.bin")));  // stale shards removed
  EXPECT_EQ(TokenDataset::open(o.out_dir).train.size(), 991u);
}

TEST(DatasetPrepare, ErrorsNameTheProblem) {
  ScratchDir dir;
  const auto tok = make_tokenizer("byte");
  PrepareOptions o;
  o.out_dir = dir.file("out");
  expect_error([&] { (void)prepare_dataset(o, *tok); }, {"no input files"});
  o.inputs = {dir.file("missing.txt")};
  expect_error([&] { (void)prepare_dataset(o, *tok); }, {"missing.txt", "no such input file"});
  write_file_atomic(dir.file("small.txt"), "hi");
  o.inputs = {dir.file("small.txt")};
  expect_error([&] { (void)prepare_dataset(o, *tok); }, {"validation split is empty"});
  o.val_fraction = 1.5;
  expect_error([&] { (void)prepare_dataset(o, *tok); }, {"must be in [0, 1)"});
}
