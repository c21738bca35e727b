// `nibble data / train / eval / sample` end to end, and their bad-input errors.
#include <gtest/gtest.h>

#include <filesystem>

#include "nibble/data/corpus.hpp"
#include "nibble/data/shard.hpp"
#include "nibble/fileio.hpp"
#include "nibble/json.hpp"
#include "support/cli_runner.hpp"

using namespace nibble;
using nibble::testing::run_nibble;
using nibble::testing::ScratchDir;
namespace fs = std::filesystem;

namespace {

// A model small enough to train for a few steps in a test.
void write_small_model(const ScratchDir& d) {
  write_file_atomic(d.file("model.json"),
                    R"({"base": "tiny", "name": "small", "dim": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2,
                        "ffn_dim": 128, "max_seq": 64})");
  write_file_atomic(d.file("text.txt"), read_file(default_corpus_path()).substr(0, 60000));
}

std::string common(const ScratchDir& d) {
  return " --model " + d.file("model.json") + " --batch 4 --seq 32 --log-every 2 --eval-every 4 --eval-batches 2 --quiet";
}

int lines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

void expect_error(const std::string& args, const std::string& needle) {
  const auto r = run_nibble(args);
  EXPECT_NE(r.code, 0) << args << "\n" << r.out;
  EXPECT_LT(r.code, 128) << "crashed: " << r.out;
  EXPECT_NE(r.out.find(needle), std::string::npos) << "expected '" << needle << "' in: " << r.out;
  EXPECT_EQ(lines(r.out), 1) << r.out;
}

}  // namespace

TEST(CliTrain, DataTrainEvalSampleEndToEnd) {
  ScratchDir d;
  write_small_model(d);
  // tokenize into shards, train on them, resume, evaluate, sample
  const auto data = run_nibble("data --input " + d.file("text.txt") + " --tokenizer byte --out " + d.file("shards") +
                               " --val-fraction 0.1");
  ASSERT_EQ(data.code, 0) << data.out;
  EXPECT_TRUE(fs::exists(d.file("shards/train_000000.bin")));
  EXPECT_TRUE(fs::exists(d.file("shards/val_000000.bin")));
  const auto tr = run_nibble("train --data " + d.file("shards") + common(d) + " --recipe ufp4 --steps 8 --out " +
                             d.file("run") + " --stop-after 4");
  ASSERT_EQ(tr.code, 0) << tr.out;
  EXPECT_TRUE(fs::exists(d.file("run/step_000004/model.safetensors")));
  const auto rs = run_nibble("train --resume " + d.file("run") + " --quiet");
  ASSERT_EQ(rs.code, 0) << rs.out;
  EXPECT_TRUE(fs::exists(d.file("run/final/model.safetensors")));
  EXPECT_TRUE(fs::exists(d.file("run/loss.svg")));
  const Json cfg = Json::parse(read_file(d.file("run/config.json")), "config.json");
  EXPECT_EQ(cfg.at("recipe").at("name").as_string(), "ufp4");
  EXPECT_EQ(cfg.at("steps").as_int64(), 8);
  // metrics rows 2, 4, 6, 8 exactly once each across the resume
  const std::string m = read_file(d.file("run/metrics.jsonl"));
  EXPECT_EQ(lines(m), 4) << m;
  const auto ev = run_nibble("eval --checkpoint " + d.file("run") + " --text " + d.file("text.txt") + " --max-batches 2");
  ASSERT_EQ(ev.code, 0) << ev.out;
  EXPECT_NE(ev.out.find("bits/byte"), std::string::npos) << ev.out;
  EXPECT_NE(ev.out.find("perplexity"), std::string::npos);
  const auto ev2 = run_nibble("eval --checkpoint " + d.file("run/final") + " --data " + d.file("shards") + " --max-batches 1");
  ASSERT_EQ(ev2.code, 0) << ev2.out;
  const auto sa = run_nibble("sample --checkpoint " + d.file("run") + " --prompt 'def ' --tokens 20 --seed 3");
  ASSERT_EQ(sa.code, 0) << sa.out;
  EXPECT_EQ(sa.out.rfind("def ", 0), 0u) << sa.out;
  EXPECT_GT(sa.out.size(), 4u);
  // same seed, same text
  EXPECT_EQ(run_nibble("sample --checkpoint " + d.file("run") + " --prompt 'def ' --tokens 20 --seed 3").out, sa.out);
}

TEST(CliTrain, HelpListsTheOptions) {
  const auto r = run_nibble("train --help");
  EXPECT_EQ(r.code, 0);
  for (const char* o : {"--model", "--recipe", "--data", "--text", "--steps", "--batch", "--seq", "--lr", "--seed",
                        "--out", "--resume", "--device", "--stats-every"})
    EXPECT_NE(r.out.find(o), std::string::npos) << o;
}

TEST(CliTrainErrors, BadInputsGetOneLineErrors) {
  ScratchDir d;
  write_small_model(d);
  const std::string base = "train --text " + d.file("text.txt") + common(d) + " --steps 2 --out " + d.file("run");
  // a recipe file with an unknown field
  write_file_atomic(d.file("r.json"), R"({"base": "nvfp4", "fprop": {"x": {"roundng": "sr"}}})");
  expect_error(base + " --recipe " + d.file("r.json"), "unknown recipe field 'roundng'");
  expect_error(base + " --recipe nvfp5", "unknown recipe 'nvfp5'");
  // dims that do not divide
  write_file_atomic(d.file("bad_model.json"), R"({"base": "tiny", "dim": 96, "n_heads": 5})");
  expect_error("train --text " + d.file("text.txt") + " --model " + d.file("bad_model.json") + " --steps 1 --quiet",
               "n_heads = 5 does not divide dim = 96");
  write_file_atomic(d.file("bad2.json"), R"({"base": "tiny", "ffn_dim": 100})");
  expect_error("train --text " + d.file("text.txt") + " --model " + d.file("bad2.json") + " --steps 1 --quiet",
               "ffn_dim = 100 must be a multiple of 32");
  write_file_atomic(d.file("bad3.json"), R"({"base": "tiny", "layers": 3})");
  expect_error("train --text " + d.file("text.txt") + " --model " + d.file("bad3.json") + " --steps 1 --quiet",
               "unknown model field 'layers'");
  // missing files
  expect_error("train --text " + d.file("nope.txt") + common(d) + " --steps 1", "nope.txt");
  expect_error("train --data " + d.file("nodir") + common(d) + " --steps 1", "nodir");
  expect_error("eval --checkpoint " + d.file("norun") + " --text " + d.file("text.txt"), "norun");
  // a shard with a bad magic number, and one with a token outside the vocabulary
  fs::create_directories(d.file("bad_shards"));
  std::string shard(256 * 4 + 2 * 200, '\0');
  shard[0] = 7;
  write_file_atomic(d.file("bad_shards/train_000000.bin"), shard);
  write_file_atomic(d.file("bad_shards/val_000000.bin"), shard);
  expect_error("train --data " + d.file("bad_shards") + common(d) + " --steps 1", "magic");
  fs::create_directories(d.file("oov"));
  std::vector<uint16_t> toks(400, 65);
  toks[123] = 300;  // a byte-level data set cannot hold token 300
  write_shard(d.file("oov/train_000000.bin"), toks);
  write_shard(d.file("oov/val_000000.bin"), std::vector<uint16_t>(400, 66));
  write_file_atomic(d.file("oov/meta.json"),
                    R"({"tokenizer": "byte", "vocab_size": 256, "eot": 0, "train_tokens": 400, "val_tokens": 400})");
  expect_error("train --data " + d.file("oov") + common(d) + " --steps 1", "300");
  // options
  const std::string no_steps = "train --text " + d.file("text.txt") + " --model " + d.file("model.json") + " --quiet";
  expect_error(no_steps + " --steps zero", "not an integer");
  expect_error(no_steps + " --seq 4096", "max_seq");
  expect_error(base + " --device tpu", "unknown value 'tpu'");
  expect_error("train --text a --data b" + common(d), "either --data or --text");
}

TEST(CliTrainErrors, NonFiniteLossExitsWithStatus3) {
  ScratchDir d;
  write_small_model(d);
  // an absurd learning rate without clipping drives the weights to overflow
  const auto r = run_nibble("train --text " + d.file("text.txt") + common(d) +
                            " --steps 40 --lr 1e30 --warmup 0 --grad-clip 0 --save-every 1 --out " + d.file("run"));
  if (r.code == 0) GTEST_SKIP() << "this configuration stayed finite";
  EXPECT_EQ(r.code, 3) << r.out;
  EXPECT_NE(r.out.find("stopping"), std::string::npos) << r.out;
  EXPECT_TRUE(fs::exists(d.file("run/latest")));
}
