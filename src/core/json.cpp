#include "nibble/json.hpp"

#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <unordered_set>

#include "nibble/error.hpp"

namespace nibble {

// ---- parser -----------------------------------------------------------------------
namespace {

constexpr int kMaxDepth = 512;

class Parser {
 public:
  Parser(std::string_view text, std::string_view what) : s_(text), what_(what) {}

  Json parse_document() {
    skip_ws();
    Json v = parse_value(0);
    skip_ws();
    if (pos_ != s_.size()) error_at(pos_, "unexpected ", describe(pos_), " after the JSON value");
    return v;
  }

 private:
  std::string_view s_;
  std::string_view what_;
  size_t pos_ = 0;

  template <class... Parts>
  [[noreturn]] void error_at(size_t at, Parts&&... parts) const {
    size_t line = 1, col = 1;
    for (size_t i = 0; i < at && i < s_.size(); ++i) {
      if (s_[i] == '\n') {
        ++line;
        col = 1;
      } else {
        ++col;
      }
    }
    fail(what_, ": JSON error at line ", line, ", column ", col, ": ",
         std::forward<Parts>(parts)...);
  }

  // A short description of the character at `at` for error messages.
  std::string describe(size_t at) const {
    if (at >= s_.size()) return "end of input";
    const unsigned char c = static_cast<unsigned char>(s_[at]);
    if (c >= 0x20 && c < 0x7f) return std::string("'") + static_cast<char>(c) + "'";
    static const char* hex = "0123456789abcdef";
    std::string r = "byte 0x";
    r += hex[c >> 4];
    r += hex[c & 15];
    return r;
  }

  void skip_ws() {
    while (pos_ < s_.size()) {
      const char c = s_[pos_];
      if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
        ++pos_;
      } else if (c == '/' && pos_ + 1 < s_.size() && (s_[pos_ + 1] == '/' || s_[pos_ + 1] == '*')) {
        error_at(pos_, "comments are not allowed in JSON");
      } else {
        break;
      }
    }
  }

  bool consume_literal(std::string_view lit) {
    if (s_.substr(pos_, lit.size()) == lit) {
      pos_ += lit.size();
      return true;
    }
    return false;
  }

  Json parse_value(int depth) {
    if (pos_ >= s_.size()) error_at(pos_, "expected a value, found end of input");
    const char c = s_[pos_];
    switch (c) {
      case '{': return parse_object(depth + 1);
      case '[': return parse_array(depth + 1);
      case '"': return Json(parse_string());
      case 't':
        if (consume_literal("true")) return Json(true);
        break;
      case 'f':
        if (consume_literal("false")) return Json(false);
        break;
      case 'n':
        if (consume_literal("null")) return Json(nullptr);
        break;
      default:
        if (c == '-' || (c >= '0' && c <= '9')) return parse_number();
        break;
    }
    if (c == '\'') error_at(pos_, "strings must use double quotes");
    error_at(pos_, "expected a value, found ", describe(pos_));
  }

  Json parse_object(int depth) {
    if (depth > kMaxDepth) error_at(pos_, "nesting deeper than ", kMaxDepth, " levels");
    ++pos_;  // '{'
    Json::Object obj;
    std::unordered_set<std::string> seen;  // only filled for large objects
    skip_ws();
    if (pos_ < s_.size() && s_[pos_] == '}') {
      ++pos_;
      return Json(std::move(obj));
    }
    for (;;) {
      skip_ws();
      if (pos_ >= s_.size() || s_[pos_] != '"') {
        if (pos_ < s_.size() && s_[pos_] == '}') error_at(pos_, "trailing comma in object");
        error_at(pos_, "expected a string key, found ", describe(pos_));
      }
      const size_t key_pos = pos_;
      std::string key = parse_string();
      bool dup = false;
      if (obj.size() < 16) {
        for (const auto& kv : obj) dup = dup || kv.first == key;
      } else {
        if (seen.empty())
          for (const auto& kv : obj) seen.insert(kv.first);
        dup = !seen.insert(key).second;
      }
      if (dup) error_at(key_pos, "duplicate key \"", key, "\"");
      skip_ws();
      if (pos_ >= s_.size() || s_[pos_] != ':')
        error_at(pos_, "expected ':' after an object key, found ", describe(pos_));
      ++pos_;
      skip_ws();
      Json v = parse_value(depth);
      obj.emplace_back(std::move(key), std::move(v));
      skip_ws();
      if (pos_ < s_.size() && s_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (pos_ < s_.size() && s_[pos_] == '}') {
        ++pos_;
        return Json(std::move(obj));
      }
      error_at(pos_, "expected ',' or '}', found ", describe(pos_));
    }
  }

  Json parse_array(int depth) {
    if (depth > kMaxDepth) error_at(pos_, "nesting deeper than ", kMaxDepth, " levels");
    ++pos_;  // '['
    Json::Array arr;
    skip_ws();
    if (pos_ < s_.size() && s_[pos_] == ']') {
      ++pos_;
      return Json(std::move(arr));
    }
    for (;;) {
      skip_ws();
      if (pos_ < s_.size() && s_[pos_] == ']') error_at(pos_, "trailing comma in array");
      arr.push_back(parse_value(depth));
      skip_ws();
      if (pos_ < s_.size() && s_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (pos_ < s_.size() && s_[pos_] == ']') {
        ++pos_;
        return Json(std::move(arr));
      }
      error_at(pos_, "expected ',' or ']', found ", describe(pos_));
    }
  }

  static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }

  // Reads the 4 hex digits of a \u escape starting at pos_ (after "\u").
  uint32_t read_hex4(size_t escape_pos) {
    uint32_t v = 0;
    for (size_t i = 0; i < 4; ++i) {
      if (pos_ + i >= s_.size()) error_at(escape_pos, "incomplete \\u escape");
      const int h = hex_value(s_[pos_ + i]);
      if (h < 0) error_at(pos_ + i, "invalid hex digit ", describe(pos_ + i), " in \\u escape");
      v = v * 16 + static_cast<uint32_t>(h);
    }
    pos_ += 4;
    return v;
  }

  static void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  // Validates one UTF-8 sequence starting at pos_ (a byte >= 0x80) and copies it.
  void copy_utf8(std::string& out) {
    const size_t start = pos_;
    const unsigned char b0 = static_cast<unsigned char>(s_[pos_]);
    int len = 0;
    uint32_t cp = 0, min = 0;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
      len = 2, cp = b0 & 0x1F, min = 0x80;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
      len = 3, cp = b0 & 0x0F, min = 0x800;
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
      len = 4, cp = b0 & 0x07, min = 0x10000;
    } else {
      error_at(start, "invalid UTF-8 in string (", describe(start), ")");
    }
    if (start + len > s_.size()) error_at(start, "truncated UTF-8 sequence in string");
    for (int i = 1; i < len; ++i) {
      const unsigned char b = static_cast<unsigned char>(s_[start + i]);
      if ((b & 0xC0) != 0x80) error_at(start, "invalid UTF-8 in string (", describe(start + i), ")");
      cp = (cp << 6) | (b & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      error_at(start, "invalid UTF-8 in string (overlong, surrogate or out of range)");
    out.append(s_.substr(start, len));
    pos_ = start + len;
  }

  std::string parse_string() {
    const size_t open = pos_;
    ++pos_;  // '"'
    std::string out;
    for (;;) {
      if (pos_ >= s_.size()) error_at(open, "unterminated string");
      const unsigned char c = static_cast<unsigned char>(s_[pos_]);
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (c < 0x20) error_at(pos_, "unescaped control character ", describe(pos_), " in string");
      if (c >= 0x80) {
        copy_utf8(out);
        continue;
      }
      if (c != '\\') {
        out += static_cast<char>(c);
        ++pos_;
        continue;
      }
      const size_t esc = pos_;
      ++pos_;
      if (pos_ >= s_.size()) error_at(open, "unterminated string");
      const char e = s_[pos_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp = read_hex4(esc);
          if (cp >= 0xDC00 && cp <= 0xDFFF)
            error_at(esc, "unpaired low surrogate in \\u escape");
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (pos_ + 2 > s_.size() || s_[pos_] != '\\' || s_[pos_ + 1] != 'u')
              error_at(esc, "unpaired high surrogate in \\u escape");
            const size_t esc2 = pos_;
            pos_ += 2;
            const uint32_t lo = read_hex4(esc2);
            if (lo < 0xDC00 || lo > 0xDFFF)
              error_at(esc2, "expected a low surrogate after a high surrogate");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          append_utf8(out, cp);
          break;
        }
        default:
          error_at(esc, "invalid escape '\\", describe(pos_ - 1), "' in string");
      }
    }
  }

  static bool is_digit(char c) { return c >= '0' && c <= '9'; }

  Json parse_number() {
    const size_t start = pos_;
    size_t p = pos_;
    if (s_[p] == '-') ++p;
    if (p >= s_.size() || !is_digit(s_[p])) error_at(p, "expected a digit after '-'");
    const size_t int_start = p;
    if (s_[p] == '0') {
      ++p;
      if (p < s_.size() && is_digit(s_[p])) error_at(start, "leading zeros are not allowed");
    } else {
      while (p < s_.size() && is_digit(s_[p])) ++p;
    }
    const size_t int_end = p;
    bool is_float = false;
    size_t frac_start = p, frac_end = p;
    if (p < s_.size() && s_[p] == '.') {
      is_float = true;
      ++p;
      if (p >= s_.size() || !is_digit(s_[p])) error_at(p, "expected a digit after '.'");
      frac_start = p;
      while (p < s_.size() && is_digit(s_[p])) ++p;
      frac_end = p;
    }
    int64_t exp10 = 0;
    if (p < s_.size() && (s_[p] == 'e' || s_[p] == 'E')) {
      is_float = true;
      ++p;
      bool neg = false;
      if (p < s_.size() && (s_[p] == '+' || s_[p] == '-')) neg = s_[p++] == '-';
      if (p >= s_.size() || !is_digit(s_[p])) error_at(p, "expected a digit in the exponent");
      while (p < s_.size() && is_digit(s_[p])) {
        if (exp10 < 1000000) exp10 = exp10 * 10 + (s_[p] - '0');
        ++p;
      }
      if (neg) exp10 = -exp10;
    }
    pos_ = p;
    const char* first = s_.data() + start;
    const char* last = s_.data() + p;
    if (!is_float) {
      int64_t i = 0;
      const auto r = std::from_chars(first, last, i);
      if (r.ec == std::errc() && r.ptr == last) return Json(i);
      // Too large for int64: fall through to double.
    }
    double d = 0;
    const auto r = std::from_chars(first, last, d);
    if (r.ec == std::errc::result_out_of_range) {
      // Decimal magnitude of the number: underflow rounds to zero, overflow is an error.
      int64_t mag;
      size_t nz = int_start;
      while (nz < int_end && s_[nz] == '0') ++nz;
      if (nz < int_end) {
        mag = static_cast<int64_t>(int_end - nz) - 1 + exp10;
      } else {
        size_t f = frac_start;
        while (f < frac_end && s_[f] == '0') ++f;
        mag = -static_cast<int64_t>(f - frac_start) - 1 + exp10;
      }
      if (mag < 0) return Json(s_[start] == '-' ? -0.0 : 0.0);
      error_at(start, "number out of range: ", s_.substr(start, p - start));
    }
    if (r.ec != std::errc() || r.ptr != last)
      error_at(start, "invalid number ", s_.substr(start, p - start));
    return Json(d);
  }
};

// ---- writer -----------------------------------------------------------------------

void write_string(std::string& out, std::string_view s) {
  static const char* hex = "0123456789abcdef";
  out += '"';
  for (const char ch : s) {
    const unsigned char c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += hex[c >> 4];
          out += hex[c & 15];
        } else {
          out += ch;
        }
    }
  }
  out += '"';
}

void write_double(std::string& out, double d) {
  if (!std::isfinite(d)) {
    out += "null";
    return;
  }
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof(buf), d);
  std::string_view s(buf, static_cast<size_t>(r.ptr - buf));
  out += s;
  // Keep doubles doubles: "1" would read back as an integer.
  if (s.find_first_of(".e") == std::string_view::npos) out += ".0";
}

void newline(std::string& out, int indent, int level) {
  out += '\n';
  out.append(static_cast<size_t>(indent) * static_cast<size_t>(level), ' ');
}

}  // namespace

Json Json::parse(std::string_view text, std::string_view what) {
  return Parser(text, what).parse_document();
}

namespace {
struct Writer {
  int indent;
  std::string out;
  void write(const Json& v, int level) {
    if (v.is_null()) {
      out += "null";
    } else if (v.is_bool()) {
      out += v.as_bool() ? "true" : "false";
    } else if (v.is_int()) {
      out += std::to_string(v.as_int64());
    } else if (v.is_number()) {
      write_double(out, v.as_double());
    } else if (v.is_string()) {
      write_string(out, v.as_string());
    } else if (v.is_array()) {
      const auto& a = v.as_array();
      out += '[';
      for (size_t i = 0; i < a.size(); ++i) {
        if (i) out += ',';
        if (indent >= 0) newline(out, indent, level + 1);
        write(a[i], level + 1);
      }
      if (indent >= 0 && !a.empty()) newline(out, indent, level);
      out += ']';
    } else {
      const auto& o = v.as_object();
      out += '{';
      for (size_t i = 0; i < o.size(); ++i) {
        if (i) out += ',';
        if (indent >= 0) newline(out, indent, level + 1);
        write_string(out, o[i].first);
        out += indent >= 0 ? ": " : ":";
        write(o[i].second, level + 1);
      }
      if (indent >= 0 && !o.empty()) newline(out, indent, level);
      out += '}';
    }
  }
};
}  // namespace

std::string Json::dump(int indent) const {
  Writer w{indent, {}};
  w.write(*this, 0);
  return std::move(w.out);
}

// ---- access -----------------------------------------------------------------------

std::string_view Json::type_name() const {
  if (is_null()) return "null";
  if (is_bool()) return "bool";
  if (is_number()) return "number";
  if (is_string()) return "string";
  if (is_array()) return "array";
  return "object";
}

namespace {
[[noreturn]] void type_error(std::string_view expected, const Json& got) {
  fail("expected ", expected, ", got ", got.type_name());
}
}  // namespace

bool Json::as_bool() const {
  if (const bool* b = std::get_if<bool>(&v_)) return *b;
  type_error("a bool", *this);
}

double Json::as_double() const {
  if (const double* d = std::get_if<double>(&v_)) return *d;
  if (const int64_t* i = std::get_if<int64_t>(&v_)) return static_cast<double>(*i);
  type_error("a number", *this);
}

int64_t Json::as_int64() const {
  if (const int64_t* i = std::get_if<int64_t>(&v_)) return *i;
  if (const double* d = std::get_if<double>(&v_)) {
    // [-2^63, 2^63) is exactly representable at both ends.
    if (std::isfinite(*d) && std::trunc(*d) == *d && *d >= -9223372036854775808.0 &&
        *d < 9223372036854775808.0)
      return static_cast<int64_t>(*d);
    fail("expected an integer, got ", dump());
  }
  type_error("an integer", *this);
}

const std::string& Json::as_string() const {
  if (const std::string* s = std::get_if<std::string>(&v_)) return *s;
  type_error("a string", *this);
}

const Json::Array& Json::as_array() const {
  if (const Array* a = std::get_if<Array>(&v_)) return *a;
  type_error("an array", *this);
}
Json::Array& Json::as_array() {
  if (Array* a = std::get_if<Array>(&v_)) return *a;
  type_error("an array", *this);
}
const Json::Object& Json::as_object() const {
  if (const Object* o = std::get_if<Object>(&v_)) return *o;
  type_error("an object", *this);
}
Json::Object& Json::as_object() {
  if (Object* o = std::get_if<Object>(&v_)) return *o;
  type_error("an object", *this);
}

Json& Json::operator[](std::string_view key) {
  if (is_null()) v_ = Object{};
  Object& o = as_object();
  for (auto& kv : o)
    if (kv.first == key) return kv.second;
  o.emplace_back(std::string(key), Json());
  return o.back().second;
}

const Json* Json::find(std::string_view key) const {
  for (const auto& kv : as_object())
    if (kv.first == key) return &kv.second;
  return nullptr;
}

const Json& Json::at(std::string_view key) const {
  if (const Json* v = find(key)) return *v;
  fail("missing key \"", key, "\"");
}

void Json::push_back(Json v) {
  if (is_null()) v_ = Array{};
  as_array().push_back(std::move(v));
}

size_t Json::size() const {
  if (const Array* a = std::get_if<Array>(&v_)) return a->size();
  if (const Object* o = std::get_if<Object>(&v_)) return o->size();
  return 0;
}

}  // namespace nibble
