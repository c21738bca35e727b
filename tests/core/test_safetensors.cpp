// safetensors: round trip of every dtype, the exact byte layout of a small file, and one
// clear error per kind of malformed header (bytes built by hand).
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>

#include "nibble/dtype.hpp"
#include "nibble/error.hpp"
#include "nibble/fileio.hpp"
#include "support/cli_runner.hpp"
#include "nibble/safetensors.hpp"

using namespace nibble;
namespace fs = std::filesystem;

namespace {

std::string u64le(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return s;
}

// A file with the given header text (unpadded) and data section.
std::string st_file(const std::string& header, const std::string& data = "") {
  return u64le(header.size()) + header + data;
}

const char* kWhat = "model.safetensors";

void expect_error(const std::string& bytes, const std::string& phrase) {
  try {
    (void)parse_safetensors(bytes, kWhat);
    ADD_FAILURE() << "no error; expected: " << phrase;
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.rfind(kWhat, 0), 0u) << msg;
    EXPECT_NE(msg.find(phrase), std::string::npos) << "expected '" << phrase << "' in: " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "not one line: " << msg;
  }
}

// Tensor of `dtype` and `shape` whose bytes are 0, 1, 2, ... scrambled by `seed`.
Tensor patterned(Shape shape, DType dtype, uint8_t seed) {
  Tensor t(std::move(shape), dtype);
  for (size_t i = 0; i < t.nbytes(); ++i) t.raw()[i] = static_cast<uint8_t>(i * 37 + seed);
  return t;
}

bool same_tensor(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() && a.nbytes() == b.nbytes() &&
         (a.nbytes() == 0 || std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0);
}

class SafeTensorsFile : public ::testing::Test {
 protected:
  // A fresh directory per test, removed afterwards (tests/support/cli_runner.hpp).
  nibble::testing::ScratchDir scratch_;
  std::string path(const std::string& name) const { return scratch_.file(name); }
};

}  // namespace

TEST(SafeTensorsDType, NamesBothWays) {
  const std::pair<DType, const char*> names[] = {
      {DType::F64, "F64"}, {DType::F32, "F32"}, {DType::F16, "F16"},     {DType::BF16, "BF16"},
      {DType::I8, "I8"},   {DType::I16, "I16"}, {DType::I32, "I32"},     {DType::I64, "I64"},
      {DType::U8, "U8"},   {DType::U16, "U16"}, {DType::E4M3, "F8_E4M3"}, {DType::E8M0, "F8_E8M0"},
  };
  for (const auto& [t, n] : names) {
    EXPECT_EQ(safetensors_dtype_name(t), n);
    EXPECT_EQ(dtype_from_safetensors_name(n, "x"), t);
  }
  EXPECT_THROW(safetensors_dtype_name(DType::E2M1), Error);
  EXPECT_THROW(safetensors_dtype_name(DType::INT4), Error);
  try {
    (void)dtype_from_safetensors_name("f32", "file.st");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("file.st: unknown safetensors dtype 'f32'"),
              std::string::npos)
        << e.what();
  }
}

TEST_F(SafeTensorsFile, EveryDTypeRoundTrips) {
  SafeTensors st;
  // Real values for the numeric types, patterned bytes for the code types.
  st.add("f64", Tensor::from_vector<double>({2}, {0.1, -1e300}));
  st.add("f32", Tensor::from_vector<float>({2, 2}, {1.0f, -2.5f, 3.4e38f, -0.0f}));
  Tensor f16({3}, DType::F16);
  f16.data<uint16_t>()[0] = f16_from_float(1.5f);
  f16.data<uint16_t>()[1] = f16_from_float(-65504.0f);
  f16.data<uint16_t>()[2] = f16_from_float(0.0009765625f);
  st.add("f16", f16);
  Tensor bf16({2}, DType::BF16);
  bf16.data<uint16_t>()[0] = bf16_from_float(3.0f);
  bf16.data<uint16_t>()[1] = bf16_from_float(-1e30f);
  st.add("bf16", bf16);
  st.add("i8", Tensor::from_vector<int8_t>({3}, {-128, 0, 127}));
  st.add("i16", Tensor::from_vector<int16_t>({2}, {-32768, 32767}));
  st.add("i32", Tensor::from_vector<int32_t>({1, 2}, {std::numeric_limits<int32_t>::min(), 42}));
  st.add("i64", Tensor::from_vector<int64_t>({2}, {std::numeric_limits<int64_t>::max(), -1}));
  st.add("u8", Tensor::from_vector<uint8_t>({2, 2, 1}, {0, 1, 254, 255}));
  st.add("u16", Tensor::from_vector<uint16_t>({2}, {0, 65535}));
  Tensor e4m3({4}, DType::E4M3);
  e4m3.data<uint8_t>()[0] = e4m3_from_float(448.0f);
  e4m3.data<uint8_t>()[1] = e4m3_from_float(-0.5f);
  e4m3.data<uint8_t>()[2] = 0x01;
  e4m3.data<uint8_t>()[3] = 0x80;
  st.add("e4m3", e4m3);
  st.add("e8m0", patterned({5}, DType::E8M0, 3));
  st.add("scalar", Tensor::from_vector<float>({}, {7.0f}));
  st.add("empty", Tensor({0, 3}, DType::F32));
  st.metadata["format"] = "nibble";
  st.metadata["note"] = "caf\xC3\xA9 \"quoted\"\n";

  const std::string p = path("all.safetensors");
  write_safetensors(p, st);
  const SafeTensors back = read_safetensors(p);
  EXPECT_EQ(back.source, p);
  EXPECT_EQ(back.metadata, st.metadata);
  ASSERT_EQ(back.tensors.size(), st.tensors.size());
  // Written sorted by name; the data follows the same order, so reading keeps it.
  for (size_t i = 1; i < back.tensors.size(); ++i)
    EXPECT_LT(back.tensors[i - 1].first, back.tensors[i].first);
  for (const auto& [name, t] : st.tensors) {
    const Tensor* b = back.find(name);
    ASSERT_NE(b, nullptr) << name;
    EXPECT_TRUE(same_tensor(*b, t)) << name;
  }
  EXPECT_EQ(back.get("f64").to_vector<double>(), (std::vector<double>{0.1, -1e300}));
  EXPECT_EQ(back.get("i64").data<int64_t>()[0], std::numeric_limits<int64_t>::max());
  EXPECT_EQ(f16_to_float(back.get("f16").data<uint16_t>()[1]), -65504.0f);
  EXPECT_EQ(bf16_to_float(back.get("bf16").data<uint16_t>()[0]), 3.0f);
  EXPECT_EQ(e4m3_to_float(back.get("e4m3").data<uint8_t>()[0]), 448.0f);
  EXPECT_EQ(back.get("e8m0").dtype(), DType::E8M0);
  EXPECT_EQ(back.get("scalar").rank(), 0u);
  EXPECT_EQ(back.get("scalar").data<float>()[0], 7.0f);
  EXPECT_EQ(back.get("empty").shape(), (Shape{0, 3}));
  // Serialization is deterministic.
  EXPECT_EQ(serialize_safetensors(back), read_file(p));
}

TEST(SafeTensorsFormat, ExactByteLayout) {
  SafeTensors st;
  st.add("b", Tensor::from_vector<float>({2}, {1.0f, -2.0f}));
  st.add("a", Tensor::from_vector<uint8_t>({3}, {1, 2, 3}));
  st.metadata["format"] = "pt";
  const std::string json =
      R"({"__metadata__":{"format":"pt"},"a":{"dtype":"U8","shape":[3],"data_offsets":[0,3]},)"
      R"("b":{"dtype":"F32","shape":[2],"data_offsets":[3,11]}})";
  ASSERT_EQ(json.size(), 138u);
  const std::string expected = std::string("\x90\0\0\0\0\0\0\0", 8) + json + "      " +
                               std::string("\x01\x02\x03"
                                           "\x00\x00\x80\x3f"
                                           "\x00\x00\x00\xc0",
                                           11);
  EXPECT_EQ(serialize_safetensors(st), expected);

  // Without metadata the entry is left out; 54 bytes of JSON are padded to 56.
  SafeTensors plain;
  plain.add("x", Tensor::from_vector<int16_t>({1}, {-2}));
  const std::string j2 = R"({"x":{"dtype":"I16","shape":[1],"data_offsets":[0,2]}})";
  ASSERT_EQ(j2.size(), 54u);
  EXPECT_EQ(serialize_safetensors(plain),
            std::string("\x38\0\0\0\0\0\0\0", 8) + j2 + "  " + std::string("\xfe\xff", 2));

  // An empty file still has a valid header.
  EXPECT_EQ(serialize_safetensors(SafeTensors{}), std::string("\x08\0\0\0\0\0\0\0", 8) + "{}      ");
  EXPECT_TRUE(parse_safetensors(serialize_safetensors(SafeTensors{}), "e").tensors.empty());
}

TEST(SafeTensorsFormat, ReadsOtherWritersLayout) {
  // Keys in any order, whitespace, data not in header order, a gap, trailing bytes, a
  // zero-size tensor sharing an offset, metadata last.
  const std::string header = R"( { "w": {"shape": [2], "data_offsets": [8, 16], "dtype": "F32"},
      "v": {"dtype": "I32", "data_offsets": [0, 4], "shape": []},
      "z": {"dtype": "BF16", "shape": [0, 5], "data_offsets": [4, 4]},
      "__metadata__": {"a": "b"} }   )";
  std::string data = std::string("\x2a\0\0\0", 4) + "gap!" +
                     std::string("\x00\x00\x40\x40\x00\x00\x80\xbf", 8) + "tail";
  const SafeTensors st = parse_safetensors(st_file(header, data), "other.safetensors");
  ASSERT_EQ(st.tensors.size(), 3u);
  EXPECT_EQ(st.tensors[0].first, "v");  // file (data) order
  EXPECT_EQ(st.tensors[2].first, "w");
  EXPECT_EQ(st.get("v").data<int32_t>()[0], 42);
  EXPECT_EQ(st.get("w").to_vector<float>(), (std::vector<float>{3.0f, -1.0f}));
  EXPECT_EQ(st.get("z").numel(), 0);
  EXPECT_EQ(st.get("z").dtype(), DType::BF16);
  EXPECT_EQ(st.metadata.at("a"), "b");
}

TEST(SafeTensorsFormat, MalformedFilesRejected) {
  const std::string f32x2 = std::string("\x00\x00\x80\x3f\x00\x00\x00\x40", 8);
  auto entry = [](const std::string& name, const std::string& dtype, const std::string& shape,
                  const std::string& offsets) {
    return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape +
           ",\"data_offsets\":" + offsets + "}";
  };
  // Sanity: the valid base case parses.
  EXPECT_EQ(parse_safetensors(st_file("{" + entry("a", "F32", "[2]", "[0,8]") + "}", f32x2), kWhat)
                .get("a")
                .to_vector<float>(),
            (std::vector<float>{1.0f, 2.0f}));

  // Truncated files and header sizes.
  expect_error("", "truncated: a safetensors file needs at least 8 bytes, found 0");
  expect_error(std::string("\x02\0\0\0\0\0\0", 7), "needs at least 8 bytes, found 7");
  expect_error(u64le(100'000'001) + "{}", "header size 100000001 exceeds the 100 MB limit");
  expect_error(u64le(std::numeric_limits<uint64_t>::max()) + "{}",
               "header size 18446744073709551615 exceeds the 100 MB limit");
  expect_error(u64le(50) + "{}", "header size 50 exceeds the 2 bytes");
  expect_error(u64le(2), "header size 2 exceeds the 0 bytes");
  const std::string good = st_file("{" + entry("a", "F32", "[2]", "[0,8]") + "}", f32x2);
  expect_error(good.substr(0, 20), "truncated: header size");

  // Header JSON.
  expect_error(st_file("{\"a\":", ""), "JSON error at line 1, column 6");
  expect_error(st_file("{\"a\":{},}", ""), "JSON error at line 1, column 9: trailing comma");
  expect_error(st_file(std::string("{}\0\0\0\0\0\0", 8), ""), "JSON error at line 1, column 3");
  expect_error(st_file("[1,2]", ""), "header must be a JSON object, got array");
  expect_error(st_file("{" + entry("a", "F32", "[2]", "[0,8]") + "," +
                           entry("a", "F32", "[2]", "[0,8]") + "}",
                       f32x2),
               "duplicate key \"a\"");

  // Entries.
  expect_error(st_file(R"({"a":[1]})", f32x2), "tensor 'a': entry must be an object, got array");
  expect_error(st_file(R"({"a":{"dtype":"F32","data_offsets":[0,8]}})", f32x2),
               "tensor 'a': missing field 'shape'");
  expect_error(st_file(R"({"a":{"shape":[2],"data_offsets":[0,8]}})", f32x2),
               "tensor 'a': missing field 'dtype'");
  expect_error(st_file(R"({"a":{"dtype":"F32","shape":[2]}})", f32x2),
               "tensor 'a': missing field 'data_offsets'");
  expect_error(st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}})", f32x2),
               "tensor 'a': unexpected field 'x'");
  expect_error(st_file("{" + entry("a", "F4", "[2]", "[0,8]") + "}", f32x2),
               "tensor 'a': unknown safetensors dtype 'F4'; supported: F64, F32");
  expect_error(st_file("{" + entry("a", "BOOL", "[8]", "[0,8]") + "}", f32x2),
               "unknown safetensors dtype 'BOOL'");
  expect_error(st_file(R"({"a":{"dtype":32,"shape":[2],"data_offsets":[0,8]}})", f32x2),
               "tensor 'a': 'dtype' must be a string");

  // Shapes.
  expect_error(st_file("{" + entry("a", "F32", "2", "[0,8]") + "}", f32x2),
               "tensor 'a': 'shape' must be an array of non-negative integers");
  expect_error(st_file("{" + entry("a", "F32", "[-2]", "[0,8]") + "}", f32x2),
               "tensor 'a': 'shape' must be an array of non-negative integers, got [-2]");
  expect_error(st_file("{" + entry("a", "F32", "[2.0]", "[0,8]") + "}", f32x2),
               "'shape' must be an array of non-negative integers");
  expect_error(st_file("{" + entry("a", "F32", "[\"2\"]", "[0,8]") + "}", f32x2),
               "'shape' must be an array of non-negative integers");
  expect_error(st_file("{" + entry("a", "F32", "[4294967296,4294967296]", "[0,8]") + "}", f32x2),
               "tensor 'a': shape [4294967296, 4294967296] is too large");

  // Offsets.
  expect_error(st_file("{" + entry("a", "F32", "[2]", "[0]") + "}", f32x2),
               "tensor 'a': 'data_offsets' must be two non-negative integers");
  expect_error(st_file("{" + entry("a", "F32", "[2]", "[0,8,16]") + "}", f32x2),
               "'data_offsets' must be two non-negative integers");
  expect_error(st_file("{" + entry("a", "F32", "[2]", "[-8,0]") + "}", f32x2),
               "'data_offsets' must be two non-negative integers");
  expect_error(st_file("{" + entry("a", "F32", "[2]", "[0,8.5]") + "}", f32x2),
               "'data_offsets' must be two non-negative integers");
  expect_error(st_file("{" + entry("a", "F32", "[2]", "{}") + "}", f32x2),
               "'data_offsets' must be two non-negative integers");
  expect_error(st_file("{" + entry("a", "F32", "[0]", "[8,0]") + "}", f32x2),
               "tensor 'a': data_offsets [8, 0] have begin > end");
  expect_error(st_file("{" + entry("a", "F32", "[2]", "[4,12]") + "}", f32x2),
               "tensor 'a': data_offsets [4, 12] end beyond the data section (8 bytes)");
  expect_error(st_file("{" + entry("a", "F32", "[2]", "[0,8]") + "}", f32x2.substr(0, 7)),
               "end beyond the data section (7 bytes)");
  expect_error(st_file("{" + entry("a", "F32", "[3]", "[0,8]") + "}", f32x2),
               "tensor 'a': data_offsets [0, 8] span 8 bytes but shape [3] of F32 needs 12");
  expect_error(st_file("{" + entry("a", "BF16", "[2]", "[0,8]") + "}", f32x2),
               "span 8 bytes but shape [2] of BF16 needs 4");

  // Overlaps.
  expect_error(st_file("{" + entry("a", "F32", "[2]", "[0,8]") + "," +
                           entry("b", "F32", "[1]", "[4,8]") + "}",
                       f32x2),
               "tensors 'a' [0, 8] and 'b' [4, 8] have overlapping data_offsets");
  expect_error(st_file("{" + entry("b", "U8", "[4]", "[2,6]") + "," +
                           entry("a", "U8", "[4]", "[0,4]") + "}",
                       f32x2),
               "tensors 'a' [0, 4] and 'b' [2, 6] have overlapping data_offsets");
  expect_error(st_file("{" + entry("a", "U8", "[8]", "[0,8]") + "," +
                           entry("b", "U8", "[2]", "[6,8]") + "," +
                           entry("c", "U8", "[1]", "[2,3]") + "}",
                       f32x2),
               "overlapping data_offsets");
  expect_error(st_file("{" + entry("a", "U8", "[4]", "[0,4]") + "," +
                           entry("b", "U8", "[4]", "[0,4]") + "}",
                       f32x2),
               "overlapping data_offsets");
  // Zero-size tensors share nothing: accepted anywhere in range.
  EXPECT_NO_THROW(parse_safetensors(st_file("{" + entry("a", "U8", "[8]", "[0,8]") + "," +
                                                entry("b", "U8", "[0]", "[4,4]") + "}",
                                            f32x2),
                                    kWhat));

  // Metadata.
  expect_error(st_file(R"({"__metadata__":{"k":1}})", ""),
               "metadata value for 'k' must be a string, got number");
  expect_error(st_file(R"({"__metadata__":{"k":{"x":"y"}}})", ""),
               "metadata value for 'k' must be a string, got object");
  expect_error(st_file(R"({"__metadata__":"x"})", ""), "'__metadata__' must be an object");
}

TEST_F(SafeTensorsFile, WriterRejectsWhatItCannotStore) {
  const std::string p = path("bad.safetensors");
  for (DType t : {DType::E2M1, DType::INT4}) {
    SafeTensors st;
    st.add("codes", Tensor({4}, t));
    try {
      write_safetensors(p, st);
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(p), std::string::npos) << msg;
      EXPECT_NE(msg.find("tensor 'codes'"), std::string::npos) << msg;
      EXPECT_NE(msg.find("store the packed codes as U8"), std::string::npos) << msg;
    }
  }
  SafeTensors dup;
  dup.tensors.emplace_back("x", Tensor({1}, DType::F32));
  dup.tensors.emplace_back("x", Tensor({1}, DType::F32));
  EXPECT_THROW(write_safetensors(p, dup), Error);
  SafeTensors reserved;
  reserved.tensors.emplace_back("__metadata__", Tensor({1}, DType::F32));
  EXPECT_THROW(serialize_safetensors(reserved), Error);
  EXPECT_FALSE(file_exists(p));

  SafeTensors st;
  st.add("x", Tensor({1}, DType::F32));
  try {
    st.add("x", Tensor({2}, DType::F32));
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("duplicate tensor name 'x'"), std::string::npos);
  }
  EXPECT_THROW(st.add("__metadata__", Tensor({1}, DType::F32)), Error);
  EXPECT_EQ(st.tensors.size(), 1u);
}

TEST_F(SafeTensorsFile, LookupErrorsNameTheFile) {
  SafeTensors st;
  st.add("w", Tensor::from_vector<float>({1}, {2.0f}));
  const std::string p = path("m.safetensors");
  write_safetensors(p, st);
  const SafeTensors back = read_safetensors(p);
  EXPECT_EQ(back.get("w").data<float>()[0], 2.0f);
  EXPECT_EQ(back.find("nope"), nullptr);
  try {
    (void)back.get("nope");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no tensor named 'nope' in " + p), std::string::npos)
        << e.what();
  }
  try {
    (void)read_safetensors(path("missing.safetensors"));
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path("missing.safetensors") + ": cannot open"),
              std::string::npos)
        << e.what();
  }
}
