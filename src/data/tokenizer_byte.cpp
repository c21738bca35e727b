// The byte tokenizer: one id per UTF-8 byte, and the tokenizer name table (make_tokenizer).
#include <string>

#include "nibble/data/tokenizer.hpp"
#include "nibble/error.hpp"

namespace nibble {

namespace {

class ByteTokenizer final : public Tokenizer {
 public:
  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<int32_t> ids(text.size());
    for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
    return ids;
  }
  std::string decode(const std::vector<int32_t>& ids) const override {
    std::string out(ids.size(), '\0');
    for (size_t i = 0; i < ids.size(); ++i) {
      if (ids[i] < 0 || ids[i] > 255)
        fail("byte tokenizer: id ", ids[i], " at index ", i, " is outside the vocabulary [0, 256)");
      out[i] = static_cast<char>(ids[i]);
    }
    return out;
  }
  int32_t vocab_size() const override { return 256; }
  // NUL never occurs in text files, so its id is free to mark document boundaries without
  // growing the vocabulary past one byte.
  int32_t eot() const override { return 0; }
  std::string name() const override { return "byte"; }
};

}  // namespace

std::unique_ptr<Tokenizer> make_byte_tokenizer() { return std::make_unique<ByteTokenizer>(); }

std::unique_ptr<Tokenizer> make_tokenizer(std::string_view name, const std::string& data_dir) {
  if (name == "byte") return make_byte_tokenizer();
  if (name == "gpt2") return make_gpt2_tokenizer(data_dir);
  fail("unknown tokenizer '", name, "' (valid: byte, gpt2)");
}

}  // namespace nibble
