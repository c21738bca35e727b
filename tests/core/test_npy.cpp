// .npy: byte-exact fixtures written by hand as numpy.save lays them out, reading of
// format versions 1.0/2.0/3.0, and one clear error per kind of malformed file.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>

#include "nibble/error.hpp"
#include "nibble/fileio.hpp"
#include "support/cli_runner.hpp"
#include "nibble/npy.hpp"

using namespace nibble;
namespace fs = std::filesystem;

namespace {

class NpyFile : public ::testing::Test {
 protected:
  // A fresh directory per test, removed afterwards (tests/support/cli_runner.hpp).
  nibble::testing::ScratchDir scratch_;
  std::string path(const std::string& name) const { return scratch_.file(name); }
  std::string put(const std::string& name, const std::string& bytes) const {
    const std::string p = path(name);
    write_file_atomic(p, bytes);
    return p;
  }
  // Reading `bytes` must fail with a message naming the file and containing `phrase`.
  void expect_error(const std::string& bytes, const std::string& phrase) const {
    const std::string p = put("bad.npy", bytes);
    try {
      (void)read_npy(p);
      ADD_FAILURE() << "no error; expected: " << phrase;
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(p), std::string::npos) << msg;
      EXPECT_NE(msg.find(phrase), std::string::npos) << "expected '" << phrase << "' in: " << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << "not one line: " << msg;
    }
  }
};

std::string sp(size_t n) { return std::string(n, ' '); }
std::string raw(const char* s, size_t n) { return std::string(s, n); }

// A version 1.0 file around `dict_and_padding` (everything between the length field and
// the data, newline included); used for the malformed-header cases.
std::string v1(const std::string& dict_and_padding, const std::string& data = "") {
  std::string b = raw("\x93NUMPY\x01\x00", 8);
  b += static_cast<char>(dict_and_padding.size() & 0xFF);
  b += static_cast<char>(dict_and_padding.size() >> 8);
  return b + dict_and_padding + data;
}

// The float32 (2, 3) array [[1, -2.5, 0.5], [2, -0, 100]] exactly as numpy.save writes it:
// header length 0x76 = 118 (the dict, 21 - len("2") = 20 spare spaces for growing the first
// axis, 38 spaces of alignment padding and '\n'), so the data starts at byte 128.
std::string f32_fixture() {
  return raw("\x93NUMPY\x01\x00\x76\x00", 10) +
         "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }" + sp(58) + "\n" +
         raw("\x00\x00\x80\x3f"    // 1.0
             "\x00\x00\x20\xc0"    // -2.5
             "\x00\x00\x00\x3f"    // 0.5
             "\x00\x00\x00\x40"    // 2.0
             "\x00\x00\x00\x80"    // -0.0
             "\x00\x00\xc8\x42",   // 100.0
             24);
}

// int64 (4,) [1, -1, INT64_MAX, 0x0102030405060708].
std::string i64_fixture() {
  return raw("\x93NUMPY\x01\x00\x76\x00", 10) +
         "{'descr': '<i8', 'fortran_order': False, 'shape': (4,), }" + sp(60) + "\n" +
         raw("\x01\x00\x00\x00\x00\x00\x00\x00"
             "\xff\xff\xff\xff\xff\xff\xff\xff"
             "\xff\xff\xff\xff\xff\xff\xff\x7f"
             "\x08\x07\x06\x05\x04\x03\x02\x01",
             32);
}

// float64 0-d array np.array(0.25): shape (), no growth spaces.
std::string f64_scalar_fixture() {
  return raw("\x93NUMPY\x01\x00\x76\x00", 10) +
         "{'descr': '<f8', 'fortran_order': False, 'shape': (), }" + sp(62) + "\n" +
         raw("\x00\x00\x00\x00\x00\x00\xd0\x3f", 8);
}

}  // namespace

TEST_F(NpyFile, ReadsNumpyFloat32Fixture) {
  const std::string bytes = f32_fixture();
  ASSERT_EQ(bytes.size(), 128u + 24u);
  const Tensor t = read_npy(put("a.npy", bytes));
  EXPECT_EQ(t.dtype(), DType::F32);
  EXPECT_EQ(t.shape(), (Shape{2, 3}));
  const std::vector<float> v = t.to_vector<float>();
  ASSERT_EQ(v.size(), 6u);
  EXPECT_EQ(v[0], 1.0f);
  EXPECT_EQ(v[1], -2.5f);
  EXPECT_EQ(v[2], 0.5f);
  EXPECT_EQ(v[3], 2.0f);
  EXPECT_EQ(v[4], 0.0f);
  EXPECT_TRUE(std::signbit(v[4]));
  EXPECT_EQ(v[5], 100.0f);
}

TEST_F(NpyFile, WritesNumpyFloat32BytesExactly) {
  const Tensor t = Tensor::from_vector<float>({2, 3}, {1.0f, -2.5f, 0.5f, 2.0f, -0.0f, 100.0f});
  const std::string p = path("w.npy");
  write_npy(p, t);
  EXPECT_EQ(read_file(p), f32_fixture());
}

TEST_F(NpyFile, Int64FixtureReadAndWrite) {
  const Tensor t = read_npy(put("i.npy", i64_fixture()));
  EXPECT_EQ(t.dtype(), DType::I64);
  EXPECT_EQ(t.shape(), (Shape{4}));
  EXPECT_EQ(t.to_vector<int64_t>(), (std::vector<int64_t>{1, -1, std::numeric_limits<int64_t>::max(),
                                                          0x0102030405060708}));
  const std::string p = path("iw.npy");
  write_npy(p, t);
  EXPECT_EQ(read_file(p), i64_fixture());
}

TEST_F(NpyFile, ZeroDimensionalArray) {
  const Tensor t = read_npy(put("s.npy", f64_scalar_fixture()));
  EXPECT_EQ(t.rank(), 0u);
  EXPECT_EQ(t.numel(), 1);
  EXPECT_EQ(t.dtype(), DType::F64);
  EXPECT_EQ(t.data<double>()[0], 0.25);
  const std::string p = path("sw.npy");
  write_npy(p, t);
  EXPECT_EQ(read_file(p), f64_scalar_fixture());
}

TEST_F(NpyFile, LongShapeGetsGrowthSpaceAndNextAlignment) {
  // 16 dimensions of 1: the dict is 101 characters; with numpy's 20 spare spaces the
  // header no longer fits in 128 bytes, so the data starts at 192 (header length 0xb6).
  const std::string expected =
      raw("\x93NUMPY\x01\x00\xb6\x00", 10) +
      "{'descr': '|i1', 'fortran_order': False, 'shape': (1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, "
      "1, 1, 1, 1), }" +
      sp(80) + "\n" + raw("\xfe", 1);
  ASSERT_EQ(expected.size(), 193u);
  const Tensor t = Tensor::from_vector<int8_t>(Shape(16, 1), {-2});
  const std::string p = path("long.npy");
  write_npy(p, t);
  EXPECT_EQ(read_file(p), expected);
  const Tensor back = read_npy(p);
  EXPECT_EQ(back.shape(), Shape(16, 1));
  EXPECT_EQ(back.data<int8_t>()[0], -2);
}

TEST_F(NpyFile, EmptyArray) {
  const std::string bytes = raw("\x93NUMPY\x01\x00\x76\x00", 10) +
                            "{'descr': '|u1', 'fortran_order': False, 'shape': (0,), }" +
                            sp(60) + "\n";
  const Tensor t = read_npy(put("e.npy", bytes));
  EXPECT_EQ(t.dtype(), DType::U8);
  EXPECT_EQ(t.shape(), (Shape{0}));
  EXPECT_EQ(t.numel(), 0);
  const std::string p = path("ew.npy");
  write_npy(p, t);
  EXPECT_EQ(read_file(p), bytes);
}

TEST_F(NpyFile, ReadsVersion2And3Headers) {
  // Version 2.0: 4-byte header length; numpy pads so that 12 + 80 + 36 = 128.
  const std::string data = f32_fixture().substr(128);
  const std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  for (const char major : {'\x02', '\x03'}) {
    const std::string bytes = raw("\x93NUMPY", 6) + major + raw("\x00\x74\x00\x00\x00", 5) +
                              dict + sp(56) + "\n" + data;
    ASSERT_EQ(bytes.size(), 128u + 24u);
    const Tensor t = read_npy(put("v2.npy", bytes));
    EXPECT_EQ(t.shape(), (Shape{2, 3}));
    EXPECT_EQ(t.to_vector<float>(), (std::vector<float>{1.0f, -2.5f, 0.5f, 2.0f, -0.0f, 100.0f}));
  }
}

TEST_F(NpyFile, ReadsOtherHeaderSpellings) {
  // Python 2 era: double quotes, other key order, 'L' suffixes, no trailing comma,
  // 16-byte alignment.
  const std::string dict = "{\"shape\": (2L, 1L), \"fortran_order\": False, \"descr\": \"<i4\"}";
  std::string padded = dict;
  while ((10 + padded.size() + 1) % 16) padded += ' ';
  padded += '\n';
  const Tensor t = read_npy(put("old.npy", v1(padded, raw("\x05\x00\x00\x00\xfa\xff\xff\xff", 8))));
  EXPECT_EQ(t.dtype(), DType::I32);
  EXPECT_EQ(t.shape(), (Shape{2, 1}));
  EXPECT_EQ(t.to_vector<int32_t>(), (std::vector<int32_t>{5, -6}));
  // One-byte types may carry '<' instead of '|'.
  const Tensor u = read_npy(put("u.npy", v1("{'descr': '<u1', 'fortran_order': False, 'shape': (2,), }\n",
                                            raw("\x07\xff", 2))));
  EXPECT_EQ(u.to_vector<uint8_t>(), (std::vector<uint8_t>{7, 255}));
}

TEST_F(NpyFile, AllDTypesRoundTrip) {
  struct Case {
    Tensor t;
    const char* descr;
  };
  const Case cases[] = {
      {Tensor::from_vector<float>({3}, {1.5f, -0.0f, 3.4e38f}), "'<f4'"},
      {Tensor::from_vector<double>({1, 2}, {0.1, -1e300}), "'<f8'"},
      {Tensor::from_vector<int8_t>({2, 2}, {-128, 127, 0, -1}), "'|i1'"},
      {Tensor::from_vector<int16_t>({3}, {-32768, 32767, 12345}), "'<i2'"},
      {Tensor::from_vector<int32_t>({2}, {std::numeric_limits<int32_t>::min(), 7}), "'<i4'"},
      {Tensor::from_vector<int64_t>({1}, {std::numeric_limits<int64_t>::min()}), "'<i8'"},
      {Tensor::from_vector<uint8_t>({2, 1, 2}, {0, 255, 128, 1}), "'|u1'"},
  };
  for (const Case& c : cases) {
    const std::string p = path("rt.npy");
    write_npy(p, c.t);
    const std::string bytes = read_file(p);
    EXPECT_EQ(bytes.size() % 64, c.t.nbytes() % 64);
    EXPECT_EQ(bytes[bytes.size() - c.t.nbytes() - 1], '\n');
    EXPECT_NE(bytes.find(std::string("'descr': ") + c.descr), std::string::npos) << c.descr;
    const Tensor back = read_npy(p);
    EXPECT_EQ(back.dtype(), c.t.dtype());
    EXPECT_EQ(back.shape(), c.t.shape());
    ASSERT_EQ(back.nbytes(), c.t.nbytes());
    EXPECT_EQ(std::memcmp(back.raw(), c.t.raw(), c.t.nbytes()), 0) << c.descr;
  }
}

TEST_F(NpyFile, WriteRejectsUnsupportedDTypes) {
  const std::string p = path("bf.npy");
  for (DType t : {DType::BF16, DType::F16, DType::E4M3, DType::E2M1, DType::U16}) {
    try {
      write_npy(p, Tensor({2}, t));
      ADD_FAILURE() << "no error for " << dtype_name(t);
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(p), std::string::npos) << msg;
      EXPECT_NE(msg.find(std::string(dtype_name(t))), std::string::npos) << msg;
    }
  }
  EXPECT_FALSE(file_exists(p));
}

TEST_F(NpyFile, MissingFile) {
  const std::string p = path("nope.npy");
  try {
    (void)read_npy(p);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(p + ": cannot open"), std::string::npos) << e.what();
  }
}

TEST_F(NpyFile, MalformedFiles) {
  const std::string f32 = f32_fixture();
  const std::string good_dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  const std::string data24 = f32.substr(128);

  expect_error("", "bad magic");
  expect_error("PK\x03\x04 this is a zip file", "bad magic");
  expect_error(raw("\x93NUMPZ\x01\x00\x76\x00", 10) + f32.substr(10), "bad magic");
  expect_error(raw("\x93NUMPY\x04\x00\x76\x00", 10) + f32.substr(10),
               "unsupported .npy format version 4.0");
  expect_error(raw("\x93NUMPY\x01\x01\x76\x00", 10) + f32.substr(10),
               "unsupported .npy format version 1.1");
  expect_error(raw("\x93NUMPY\x01", 7), "truncated header");
  expect_error(raw("\x93NUMPY\x01\x00\x76", 9), "truncated header");
  expect_error(raw("\x93NUMPY\x02\x00\x74\x00", 10), "truncated header");
  expect_error(f32.substr(0, 60), "truncated header");

  // Malformed header dicts.
  expect_error(v1("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), \n", data24),
               "malformed .npy header");
  expect_error(v1("{'descr': '<f4', 'fortran_order': False}\n", data24), "missing key 'shape'");
  expect_error(v1("{'descr': '<f4', 'shape': (2, 3)}\n", data24), "missing key 'fortran_order'");
  expect_error(v1("{'fortran_order': False, 'shape': (2, 3)}\n", data24), "missing key 'descr'");
  expect_error(v1(good_dict.substr(0, good_dict.size() - 1) + "'extra': 1, }\n", data24),
               "unexpected key 'extra'");
  expect_error(v1("{'descr': '<f4', 'fortran_order': False, 'shape': (2, x), }\n", data24),
               "malformed .npy header");
  expect_error(v1("{'descr': '<f4', 'fortran_order': False, 'shape': (24), }\n", data24),
               "must be a tuple");
  expect_error(v1("{'descr': '<f4', 'fortran_order': False, 'shape': [2, 3], }\n", data24),
               "malformed .npy header");
  expect_error(v1("{'descr': '<f4', 'fortran_order': 0, 'shape': (2, 3), }\n", data24),
               "expected True or False");
  expect_error(v1("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)}\n",
                  data24),
               "duplicate key 'descr'");
  expect_error(v1(good_dict + " junk\n", data24), "unexpected text after the dict");
  expect_error(v1("not a dict at all\n", data24), "malformed .npy header");
  expect_error(v1("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,), }\n",
                  data24),
               "dimension too large");

  // Layouts and dtypes we do not read.
  expect_error(v1("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }\n", data24),
               "Fortran-ordered arrays are not supported; save with np.ascontiguousarray");
  expect_error(v1("{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }\n", data24),
               "big-endian");
  expect_error(v1("{'descr': '<f2', 'fortran_order': False, 'shape': (2, 3), }\n", data24),
               "unsupported dtype '<f2'; supported: <f4, <f8, |i1, <i2, <i4, <i8, |u1");
  expect_error(v1("{'descr': '|O', 'fortran_order': False, 'shape': (2, 3), }\n", data24),
               "unsupported dtype '|O'");
  expect_error(v1("{'descr': '<u4', 'fortran_order': False, 'shape': (2, 3), }\n", data24),
               "unsupported dtype '<u4'");
  expect_error(v1("{'descr': [('x', '<f4'), ('y', '<f4')], 'fortran_order': False, "
                  "'shape': (3,), }\n",
                  data24),
               "structured dtypes are not supported");

  // Shapes and data sizes.
  expect_error(v1("{'descr': '<f4', 'fortran_order': False, 'shape': (-2, 3), }\n", data24),
               "negative dimension in shape (-2, 3)");
  expect_error(v1("{'descr': '<f4', 'fortran_order': False, "
                  "'shape': (4294967296, 4294967296), }\n",
                  data24),
               "too large");
  expect_error(f32.substr(0, f32.size() - 4), "truncated: expected 24 bytes of data, found 20");
  expect_error(f32.substr(0, 128), "truncated: expected 24 bytes of data, found 0");
  expect_error(f32 + "abcd", "4 unexpected bytes after the array data");
}
