#pragma once
// Tokenizers: text (UTF-8 bytes) <-> token ids. Two are built in:
//   byte  256 ids, one per UTF-8 byte; EOT = 0, the NUL byte, which text does not contain
//         (encode() does not check: a NUL in the input becomes id 0 like any other byte).
//   gpt2  OpenAI's GPT-2 byte-level BPE (50257 ids, EOT 50256 "<|endoftext|>"), read from
//         the original encoder.json + vocab.bpe (data/gpt2/).
// encode() never emits EOT: the data pipeline inserts it between documents itself, so that
// the text "<|endoftext|>" in a document stays ordinary text (as in GPT-2's own encoder).
// Both tokenizers are lossless on arbitrary bytes: decode(encode(s)) == s, even for invalid
// UTF-8. Implementations are safe to call from several threads at once.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace nibble {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  // Ids outside [0, vocab_size) are an error naming the id and its index.
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  virtual int32_t vocab_size() const = 0;
  virtual int32_t eot() const = 0;        // the end-of-text id that separates documents
  virtual std::string name() const = 0;   // "byte" | "gpt2", as make_tokenizer takes it
};

// "byte" | "gpt2"; other names are an error listing the valid ones. `data_dir` is the folder
// holding encoder.json and vocab.bpe for gpt2; empty: default_gpt2_dir() (data/corpus.hpp).
std::unique_ptr<Tokenizer> make_tokenizer(std::string_view name, const std::string& data_dir = "");

std::unique_ptr<Tokenizer> make_byte_tokenizer();
std::unique_ptr<Tokenizer> make_gpt2_tokenizer(const std::string& data_dir);

// GPT-2's pre-tokenization (exposed for tests): the byte ranges [begin, end) of the pieces
// that the regex
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// splits `text` into, with Unicode classes (\s = White_Space). Bytes that are not valid
// UTF-8 count as one character each of the class [^\s\p{L}\p{N}].
std::vector<std::string_view> gpt2_pretokenize(std::string_view text);

}  // namespace nibble
