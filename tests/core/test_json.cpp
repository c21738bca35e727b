// JSON: exact parse results, shortest round-tripping doubles, strict rejections with
// line/column, typed accessor errors.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <limits>
#include <random>
#include <string>

#include "nibble/error.hpp"
#include "nibble/json.hpp"

using namespace nibble;

namespace {

// The message of the nibble::Error that parsing `text` throws ("" and a test failure if none).
std::string parse_error(std::string_view text) {
  try {
    Json::parse(text, "cfg.json");
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no error for input: " << text;
  return "";
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no error thrown";
  return "";
}

std::string bytes_of(const std::string& s) {
  std::string r;
  char buf[4];
  for (unsigned char c : s) {
    std::snprintf(buf, sizeof(buf), "%02X ", c);
    r += buf;
  }
  return r;
}

}  // namespace

TEST(JsonParse, ScalarsAndContainers) {
  const Json j = Json::parse(
      R"( {"n": null, "t": true, "f": false, "i": -42, "d": 2.5, "s": "hi",
           "a": [1, [], {}], "o": {"x": 0}} )");
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j.size(), 8u);
  EXPECT_TRUE(j.at("n").is_null());
  EXPECT_EQ(j.at("t").as_bool(), true);
  EXPECT_EQ(j.at("f").as_bool(), false);
  EXPECT_TRUE(j.at("i").is_int());
  EXPECT_EQ(j.at("i").as_int64(), -42);
  EXPECT_FALSE(j.at("d").is_int());
  EXPECT_EQ(j.at("d").as_double(), 2.5);
  EXPECT_EQ(j.at("s").as_string(), "hi");
  ASSERT_EQ(j.at("a").size(), 3u);
  EXPECT_EQ(j.at("a").as_array()[0].as_int64(), 1);
  EXPECT_TRUE(j.at("a").as_array()[1].is_array());
  EXPECT_TRUE(j.at("a").as_array()[2].is_object());
  EXPECT_EQ(j.at("o").at("x").as_int64(), 0);
  // Insertion order is kept.
  const char* keys[] = {"n", "t", "f", "i", "d", "s", "a", "o"};
  for (size_t k = 0; k < 8; ++k) EXPECT_EQ(j.as_object()[k].first, keys[k]);
  EXPECT_EQ(j.find("zz"), nullptr);
  EXPECT_TRUE(j.contains("o"));
}

TEST(JsonParse, StringEscapes) {
  EXPECT_EQ(Json::parse(R"("\"\\\/\b\f\n\r\t")").as_string(), "\"\\/\b\f\n\r\t");
  // \u00e9 -> C3 A9
  const std::string e = Json::parse(R"("\u00e9")").as_string();
  EXPECT_EQ(bytes_of(e), "C3 A9 ");
  // \u20AC (euro, 3 bytes), upper-case hex
  EXPECT_EQ(bytes_of(Json::parse(R"("\u20AC")").as_string()), "E2 82 AC ");
  // surrogate pair U+1F600 -> F0 9F 98 80
  EXPECT_EQ(bytes_of(Json::parse(R"("\ud83d\ude00")").as_string()), "F0 9F 98 80 ");
  // U+10FFFF, the last code point
  EXPECT_EQ(bytes_of(Json::parse(R"("\uDBFF\uDFFF")").as_string()), "F4 8F BF BF ");
  // \u0000 is one NUL byte inside the string
  const std::string nul = Json::parse(R"("a\u0000b")").as_string();
  ASSERT_EQ(nul.size(), 3u);
  EXPECT_EQ(nul[1], '\0');
  // raw UTF-8 passes through
  EXPECT_EQ(Json::parse("\"caf\xC3\xA9 \xF0\x9F\x98\x80\"").as_string(), "caf\xC3\xA9 \xF0\x9F\x98\x80");
}

TEST(JsonParse, Int64ExtremesAndOverflowToDouble) {
  const Json mx = Json::parse("9223372036854775807");
  ASSERT_TRUE(mx.is_int());
  EXPECT_EQ(mx.as_int64(), std::numeric_limits<int64_t>::max());
  const Json mn = Json::parse("-9223372036854775808");
  ASSERT_TRUE(mn.is_int());
  EXPECT_EQ(mn.as_int64(), std::numeric_limits<int64_t>::min());
  const Json over = Json::parse("9223372036854775808");
  ASSERT_FALSE(over.is_int());
  EXPECT_EQ(over.as_double(), 9223372036854775808.0);
  const Json under = Json::parse("-9223372036854775809");
  ASSERT_FALSE(under.is_int());
  EXPECT_EQ(under.as_double(), -9223372036854775808.0);
  EXPECT_TRUE(Json::parse("-0").is_int());
  EXPECT_FALSE(Json::parse("1.0").is_int());
  EXPECT_FALSE(Json::parse("1e2").is_int());
  EXPECT_EQ(Json::parse("1E2").as_double(), 100.0);
  EXPECT_EQ(Json::parse("-1.5e-3").as_double(), -0.0015);
  // Underflow rounds to zero (keeping the sign); overflow is an error (see Rejections).
  EXPECT_EQ(Json::parse("1e-400").as_double(), 0.0);
  EXPECT_TRUE(std::signbit(Json::parse("-1e-400").as_double()));
  EXPECT_EQ(Json::parse("5e-324").as_double(), std::numeric_limits<double>::denorm_min());
}

TEST(JsonDump, DoublesRoundTripExactly) {
  const double values[] = {0.1,
                           1e300,
                           -1e-300,
                           0.30000000000000004,
                           1.0 / 3.0,
                           std::numeric_limits<double>::max(),
                           std::numeric_limits<double>::min(),
                           std::numeric_limits<double>::denorm_min(),
                           1.0,
                           -2.0,
                           1e20,
                           123456789012345.0,
                           9007199254740993.0,
                           static_cast<double>(0.1f)};
  for (double d : values) {
    const std::string s = Json(d).dump();
    const Json back = Json::parse(s);
    ASSERT_FALSE(back.is_int()) << s;
    EXPECT_EQ(std::bit_cast<uint64_t>(back.as_double()), std::bit_cast<uint64_t>(d)) << s;
  }
  EXPECT_EQ(Json(0.1).dump(), "0.1");
  EXPECT_EQ(Json(1e300).dump(), "1e+300");
  EXPECT_EQ(Json(1.0).dump(), "1.0");
  EXPECT_EQ(Json(-2.0).dump(), "-2.0");
  EXPECT_EQ(Json(0.1f).dump(), "0.10000000149011612");
  const std::string negzero = Json(-0.0).dump();
  EXPECT_EQ(negzero, "-0.0");
  EXPECT_TRUE(std::signbit(Json::parse(negzero).as_double()));

  // Random finite bit patterns.
  std::mt19937_64 rng(12345);
  for (int i = 0; i < 20000; ++i) {
    const double d = std::bit_cast<double>(rng());
    if (!std::isfinite(d)) continue;
    const Json back = Json::parse(Json(d).dump());
    ASSERT_EQ(std::bit_cast<uint64_t>(back.as_double()), std::bit_cast<uint64_t>(d))
        << Json(d).dump();
  }
}

TEST(JsonDump, IntsNonFiniteAndStrings) {
  EXPECT_EQ(Json(42).dump(), "42");
  EXPECT_EQ(Json(std::numeric_limits<int64_t>::min()).dump(), "-9223372036854775808");
  EXPECT_EQ(Json(std::numeric_limits<int64_t>::max()).dump(), "9223372036854775807");
  EXPECT_EQ(Json(std::nan("")).dump(), "null");
  EXPECT_EQ(Json(std::numeric_limits<double>::infinity()).dump(), "null");
  EXPECT_EQ(Json(-std::numeric_limits<double>::infinity()).dump(), "null");
  EXPECT_EQ(Json(nullptr).dump(), "null");
  EXPECT_EQ(Json(true).dump(), "true");
  EXPECT_EQ(Json(std::string("a\"b\\c\n\t\x01\x1f\x7f")).dump(),
            R"("a\"b\\c\n\t\u0001\u001f)" "\x7f\"");
  EXPECT_EQ(Json(std::string("\b\f\r/")).dump(), R"("\b\f\r/")");
  EXPECT_EQ(Json("caf\xC3\xA9").dump(), "\"caf\xC3\xA9\"");
  const std::string with_nul("x\0y", 3);
  EXPECT_EQ(Json(with_nul).dump(), R"("x\u0000y")");
  EXPECT_EQ(Json::parse(Json(with_nul).dump()).as_string(), with_nul);
}

TEST(JsonDump, CompactAndPretty) {
  Json j;
  j["a"] = Json::Array{Json(1), Json(2)};
  j["b"] = Json::object();
  j["c"] = Json::array();
  j["d"]["e"] = "x";
  EXPECT_EQ(j.dump(), R"({"a":[1,2],"b":{},"c":[],"d":{"e":"x"}})");
  EXPECT_EQ(j.dump(2),
            "{\n"
            "  \"a\": [\n"
            "    1,\n"
            "    2\n"
            "  ],\n"
            "  \"b\": {},\n"
            "  \"c\": [],\n"
            "  \"d\": {\n"
            "    \"e\": \"x\"\n"
            "  }\n"
            "}");
  EXPECT_EQ(j.dump(0), "{\n\"a\": [\n1,\n2\n],\n\"b\": {},\n\"c\": [],\n\"d\": {\n\"e\": \"x\"\n}\n}");
}

TEST(JsonDump, RoundTrip) {
  const std::string text = R"({"model":{"dim":4096,"layers":32,"rope_theta":500000.0,
      "norm_eps":1e-05,"name":"llama \u00e9\ud83d\ude00","tied":false,"extra":null},
      "lr":[0.1,0.01,3e-4],"nested":[[[[]]],{"k":{"k":{"k":[true]}}}],"neg":-7})";
  const Json j = Json::parse(text);
  EXPECT_EQ(Json::parse(j.dump()), j);
  EXPECT_EQ(Json::parse(j.dump(2)), j);
  EXPECT_EQ(Json::parse(j.dump(4)).dump(), j.dump());
  EXPECT_EQ(j.at("model").at("rope_theta").as_double(), 500000.0);
  EXPECT_EQ(j.at("model").at("norm_eps").as_double(), 1e-5);
  EXPECT_EQ(j.at("lr").as_array()[2].as_double(), 3e-4);
  // A changed value breaks equality (the comparison can fail).
  Json k = j;
  k["neg"] = -8;
  EXPECT_NE(Json::parse(k.dump()), j);
}

TEST(JsonParse, Rejections) {
  struct Case {
    std::string text;
    const char* where;   // "line L, column C"
    const char* phrase;  // key phrase of the message
  };
  const Case cases[] = {
      {"[1,2,]", "line 1, column 6", "trailing comma in array"},
      {"{\"a\":1,}", "line 1, column 8", "trailing comma in object"},
      {"// comment\n1", "line 1, column 1", "comments are not allowed"},
      {"[1 /* c */]", "line 1, column 4", "comments are not allowed"},
      {"01", "line 1, column 1", "leading zeros"},
      {"[-007]", "line 1, column 2", "leading zeros"},
      {"\"a\tb\"", "line 1, column 3", "control character"},
      {"\"a\nb\"", "line 1, column 3", "control character"},
      {"{\"a\":1,\n \"a\":2}", "line 2, column 2", "duplicate key \"a\""},
      {"1 2", "line 1, column 3", "after the JSON value"},
      {"{} x", "line 1, column 4", "after the JSON value"},
      {"{\n  \"a\": 1\n  \"b\": 2\n}", "line 3, column 3", "expected ',' or '}'"},
      {"[1 2]", "line 1, column 4", "expected ',' or ']'"},
      {"{\"a\" 1}", "line 1, column 6", "expected ':'"},
      {"{1:2}", "line 1, column 2", "expected a string key"},
      {"{'a':1}", "line 1, column 2", "expected a string key"},
      {"", "line 1, column 1", "end of input"},
      {"   \n  ", "line 2, column 3", "end of input"},
      {"[1,", "line 1, column 4", "end of input"},
      {"tru", "line 1, column 1", "expected a value"},
      {"NaN", "line 1, column 1", "expected a value"},
      {"+1", "line 1, column 1", "expected a value"},
      {".5", "line 1, column 1", "expected a value"},
      {"1.", "line 1, column 3", "expected a digit after '.'"},
      {"1e", "line 1, column 3", "exponent"},
      {"-", "line 1, column 2", "expected a digit after '-'"},
      {"1e400", "line 1, column 1", "out of range"},
      {"\"abc", "line 1, column 1", "unterminated string"},
      {"\"\\x\"", "line 1, column 2", "invalid escape"},
      {"\"\\u12g4\"", "line 1, column 6", "invalid hex digit"},
      {"\"\\u12\"", "line 1, column 6", "invalid hex digit"},
      {"\"\\ud800\"", "line 1, column 2", "unpaired high surrogate"},
      {"\"\\udc00\"", "line 1, column 2", "unpaired low surrogate"},
      {"\"\\ud800\\u0041\"", "line 1, column 8", "expected a low surrogate"},
      {"\"\xff\"", "line 1, column 2", "invalid UTF-8"},
      {"\"\xc0\xaf\"", "line 1, column 2", "invalid UTF-8"},          // overlong '/'
      {"\"\xed\xa0\x80\"", "line 1, column 2", "invalid UTF-8"},      // encoded surrogate
      {"[\"ok\", \"\xe2\x82\"]", "line 1, column 9", "UTF-8"},         // truncated sequence
  };
  for (const Case& c : cases) {
    const std::string msg = parse_error(c.text);
    EXPECT_EQ(msg.rfind("cfg.json: JSON error at ", 0), 0u) << msg;
    EXPECT_NE(msg.find(c.where), std::string::npos) << "input: " << c.text << "\nmessage: " << msg;
    EXPECT_NE(msg.find(c.phrase), std::string::npos) << "input: " << c.text << "\nmessage: " << msg;
  }
}

TEST(JsonParse, NestingLimit) {
  const std::string ok = std::string(512, '[') + std::string(512, ']');
  Json j = Json::parse(ok);
  int depth = 0;
  const Json* p = &j;
  while (p->is_array()) {
    ++depth;
    if (p->size() == 0) break;
    p = &p->as_array()[0];
  }
  EXPECT_EQ(depth, 512);
  const std::string deep = std::string(513, '[') + std::string(513, ']');
  const std::string msg = parse_error(deep);
  EXPECT_NE(msg.find("nesting deeper than 512"), std::string::npos) << msg;
  EXPECT_NE(msg.find("line 1, column 513"), std::string::npos) << msg;
  std::string deep_obj;
  for (int i = 0; i < 600; ++i) deep_obj += "{\"a\":";
  EXPECT_NE(parse_error(deep_obj).find("nesting deeper than 512"), std::string::npos);
}

TEST(JsonParse, ManyKeysDuplicateDetected) {
  std::string text = "{";
  for (int i = 0; i < 100; ++i) text += "\"k" + std::to_string(i) + "\":" + std::to_string(i) + ",";
  const Json ok = Json::parse(text.substr(0, text.size() - 1) + "}");
  EXPECT_EQ(ok.size(), 100u);
  EXPECT_EQ(ok.at("k99").as_int64(), 99);
  const std::string msg = parse_error(text + "\"k50\":0}");
  EXPECT_NE(msg.find("duplicate key \"k50\""), std::string::npos) << msg;
}

TEST(JsonAccess, TypedAccessorsAndMutation) {
  EXPECT_EQ(error_of([] { (void)Json("x").as_double(); }), "expected a number, got string");
  EXPECT_EQ(error_of([] { (void)Json(1).as_string(); }), "expected a string, got number");
  EXPECT_EQ(error_of([] { (void)Json().as_bool(); }), "expected a bool, got null");
  EXPECT_EQ(error_of([] { (void)Json(true).as_array(); }), "expected an array, got bool");
  EXPECT_EQ(error_of([] { (void)Json::array().as_object(); }), "expected an object, got array");
  EXPECT_EQ(error_of([] { (void)Json(1.5).as_int64(); }), "expected an integer, got 1.5");
  EXPECT_EQ(error_of([] { (void)Json(1e300).as_int64(); }), "expected an integer, got 1e+300");
  EXPECT_EQ(Json(3.0).as_int64(), 3);
  EXPECT_EQ(Json(-9223372036854775808.0).as_int64(), std::numeric_limits<int64_t>::min());
  EXPECT_EQ(Json(7).as_double(), 7.0);
  EXPECT_NE(error_of([] { (void)Json::object().at("missing"); }).find("missing"),
            std::string::npos);

  Json j;  // null
  j["a"] = 1;
  EXPECT_TRUE(j.is_object());
  j["a"] = 2;  // existing key: replaced, not duplicated
  j["b"]["c"] = "d";
  EXPECT_EQ(j.size(), 2u);
  EXPECT_EQ(j.at("a").as_int64(), 2);
  EXPECT_EQ(j.at("b").at("c").as_string(), "d");
  EXPECT_EQ(j.dump(), R"({"a":2,"b":{"c":"d"}})");
  Json arr;
  arr.push_back(1);
  arr.push_back("two");
  EXPECT_EQ(arr.dump(), R"([1,"two"])");
  EXPECT_EQ(error_of([&] { arr["x"] = 1; }), "expected an object, got array");
  EXPECT_EQ(error_of([&] { j.push_back(1); }), "expected an array, got object");
  EXPECT_EQ(Json(5).size(), 0u);
  EXPECT_EQ(Json(5).type_name(), "number");
  EXPECT_EQ(Json(5.5).type_name(), "number");
  EXPECT_EQ(Json().type_name(), "null");
}
