#include "nibble/npy.hpp"

#include <bit>
#include <cstring>
#include <limits>
#include <optional>
#include <string_view>

#include "nibble/error.hpp"
#include "nibble/fileio.hpp"

namespace nibble {

static_assert(std::endian::native == std::endian::little,
              "the .npy reader/writer assumes a little-endian host");

namespace {

constexpr std::string_view kMagic = "\x93NUMPY";
constexpr const char* kSupported = "<f4, <f8, |i1, <i2, <i4, <i8, |u1";

struct NpyType {
  DType dtype;
  const char* descr;  // as NumPy writes it
  int itemsize;
};
constexpr NpyType kTypes[] = {
    {DType::F32, "<f4", 4}, {DType::F64, "<f8", 8}, {DType::I8, "|i1", 1},
    {DType::I16, "<i2", 2}, {DType::I32, "<i4", 4}, {DType::I64, "<i8", 8},
    {DType::U8, "|u1", 1},
};

// The header is a Python literal: {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
// This reads the subset NumPy writes: a dict of string keys whose values are strings,
// True/False, or tuples of ints (Python 2 files may carry an 'L' suffix on ints).
struct Header {
  std::optional<std::string> descr;
  bool descr_is_string = true;
  std::optional<bool> fortran_order;
  std::optional<Shape> shape;
};

class HeaderParser {
 public:
  HeaderParser(std::string_view s, const std::string& path) : s_(s), path_(path) {}

  Header parse() {
    Header h;
    skip_ws();
    expect('{');
    for (;;) {
      skip_ws();
      if (peek() == '}') {
        ++pos_;
        break;
      }
      const std::string key = parse_str();
      skip_ws();
      expect(':');
      skip_ws();
      if (key == "descr") {
        if (h.descr || !h.descr_is_string) bad("duplicate key 'descr'");
        if (peek() == '\'' || peek() == '"') {
          h.descr = parse_str();
        } else {
          h.descr_is_string = false;
          skip_value();
        }
      } else if (key == "fortran_order") {
        if (h.fortran_order) bad("duplicate key 'fortran_order'");
        h.fortran_order = parse_bool();
      } else if (key == "shape") {
        if (h.shape) bad("duplicate key 'shape'");
        h.shape = parse_shape();
      } else {
        bad("unexpected key '" + key + "'");
      }
      skip_ws();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      skip_ws();
      expect('}');
      break;
    }
    skip_ws();
    if (pos_ != s_.size()) bad("unexpected text after the dict");
    if (!h.descr && h.descr_is_string) bad("missing key 'descr'", false);
    if (!h.fortran_order) bad("missing key 'fortran_order'", false);
    if (!h.shape) bad("missing key 'shape'", false);
    return h;
  }

 private:
  std::string_view s_;
  const std::string& path_;
  size_t pos_ = 0;

  [[noreturn]] void bad(const std::string& why, bool at = true) const {
    if (!at) fail(path_, ": malformed .npy header: ", why);
    fail(path_, ": malformed .npy header: ", why, " (at offset ", pos_, " of the header dict)");
  }
  char peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
  void skip_ws() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' ||
                                s_[pos_] == '\r'))
      ++pos_;
  }
  void expect(char c) {
    if (peek() != c) {
      if (pos_ >= s_.size()) bad(std::string("expected '") + c + "', found the end");
      bad(std::string("expected '") + c + "', found '" + s_[pos_] + "'");
    }
    ++pos_;
  }
  std::string parse_str() {
    const char q = peek();
    if (q != '\'' && q != '"') bad("expected a quoted string");
    ++pos_;
    std::string out;
    while (pos_ < s_.size() && s_[pos_] != q) {
      if (s_[pos_] == '\\') bad("escapes in header strings are not supported");
      out += s_[pos_++];
    }
    if (pos_ >= s_.size()) bad("unterminated string");
    ++pos_;
    return out;
  }
  bool parse_bool() {
    if (s_.substr(pos_, 4) == "True") {
      pos_ += 4;
      return true;
    }
    if (s_.substr(pos_, 5) == "False") {
      pos_ += 5;
      return false;
    }
    bad("expected True or False for 'fortran_order'");
  }
  int64_t parse_int() {
    const bool neg = peek() == '-';
    if (neg) ++pos_;
    if (!(peek() >= '0' && peek() <= '9')) bad("expected an integer in 'shape'");
    int64_t v = 0;
    while (peek() >= '0' && peek() <= '9') {
      const int d = s_[pos_++] - '0';
      if (v > (std::numeric_limits<int64_t>::max() - d) / 10) bad("dimension too large in 'shape'");
      v = v * 10 + d;
    }
    if (peek() == 'L') ++pos_;
    return neg ? -v : v;
  }
  Shape parse_shape() {
    expect('(');
    Shape shape;
    skip_ws();
    if (peek() == ')') {
      ++pos_;
      return shape;
    }
    for (;;) {
      skip_ws();
      shape.push_back(parse_int());
      skip_ws();
      if (peek() == ',') {
        ++pos_;
        skip_ws();
        if (peek() == ')') {
          ++pos_;
          return shape;
        }
        continue;
      }
      if (peek() == ')') {
        if (shape.size() == 1) bad("'shape' must be a tuple, e.g. (3,)");
        ++pos_;
        return shape;
      }
      bad("expected ',' or ')' in 'shape'");
    }
  }
  // Skips a nested literal (a structured dtype's list of fields) by bracket matching.
  void skip_value() {
    int depth = 0;
    while (pos_ < s_.size()) {
      const char c = s_[pos_];
      if (c == '\'' || c == '"') {
        parse_str();
        continue;
      }
      if (c == '[' || c == '(' || c == '{') ++depth;
      if (c == ']' || c == ')' || c == '}') {
        if (depth == 0) return;
        --depth;
      }
      if (c == ',' && depth == 0) return;
      ++pos_;
    }
  }
};

uint32_t read_le(const std::string& b, size_t at, int n) {
  uint32_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(b[at + static_cast<size_t>(i)]);
  return v;
}

const NpyType& npy_type_for(const std::string& path, const std::string& descr) {
  for (const auto& t : kTypes) {
    if (descr == t.descr) return t;
    // One-byte types have no byte order; accept any marker NumPy could accept for them.
    if (t.itemsize == 1 && descr.size() == 3 && descr.substr(1) == std::string(t.descr + 1) &&
        (descr[0] == '<' || descr[0] == '=' || descr[0] == '>'))
      return t;
  }
  if (!descr.empty() && descr[0] == '>')
    fail(path, ": big-endian arrays (dtype '", descr,
         "') are not supported; save with arr.astype(arr.dtype.newbyteorder('<'))");
  fail(path, ": unsupported dtype '", descr, "'; supported: ", kSupported);
}

std::string shape_repr(const Shape& s) {
  std::string r = "(";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) r += ", ";
    r += std::to_string(s[i]);
  }
  if (s.size() == 1) r += ',';
  r += ')';
  return r;
}

}  // namespace

Tensor read_npy(const std::string& path) {
  const std::string b = read_file(path);
  if (b.size() < kMagic.size() || std::string_view(b).substr(0, kMagic.size()) != kMagic)
    fail(path, ": not a .npy file (bad magic; expected \\x93NUMPY)");
  if (b.size() < 8) fail(path, ": truncated header (file is ", b.size(), " bytes)");
  const int major = static_cast<uint8_t>(b[6]);
  const int minor = static_cast<uint8_t>(b[7]);
  if ((major != 1 && major != 2 && major != 3) || minor != 0)
    fail(path, ": unsupported .npy format version ", major, ".", minor,
         " (supported: 1.0, 2.0, 3.0)");
  const size_t len_bytes = major == 1 ? 2 : 4;
  const size_t prefix = 8 + len_bytes;
  if (b.size() < prefix) fail(path, ": truncated header (file is ", b.size(), " bytes)");
  const size_t hlen = read_le(b, 8, static_cast<int>(len_bytes));
  if (b.size() - prefix < hlen)
    fail(path, ": truncated header: header length is ", hlen, " bytes but only ",
         b.size() - prefix, " follow");
  const std::string_view header_text = std::string_view(b).substr(prefix, hlen);
  for (const char c : header_text)
    if (static_cast<unsigned char>(c) >= 0x80 || (static_cast<unsigned char>(c) < 0x20 &&
                                                  c != '\n' && c != '\r' && c != '\t'))
      fail(path, ": malformed .npy header: non-ASCII or control byte in the header dict");
  const Header h = HeaderParser(header_text, path).parse();

  if (!h.descr_is_string)
    fail(path, ": structured dtypes are not supported; supported dtypes: ", kSupported);
  if (*h.fortran_order)
    fail(path, ": Fortran-ordered arrays are not supported; save with np.ascontiguousarray");
  const NpyType& type = npy_type_for(path, *h.descr);
  for (const int64_t d : *h.shape)
    if (d < 0) fail(path, ": negative dimension in shape ", shape_repr(*h.shape));
  int64_t numel = 1;
  for (const int64_t d : *h.shape) {
    if (d != 0 && numel > std::numeric_limits<int64_t>::max() / type.itemsize / d)
      fail(path, ": shape ", shape_repr(*h.shape), " is too large");
    numel *= d;
  }
  const uint64_t need = static_cast<uint64_t>(numel) * static_cast<uint64_t>(type.itemsize);
  const uint64_t have = b.size() - prefix - hlen;
  if (have < need)
    fail(path, ": truncated: expected ", need, " bytes of data, found ", have);
  if (have > need) fail(path, ": ", have - need, " unexpected bytes after the array data");

  Tensor t(*h.shape, type.dtype);
  if (need) std::memcpy(t.raw(), b.data() + prefix + hlen, need);
  return t;
}

void write_npy(const std::string& path, const Tensor& t) {
  const NpyType* type = nullptr;
  for (const auto& k : kTypes)
    if (k.dtype == t.dtype()) type = &k;
  if (!type)
    fail(path, ": cannot write a ", dtype_name(t.dtype()),
         " tensor to .npy; supported: f32, f64, i8, i16, i32, i64, u8");

  // Same bytes as numpy.save: sorted keys, spare room for growing the first axis,
  // then spaces and a newline so that the data starts at a multiple of 64.
  std::string dict = "{'descr': '";
  dict += type->descr;
  dict += "', 'fortran_order': False, 'shape': ";
  dict += shape_repr(t.shape());
  dict += ", }";
  if (!t.shape().empty()) {
    const size_t digits = std::to_string(t.shape()[0]).size();
    if (digits < 21) dict.append(21 - digits, ' ');
  }
  size_t len_bytes = 2;
  int major = 1;
  size_t hlen = dict.size() + 1;
  size_t pad = 64 - (8 + len_bytes + hlen) % 64;
  if (hlen + pad > 0xFFFF) {
    major = 2;
    len_bytes = 4;
    pad = 64 - (8 + len_bytes + hlen) % 64;
  }
  const size_t total_header = hlen + pad;

  std::string out;
  out.reserve(8 + len_bytes + total_header + t.nbytes());
  out += kMagic;
  out += static_cast<char>(major);
  out += '\0';
  for (size_t i = 0; i < len_bytes; ++i) out += static_cast<char>((total_header >> (8 * i)) & 0xFF);
  out += dict;
  out.append(pad, ' ');
  out += '\n';
  out.append(reinterpret_cast<const char*>(t.raw()), t.nbytes());
  // .npy files are results, not checkpoints: atomic, without waiting for the disk.
  write_file_atomic(path, out, Durability::RenameOnly);
}

}  // namespace nibble
