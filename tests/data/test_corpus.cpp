// The bundled data lookup: found from the test binary, NIBBLE_DATA_DIR first, and an error
// that lists where it looked.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "nibble/data/corpus.hpp"
#include "nibble/error.hpp"
#include "nibble/fileio.hpp"
#include "support/cli_runner.hpp"

using namespace nibble;
using nibble::testing::ScratchDir;
namespace fs = std::filesystem;

namespace {

// Sets NIBBLE_DATA_DIR for one scope and restores the previous value.
class ScopedDataDir {
 public:
  explicit ScopedDataDir(const std::string& value) {
    if (const char* old = std::getenv("NIBBLE_DATA_DIR")) {
      old_ = old;
      had_ = true;
    }
    ::setenv("NIBBLE_DATA_DIR", value.c_str(), 1);
  }
  ~ScopedDataDir() {
    if (had_) ::setenv("NIBBLE_DATA_DIR", old_.c_str(), 1);
    else ::unsetenv("NIBBLE_DATA_DIR");
  }

 private:
  std::string old_;
  bool had_ = false;
};

}  // namespace

TEST(CorpusLookup, FindsTheBundledCorpusAndVocabulary) {
  const std::string corpus = default_corpus_path();
  EXPECT_TRUE(corpus.ends_with("data/corpus/python-docs.txt")) << corpus;
  EXPECT_EQ(fs::file_size(corpus), 2768155u);
  const std::string gpt2 = default_gpt2_dir();
  EXPECT_TRUE(file_exists(gpt2 + "/encoder.json")) << gpt2;
  EXPECT_TRUE(file_exists(gpt2 + "/vocab.bpe")) << gpt2;
}

TEST(CorpusLookup, DataDirEnvironmentVariableComesFirst) {
  ScratchDir dir;
  fs::create_directories(dir.path() / "corpus");
  write_file_atomic(dir.file("corpus/python-docs.txt"), "tiny corpus\n");
  ScopedDataDir env(dir.path().string());
  EXPECT_EQ(default_corpus_path(), dir.file("corpus/python-docs.txt"));
  // What it lacks is still found in the other places.
  EXPECT_TRUE(file_exists(default_gpt2_dir() + "/encoder.json"));
}

TEST(CorpusLookup, ErrorListsWhereItLooked) {
  ScopedDataDir env("/nonexistent-nibble-data");
  try {
    (void)find_data_path("corpus/no-such-file.txt");
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("corpus/no-such-file.txt"), std::string::npos) << msg;
    EXPECT_NE(msg.find("/nonexistent-nibble-data/corpus/no-such-file.txt"), std::string::npos) << msg;
    EXPECT_NE(msg.find("/data/corpus/no-such-file.txt"), std::string::npos) << msg;
    EXPECT_NE(msg.find("NIBBLE_DATA_DIR"), std::string::npos) << msg;
  }
}
