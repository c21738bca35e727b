#include "nibble/data/corpus.hpp"

#include <cstdlib>
#include <filesystem>
#include <system_error>
#include <vector>

#include "nibble/error.hpp"

namespace nibble {

namespace fs = std::filesystem;

std::string find_data_path(std::string_view relative) {
  std::vector<fs::path> candidates;
  if (const char* env = std::getenv("NIBBLE_DATA_DIR"); env && *env)
    candidates.push_back(fs::path(env) / relative);
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    fs::path dir = exe.parent_path();
    for (int up = 0; up < 3 && !dir.empty(); ++up) {
      candidates.push_back(dir / "data" / relative);
      if (dir == dir.parent_path()) break;  // reached /
      dir = dir.parent_path();
    }
  }
#ifdef NIBBLE_SOURCE_DIR
  candidates.push_back(fs::path(NIBBLE_SOURCE_DIR) / "data" / relative);
#endif
  std::string looked;
  for (const fs::path& p : candidates) {
    if (fs::exists(p, ec)) return p.lexically_normal().string();
    looked += (looked.empty() ? "" : ", ") + p.lexically_normal().string();
  }
  fail("cannot find nibble's data file '", relative, "'; looked in: ", looked,
       " (set NIBBLE_DATA_DIR to the repository's data/ folder)");
}

std::string default_corpus_path() { return find_data_path("corpus/python-docs.txt"); }

std::string default_gpt2_dir() {
  // Look for a file inside, so that an unrelated empty data/gpt2 folder does not match.
  return fs::path(find_data_path("gpt2/encoder.json")).parent_path().string();
}

}  // namespace nibble
