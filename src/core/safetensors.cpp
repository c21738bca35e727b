#include "nibble/safetensors.hpp"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>

#include "nibble/error.hpp"
#include "nibble/fileio.hpp"
#include "nibble/json.hpp"

namespace nibble {

static_assert(std::endian::native == std::endian::little,
              "the safetensors reader/writer assumes a little-endian host");

namespace {

constexpr uint64_t kMaxHeader = 100'000'000;

struct StName {
  DType t;
  const char* name;
};
constexpr StName kNames[] = {
    {DType::F64, "F64"},    {DType::F32, "F32"},      {DType::F16, "F16"},
    {DType::BF16, "BF16"},  {DType::I8, "I8"},        {DType::I16, "I16"},
    {DType::I32, "I32"},    {DType::I64, "I64"},      {DType::U8, "U8"},
    {DType::U16, "U16"},    {DType::E4M3, "F8_E4M3"}, {DType::E8M0, "F8_E8M0"},
};

std::string supported_list() {
  std::string s;
  for (const auto& n : kNames) {
    if (!s.empty()) s += ", ";
    s += n.name;
  }
  return s;
}

std::string range_str(uint64_t b, uint64_t e) {
  return detail::concat('[', b, ", ", e, ']');
}

}  // namespace

std::string safetensors_dtype_name(DType t) {
  for (const auto& n : kNames)
    if (n.t == t) return n.name;
  fail("dtype ", dtype_name(t),
       " cannot be stored in safetensors directly; store the packed 4-bit codes as U8");
}

DType dtype_from_safetensors_name(const std::string& name, const std::string& what) {
  for (const auto& n : kNames)
    if (name == n.name) return n.t;
  fail(what, ": unknown safetensors dtype '", name, "'; supported: ", supported_list());
}

// ---- SafeTensors ---------------------------------------------------------------------

const Tensor* SafeTensors::find(const std::string& name) const {
  for (const auto& [n, t] : tensors)
    if (n == name) return &t;
  return nullptr;
}

const Tensor& SafeTensors::get(const std::string& name) const {
  if (const Tensor* t = find(name)) return *t;
  fail("no tensor named '", name, "' in ", source.empty() ? std::string("safetensors") : source,
       " (", tensors.size(), " tensors)");
}

void SafeTensors::add(std::string name, Tensor t) {
  if (name == "__metadata__") fail("'__metadata__' is reserved and cannot name a tensor");
  if (find(name)) fail("duplicate tensor name '", name, "'");
  tensors.emplace_back(std::move(name), std::move(t));
}

// ---- reading ------------------------------------------------------------------------

SafeTensors parse_safetensors(const std::string& bytes, const std::string& what) {
  if (bytes.size() < 8)
    fail(what, ": truncated: a safetensors file needs at least 8 bytes, found ", bytes.size());
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[static_cast<size_t>(i)]);
  if (n > kMaxHeader) fail(what, ": header size ", n, " exceeds the 100 MB limit");
  if (n > bytes.size() - 8)
    fail(what, ": truncated: header size ", n, " exceeds the ", bytes.size() - 8,
         " bytes after the length prefix");
  const std::string_view header_text = std::string_view(bytes).substr(8, n);
  const Json header = Json::parse(header_text, what + " (safetensors header)");
  if (!header.is_object())
    fail(what, ": safetensors header must be a JSON object, got ", header.type_name());

  const uint64_t data_start = 8 + n;
  const uint64_t data_size = bytes.size() - data_start;

  SafeTensors st;
  st.source = what;
  struct Entry {
    std::string name;
    Shape shape;
    DType dtype;
    uint64_t begin, end;
  };
  std::vector<Entry> entries;
  for (const auto& [name, v] : header.as_object()) {
    if (name == "__metadata__") {
      if (!v.is_object())
        fail(what, ": '__metadata__' must be an object of strings, got ", v.type_name());
      for (const auto& [k, mv] : v.as_object()) {
        if (!mv.is_string())
          fail(what, ": metadata value for '", k, "' must be a string, got ", mv.type_name());
        st.metadata[k] = mv.as_string();
      }
      continue;
    }
    const std::string ctx = what + ": tensor '" + name + "'";
    if (!v.is_object()) fail(ctx, ": entry must be an object, got ", v.type_name());
    for (const auto& kv : v.as_object())
      if (kv.first != "dtype" && kv.first != "shape" && kv.first != "data_offsets")
        fail(ctx, ": unexpected field '", kv.first,
             "' (expected dtype, shape and data_offsets)");
    for (const char* field : {"dtype", "shape", "data_offsets"})
      if (!v.contains(field)) fail(ctx, ": missing field '", field, "'");

    Entry e;
    e.name = name;
    const Json& dt = v.at("dtype");
    if (!dt.is_string()) fail(ctx, ": 'dtype' must be a string, got ", dt.type_name());
    e.dtype = dtype_from_safetensors_name(dt.as_string(), ctx);

    const Json& sh = v.at("shape");
    if (!sh.is_array()) fail(ctx, ": 'shape' must be an array of non-negative integers, got ",
                             sh.type_name());
    for (const Json& d : sh.as_array()) {
      if (!d.is_int() || d.as_int64() < 0)
        fail(ctx, ": 'shape' must be an array of non-negative integers, got ", sh.dump());
      e.shape.push_back(d.as_int64());
    }
    const size_t itemsize = static_cast<size_t>(dtype_bits(e.dtype) / 8);
    uint64_t numel = 1;
    for (const int64_t d : e.shape) {
      const uint64_t ud = static_cast<uint64_t>(d);
      if (ud != 0 && numel > std::numeric_limits<uint64_t>::max() / 16 / ud)
        fail(ctx, ": shape ", shape_str(e.shape), " is too large");
      numel *= ud;
    }
    const uint64_t need = numel * itemsize;

    const Json& off = v.at("data_offsets");
    if (!off.is_array() || off.size() != 2 || !off.as_array()[0].is_int() ||
        !off.as_array()[1].is_int() || off.as_array()[0].as_int64() < 0 ||
        off.as_array()[1].as_int64() < 0)
      fail(ctx, ": 'data_offsets' must be two non-negative integers [begin, end], got ",
           off.dump());
    e.begin = static_cast<uint64_t>(off.as_array()[0].as_int64());
    e.end = static_cast<uint64_t>(off.as_array()[1].as_int64());
    if (e.begin > e.end)
      fail(ctx, ": data_offsets ", range_str(e.begin, e.end), " have begin > end");
    if (e.end > data_size)
      fail(ctx, ": data_offsets ", range_str(e.begin, e.end), " end beyond the data section (",
           data_size, " bytes)");
    if (e.end - e.begin != need)
      fail(ctx, ": data_offsets ", range_str(e.begin, e.end), " span ", e.end - e.begin,
           " bytes but shape ", shape_str(e.shape), " of ", dt.as_string(), " needs ", need);
    entries.push_back(std::move(e));
  }

  // File order, and no two tensors may share bytes (empty tensors share nothing).
  std::stable_sort(entries.begin(), entries.end(),
                   [](const Entry& a, const Entry& b) { return a.begin < b.begin; });
  const Entry* reach = nullptr;  // the non-empty tensor reaching furthest so far
  for (const Entry& e : entries) {
    if (e.begin == e.end) continue;
    if (reach && e.begin < reach->end)
      fail(what, ": tensors '", reach->name, "' ", range_str(reach->begin, reach->end), " and '",
           e.name, "' ", range_str(e.begin, e.end), " have overlapping data_offsets");
    if (!reach || e.end > reach->end) reach = &e;
  }

  st.tensors.reserve(entries.size());
  for (Entry& e : entries) {
    Tensor t(std::move(e.shape), e.dtype);
    if (t.nbytes()) std::memcpy(t.raw(), bytes.data() + data_start + e.begin, t.nbytes());
    st.tensors.emplace_back(std::move(e.name), std::move(t));
  }
  return st;
}

SafeTensors read_safetensors(const std::string& path) {
  return parse_safetensors(read_file(path), path);
}

// ---- writing ------------------------------------------------------------------------

std::string serialize_safetensors(const SafeTensors& st) {
  std::vector<const std::pair<std::string, Tensor>*> order;
  order.reserve(st.tensors.size());
  for (const auto& p : st.tensors) order.push_back(&p);
  std::sort(order.begin(), order.end(), [](auto* a, auto* b) { return a->first < b->first; });
  for (size_t i = 0; i < order.size(); ++i) {
    const std::string& name = order[i]->first;
    if (name == "__metadata__") fail("'__metadata__' is reserved and cannot name a tensor");
    if (i && order[i - 1]->first == name) fail("duplicate tensor name '", name, "'");
  }

  // Names are unique (checked above), so entries are appended without lookups.
  Json::Object header;
  header.reserve(order.size() + 1);
  if (!st.metadata.empty()) {
    Json::Object meta;
    for (const auto& [k, v] : st.metadata) meta.emplace_back(k, Json(v));
    header.emplace_back("__metadata__", Json(std::move(meta)));
  }
  uint64_t offset = 0;
  for (const auto* p : order) {
    const Tensor& t = p->second;
    if (t.dtype() == DType::E2M1 || t.dtype() == DType::INT4)
      fail("tensor '", p->first, "': ", dtype_name(t.dtype()),
           " tensors cannot be stored in safetensors directly; store the packed codes as U8");
    Json entry = Json::object();
    entry["dtype"] = safetensors_dtype_name(t.dtype());
    Json shape = Json::array();
    for (const int64_t d : t.shape()) shape.push_back(Json(d));
    entry["shape"] = std::move(shape);
    Json offs = Json::array();
    offs.push_back(Json(offset));
    offs.push_back(Json(offset + t.nbytes()));
    entry["data_offsets"] = std::move(offs);
    header.emplace_back(p->first, std::move(entry));
    offset += t.nbytes();
  }
  std::string text = Json(std::move(header)).dump();
  text.append((8 - text.size() % 8) % 8, ' ');

  std::string out;
  out.reserve(8 + text.size() + offset);
  const uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) out += static_cast<char>((n >> (8 * i)) & 0xFF);
  out += text;
  for (const auto* p : order)
    out.append(reinterpret_cast<const char*>(p->second.raw()), p->second.nbytes());
  return out;
}

void write_safetensors(const std::string& path, const SafeTensors& st) {
  std::string bytes;
  try {
    bytes = serialize_safetensors(st);
  } catch (const Error& e) {
    fail(path, ": ", e.what());
  }
  write_file_atomic(path, bytes);
}

}  // namespace nibble
