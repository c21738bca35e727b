#pragma once
// Where nibble's bundled data lives (the repository's data/ folder): the default training
// corpus and the GPT-2 vocabulary. The lookup does not depend on the working directory,
// so the CLI and the tests find the files from anywhere.
#include <string>
#include <string_view>

namespace nibble {

// The first existing path among, in order:
//   $NIBBLE_DATA_DIR/<relative>
//   <dir>/data/<relative> for dir = the running executable's directory (/proc/self/exe),
//       its parent and its grandparent (build/nibble, build/tests/nibble_tests)
//   NIBBLE_SOURCE_DIR/data/<relative> when the library was compiled with that definition
// Throws an error listing every place it looked.
std::string find_data_path(std::string_view relative);

// data/corpus/python-docs.txt: ~2.8 MB of the Python 3.11 documentation (PSF licence).
std::string default_corpus_path();
// data/gpt2/: encoder.json and vocab.bpe of OpenAI's GPT-2 (MIT licence).
std::string default_gpt2_dir();

}  // namespace nibble
