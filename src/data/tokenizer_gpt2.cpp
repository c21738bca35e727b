// GPT-2's byte-level BPE (Radford et al. 2019; OpenAI's encoder.py), reproduced exactly:
//   1. pre-tokenization by GPT-2's regex, here a hand-written scanner over UTF-8 code points
//      (std::regex has no Unicode classes) using the generated tables in unicode_tables.cpp;
//   2. each piece's bytes start as one symbol per byte (the byte-to-unicode table of
//      encoder.py only renames bytes to printable characters, so we work on bytes and apply
//      that renaming once, when reading encoder.json and vocab.bpe);
//   3. BPE: repeatedly take the adjacent pair with the lowest merge rank and merge all of its
//      occurrences left to right, until no adjacent pair has a rank.
// The result of step 3 for a piece is cached: natural text repeats its words.
#include <algorithm>
#include <filesystem>
#include <mutex>
#include <queue>
#include <shared_mutex>
#include <string>
#include <unordered_map>

#include "data/unicode_tables.hpp"
#include "nibble/data/corpus.hpp"
#include "nibble/data/tokenizer.hpp"
#include "nibble/error.hpp"
#include "nibble/fileio.hpp"
#include "nibble/json.hpp"

namespace nibble {

namespace {

using unicode::CharClass;

// ---- UTF-8 scanning ----------------------------------------------------------------------

struct Char {
  CharClass cls;
  uint32_t len;  // bytes
};

bool is_cont(unsigned char b) { return (b & 0xC0) == 0x80; }

// The character starting at s[i] (i < n). Invalid UTF-8 (bad lead byte, truncated or
// overlong sequence, surrogate, > U+10FFFF) is one byte of class Other, so every input
// scans and the bytes still round-trip through the byte-level BPE.
inline Char char_at(const unsigned char* s, size_t n, size_t i) {
  const unsigned char b0 = s[i];
  if (b0 < 0x80) return {unicode::char_class(b0), 1};
  const size_t left = n - i;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    if (left >= 2 && is_cont(s[i + 1]))
      return {unicode::char_class(((b0 & 0x1Fu) << 6) | (s[i + 1] & 0x3Fu)), 2};
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    if (left >= 3 && is_cont(s[i + 1]) && is_cont(s[i + 2])) {
      const uint32_t cp = ((b0 & 0x0Fu) << 12) | ((s[i + 1] & 0x3Fu) << 6) | (s[i + 2] & 0x3Fu);
      if (cp >= 0x800 && (cp < 0xD800 || cp > 0xDFFF)) return {unicode::char_class(cp), 3};
    }
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    if (left >= 4 && is_cont(s[i + 1]) && is_cont(s[i + 2]) && is_cont(s[i + 3])) {
      const uint32_t cp = ((b0 & 0x07u) << 18) | ((s[i + 1] & 0x3Fu) << 12) |
                          ((s[i + 2] & 0x3Fu) << 6) | (s[i + 3] & 0x3Fu);
      if (cp >= 0x10000 && cp <= 0x10FFFF) return {unicode::char_class(cp), 4};
    }
  }
  return {CharClass::Other, 1};
}

// The end of the regex match that starts at p (p < n). The alternatives are tried in the
// regex's order; the classes are disjoint, so at most one of the ` ?X+` forms applies.
size_t piece_end(const unsigned char* s, size_t n, size_t p) {
  // 's|'t|'re|'ve|'m|'ll|'d (ASCII, case-sensitive, as in GPT-2)
  if (s[p] == '\'' && p + 1 < n) {
    const unsigned char c = s[p + 1];
    if (c == 's' || c == 't' || c == 'm' || c == 'd') return p + 2;
    if (p + 2 < n) {
      const unsigned char d = s[p + 2];
      if ((c == 'r' && d == 'e') || (c == 'v' && d == 'e') || (c == 'l' && d == 'l')) return p + 3;
    }
  }
  // ` ?\p{L}+ | ?\p{N}+ | ?[^\s\p{L}\p{N}]+`: an optional U+0020, then a run of one class.
  size_t q = p;
  Char first = char_at(s, n, p);
  if (s[p] == ' ' && p + 1 < n) {
    const Char next = char_at(s, n, p + 1);
    if (next.cls != CharClass::Space) {
      q = p + 1;
      first = next;
    }
  }
  if (first.cls != CharClass::Space) {
    size_t e = q + first.len;
    while (e < n) {
      const Char c = char_at(s, n, e);
      if (c.cls != first.cls) break;
      e += c.len;
    }
    return e;
  }
  // `\s+(?!\S)|\s+`: a whitespace run that ends the text is taken whole. Before a non-space
  // character the greedy run backs off by one character (leaving it to start the next
  // piece, where ` ?X+` takes a final U+0020), unless the run is a single character.
  size_t e = p, last = p;
  int count = 0;
  while (e < n) {
    const Char c = char_at(s, n, e);
    if (c.cls != CharClass::Space) break;
    last = e;
    e += c.len;
    ++count;
  }
  if (e == n || count == 1) return e;
  return last;
}

template <class F>
void for_each_piece(std::string_view text, F&& f) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  for (size_t p = 0; p < n;) {
    const size_t e = piece_end(s, n, p);
    f(text.substr(p, e - p));
    p = e;
  }
}

// ---- GPT-2's renaming of bytes to printable characters (encoder.py bytes_to_unicode) --------

// Bytes that are printable Latin-1 stand for themselves; the others (controls, space, 0x7F-0xA0,
// 0xAD) are renamed, in byte order, to U+0100, U+0101, ...
std::vector<int> unicode_to_byte_table() {
  std::vector<int> table(512, -1);
  int extra = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    table[printable ? b : 256 + extra++] = b;
  }
  return table;
}

// A vocabulary string (UTF-8 of renamed bytes) back to the bytes it stands for.
std::string vocab_string_to_bytes(std::string_view s, const std::vector<int>& u2b,
                                  const std::string& file, const std::string& context) {
  std::string out;
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  for (size_t i = 0; i < s.size();) {
    uint32_t cp;
    if (p[i] < 0x80) {
      cp = p[i];
      i += 1;
    } else if ((p[i] & 0xE0) == 0xC0 && i + 1 < s.size()) {
      cp = ((p[i] & 0x1Fu) << 6) | (p[i + 1] & 0x3Fu);
      i += 2;
    } else {
      cp = 0xFFFFFFFFu;  // 3- and 4-byte characters are never byte names
      i = s.size();
    }
    if (cp >= u2b.size() || u2b[cp] < 0)
      fail(file, ": ", context, " '", s, "' contains a character that is not one of GPT-2's 256 byte names");
    out.push_back(static_cast<char>(u2b[cp]));
  }
  return out;
}

// Heterogeneous lookup: find a std::string key with a string_view, no allocation.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

class Gpt2Tokenizer final : public Tokenizer {
 public:
  explicit Gpt2Tokenizer(const std::string& dir) {
    const std::vector<int> u2b = unicode_to_byte_table();
    load_encoder((std::filesystem::path(dir) / "encoder.json").string(), u2b);
    load_merges((std::filesystem::path(dir) / "vocab.bpe").string(), u2b);
  }

  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<int32_t> ids;
    ids.reserve(text.size() / 3 + 16);
    for_each_piece(text, [&](std::string_view piece) {
      if (piece.size() == 1) {  // one symbol: nothing to merge
        ids.push_back(byte_id_[static_cast<unsigned char>(piece[0])]);
        return;
      }
      if (piece.size() > kMaxCachedPiece) {
        bpe(piece, ids);
        return;
      }
      {
        std::shared_lock lock(cache_mutex_);
        if (auto it = cache_.find(piece); it != cache_.end()) {
          ids.insert(ids.end(), it->second.begin(), it->second.end());
          return;
        }
      }
      std::vector<int32_t> merged;
      bpe(piece, merged);
      ids.insert(ids.end(), merged.begin(), merged.end());
      std::unique_lock lock(cache_mutex_);
      if (cache_.size() >= kMaxCacheEntries) cache_.clear();  // bound memory on odd inputs
      cache_.emplace(std::string(piece), std::move(merged));
    });
    return ids;
  }

  std::string decode(const std::vector<int32_t>& ids) const override {
    std::string out;
    out.reserve(ids.size() * 4);
    for (size_t i = 0; i < ids.size(); ++i) {
      if (ids[i] < 0 || ids[i] >= vocab_size())
        fail("gpt2 tokenizer: id ", ids[i], " at index ", i, " is outside the vocabulary [0, ",
             vocab_size(), ")");
      out += id_bytes_[static_cast<size_t>(ids[i])];
    }
    return out;
  }

  int32_t vocab_size() const override { return static_cast<int32_t>(id_bytes_.size()); }
  int32_t eot() const override { return eot_; }
  std::string name() const override { return "gpt2"; }

 private:
  static constexpr size_t kMaxCachedPiece = 256;
  static constexpr size_t kMaxCacheEntries = size_t{1} << 20;

  struct Merge {
    int32_t left, right, merged;
  };

  void load_encoder(const std::string& path, const std::vector<int>& u2b) {
    const Json j = Json::parse(read_file(path), path);
    if (!j.is_object()) fail(path, ": expected a JSON object {token: id}, got ", j.type_name());
    const auto& obj = j.as_object();
    id_bytes_.assign(obj.size(), std::string());
    std::vector<bool> seen(obj.size(), false);
    for (const auto& [key, value] : obj) {
      if (!value.is_int()) fail(path, ": token '", key, "' has a non-integer id");
      const int64_t id = value.as_int64();
      if (id < 0 || id >= static_cast<int64_t>(obj.size()))
        fail(path, ": token '", key, "' has id ", id, ", outside [0, ", obj.size(), ")");
      if (seen[static_cast<size_t>(id)]) fail(path, ": id ", id, " is used twice (again by '", key, "')");
      seen[static_cast<size_t>(id)] = true;
      // "<|endoftext|>" is plain ASCII, so it maps to its own bytes like any other token;
      // decode() turns the EOT id into that text, as encoder.py does.
      std::string bytes = vocab_string_to_bytes(key, u2b, path, "token");
      if (key == "<|endoftext|>") eot_ = static_cast<int32_t>(id);
      if (!bytes_id_.emplace(bytes, static_cast<int32_t>(id)).second)
        fail(path, ": token '", key, "' appears twice");
      id_bytes_[static_cast<size_t>(id)] = std::move(bytes);
    }
    if (eot_ < 0) fail(path, ": no '<|endoftext|>' token");
    for (int b = 0; b < 256; ++b) {
      const auto it = bytes_id_.find(std::string(1, static_cast<char>(b)));
      if (it == bytes_id_.end()) fail(path, ": byte ", b, " has no token (a byte-level BPE needs all 256)");
      byte_id_[b] = it->second;
    }
  }

  void load_merges(const std::string& path, const std::vector<int>& u2b) {
    const std::string text = read_file(path);
    size_t line_no = 0;
    for (size_t pos = 0; pos < text.size();) {
      size_t end = text.find('\n', pos);
      if (end == std::string::npos) end = text.size();
      std::string_view line(text.data() + pos, end - pos);
      pos = end + 1;
      ++line_no;
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (line.empty() || (line_no == 1 && line.rfind("#version", 0) == 0)) continue;
      const size_t sp = line.find(' ');
      if (sp == std::string_view::npos || sp == 0 || sp + 1 >= line.size() ||
          line.find(' ', sp + 1) != std::string_view::npos)
        fail(path, ":", line_no, ": expected two tokens separated by one space, got '", line, "'");
      const std::string context = "line " + std::to_string(line_no) + ": token";
      const std::string a = vocab_string_to_bytes(line.substr(0, sp), u2b, path, context);
      const std::string b = vocab_string_to_bytes(line.substr(sp + 1), u2b, path, context);
      const int32_t ia = id_of(a, path, line_no, line), ib = id_of(b, path, line_no, line);
      const int32_t im = id_of(a + b, path, line_no, line);
      const auto rank = static_cast<int32_t>(merges_.size());
      merges_.push_back({ia, ib, im});
      // A repeated pair keeps its last rank, as in encoder.py's dict(zip(merges, ranks)).
      rank_[pair_key(ia, ib)] = rank;
    }
    if (merges_.empty()) fail(path, ": no merges");
  }

  int32_t id_of(const std::string& bytes, const std::string& path, size_t line_no,
                std::string_view line) const {
    const auto it = bytes_id_.find(bytes);
    if (it == bytes_id_.end())
      fail(path, ":", line_no, ": merge '", line, "' uses or makes a token that encoder.json lacks");
    return it->second;
  }

  static uint64_t pair_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  int32_t rank_of(int32_t a, int32_t b) const {
    const auto it = rank_.find(pair_key(a, b));
    return it == rank_.end() ? -1 : it->second;
  }

  // BPE of one piece, appended to `out`. Exactly encoder.py's loop (lowest-ranked pair,
  // all its occurrences merged left to right, repeat), but in O(n log n): a heap of
  // (rank, position) candidates, processed one rank at a time in position order; pairs
  // created by a round's merges join the heap only after the round, as encoder.py only
  // sees them in its next pass. Stale candidates are recognised by their symbol ids.
  void bpe(std::string_view piece, std::vector<int32_t>& out) const {
    const auto n = static_cast<int32_t>(piece.size());
    std::vector<int32_t> id(static_cast<size_t>(n)), next(static_cast<size_t>(n)),
        prev(static_cast<size_t>(n));
    for (int32_t i = 0; i < n; ++i) {
      id[static_cast<size_t>(i)] = byte_id_[static_cast<unsigned char>(piece[static_cast<size_t>(i)])];
      next[static_cast<size_t>(i)] = i + 1 < n ? i + 1 : -1;
      prev[static_cast<size_t>(i)] = i - 1;
    }
    struct Cand {
      int32_t rank, pos, left, right;
      bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
    auto push = [&](int32_t pos) {  // the pair starting at node pos, if it has a rank
      const int32_t nx = next[static_cast<size_t>(pos)];
      if (nx < 0) return;
      const int32_t a = id[static_cast<size_t>(pos)], b = id[static_cast<size_t>(nx)];
      if (const int32_t r = rank_of(a, b); r >= 0) heap.push({r, pos, a, b});
    };
    for (int32_t i = 0; i + 1 < n; ++i) push(i);
    std::vector<bool> alive(static_cast<size_t>(n), true);
    std::vector<int32_t> touched;
    while (!heap.empty()) {
      const int32_t rank = heap.top().rank;
      touched.clear();
      while (!heap.empty() && heap.top().rank == rank) {
        const Cand c = heap.top();
        heap.pop();
        const auto pos = static_cast<size_t>(c.pos);
        if (!alive[pos] || id[pos] != c.left) continue;
        const int32_t nx = next[pos];
        if (nx < 0 || id[static_cast<size_t>(nx)] != c.right) continue;
        id[pos] = merges_[static_cast<size_t>(rank)].merged;
        alive[static_cast<size_t>(nx)] = false;
        next[pos] = next[static_cast<size_t>(nx)];
        if (next[pos] >= 0) prev[static_cast<size_t>(next[pos])] = c.pos;
        touched.push_back(c.pos);
      }
      for (const int32_t pos : touched) {
        if (!alive[static_cast<size_t>(pos)]) continue;
        if (prev[static_cast<size_t>(pos)] >= 0) push(prev[static_cast<size_t>(pos)]);
        push(pos);
      }
    }
    for (int32_t i = 0; i >= 0; i = next[static_cast<size_t>(i)]) out.push_back(id[static_cast<size_t>(i)]);
  }

  std::vector<std::string> id_bytes_;                                        // id -> bytes
  std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> bytes_id_;
  int32_t byte_id_[256] = {};
  int32_t eot_ = -1;
  std::vector<Merge> merges_;                                                // by rank
  std::unordered_map<uint64_t, int32_t> rank_;                               // pair -> rank
  mutable std::shared_mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> cache_;
};

}  // namespace

std::vector<std::string_view> gpt2_pretokenize(std::string_view text) {
  std::vector<std::string_view> pieces;
  for_each_piece(text, [&](std::string_view p) { pieces.push_back(p); });
  return pieces;
}

std::unique_ptr<Tokenizer> make_gpt2_tokenizer(const std::string& data_dir) {
  const std::string dir = data_dir.empty() ? default_gpt2_dir() : data_dir;
  return std::make_unique<Gpt2Tokenizer>(dir);
}

}  // namespace nibble
