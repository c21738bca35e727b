// Token shards in llm.c's layout: the exact bytes written, the round trip, and one clear
// error per kind of malformed shard.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "nibble/data/shard.hpp"
#include "nibble/error.hpp"
#include "nibble/fileio.hpp"
#include "support/cli_runner.hpp"

using namespace nibble;
using nibble::testing::ScratchDir;

namespace {

std::string le32(uint32_t v) {
  std::string s(4, '\0');
  for (int i = 0; i < 4; ++i) s[static_cast<size_t>(i)] = static_cast<char>((v >> (8 * i)) & 0xFF);
  return s;
}

// A shard's bytes by hand: header (magic, version, count, zeros) and uint16 LE tokens.
std::string shard_bytes(int32_t magic, int32_t version, int32_t count, const std::vector<uint16_t>& toks) {
  std::string s = le32(static_cast<uint32_t>(magic)) + le32(static_cast<uint32_t>(version)) +
                  le32(static_cast<uint32_t>(count)) + std::string(1024 - 12, '\0');
  for (const uint16_t t : toks) s += std::string{static_cast<char>(t & 0xFF), static_cast<char>(t >> 8)};
  return s;
}

// Reading `bytes` must fail with one line naming the file and containing each phrase.
void expect_error(const ScratchDir& dir, const std::string& bytes, int64_t vocab,
                  const std::vector<std::string>& phrases) {
  const std::string p = dir.file("bad.bin");
  write_file_atomic(p, bytes);
  try {
    (void)read_shard(p, vocab);
    ADD_FAILURE() << "no error; expected: " << phrases.front();
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(p), std::string::npos) << msg;
    for (const auto& ph : phrases) EXPECT_NE(msg.find(ph), std::string::npos) << "expected '" << ph << "' in: " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

}  // namespace

TEST(ShardFormat, WritesLlmcBytesExactly) {
  ScratchDir dir;
  const std::vector<uint16_t> toks = {0, 1, 50256, 65535, 0x1234};
  write_shard(dir.file("s.bin"), toks);
  const std::string bytes = read_file(dir.file("s.bin"));
  ASSERT_EQ(bytes.size(), 1024u + 2 * toks.size());
  // 20240520 = 0x0134D888, little endian; version 1; 5 tokens; the rest of the header zero.
  EXPECT_EQ(bytes.substr(0, 12), std::string("\x88\xD8\x34\x01\x01\0\0\0\x05\0\0\0", 12));
  EXPECT_EQ(bytes.substr(12, 1012), std::string(1012, '\0'));
  EXPECT_EQ(bytes.substr(1024), std::string("\0\0\x01\0\x50\xC4\xFF\xFF\x34\x12", 10));
  EXPECT_EQ(bytes, shard_bytes(20240520, 1, 5, toks));
  EXPECT_EQ(shard_token_count(dir.file("s.bin")), 5);
}

TEST(ShardFormat, RoundTrips) {
  ScratchDir dir;
  std::vector<uint16_t> toks(100000);
  for (size_t i = 0; i < toks.size(); ++i) toks[i] = static_cast<uint16_t>((i * 7919) % 50257);
  write_shard(dir.file("a.bin"), toks);
  EXPECT_EQ(read_shard(dir.file("a.bin"), 50257), toks);
  write_shard(dir.file("empty.bin"), {});
  EXPECT_TRUE(read_shard(dir.file("empty.bin"), 50257).empty());
}

TEST(ShardErrors, BadMagicShowsFoundAndExpected) {
  ScratchDir dir;
  expect_error(dir, shard_bytes(12345, 1, 1, {7}), 50257, {"bad magic 12345", "expected 20240520"});
}

TEST(ShardErrors, UnsupportedVersion) {
  ScratchDir dir;
  expect_error(dir, shard_bytes(20240520, 7, 1, {7}), 50257, {"version 7", "expected 1"});
}

TEST(ShardErrors, TruncatedHeader) {
  ScratchDir dir;
  expect_error(dir, shard_bytes(20240520, 1, 0, {}).substr(0, 100), 50257, {"truncated", "100 bytes"});
  expect_error(dir, "", 50257, {"truncated", "0 bytes"});
}

TEST(ShardErrors, TruncatedBody) {
  ScratchDir dir;
  std::string b = shard_bytes(20240520, 1, 4, {1, 2, 3, 4});
  b.resize(b.size() - 3);
  expect_error(dir, b, 50257, {"size mismatch", "4 tokens", "1029 bytes", "truncated"});
}

TEST(ShardErrors, TrailingBytes) {
  ScratchDir dir;
  expect_error(dir, shard_bytes(20240520, 1, 2, {1, 2, 3}), 50257,
               {"size mismatch", "2 tokens (1028 bytes)", "1030 bytes", "trailing"});
}

TEST(ShardErrors, NegativeCount) {
  ScratchDir dir;
  expect_error(dir, shard_bytes(20240520, 1, -1, {}), 50257, {"negative token count -1"});
}

TEST(ShardErrors, TokenOutsideTheVocabulary) {
  ScratchDir dir;
  expect_error(dir, shard_bytes(20240520, 1, 4, {1, 255, 256, 2}), 256,
               {"token 256 at index 2", "vocab_size 256"});
}

TEST(ShardErrors, MissingFile) {
  ScratchDir dir;
  try {
    (void)read_shard(dir.file("nope.bin"), 256);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(dir.file("nope.bin")), std::string::npos) << e.what();
  }
}
