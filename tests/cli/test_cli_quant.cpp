// `nibble quant` / `nibble dequant` end to end: outputs match the library bit for bit,
// the packed file round-trips, and every kind of bad input gets a one-line error.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <fstream>

#include "nibble/fileio.hpp"
#include "nibble/json.hpp"
#include "nibble/npy.hpp"
#include "nibble/philox.hpp"
#include "nibble/quant/packed.hpp"
#include "nibble/quant/rht.hpp"
#include "support/cli_runner.hpp"

using namespace nibble;
using nibble::testing::run_nibble;
using nibble::testing::ScratchDir;

namespace {

Tensor activations(int64_t rows, int64_t cols, uint64_t seed) {
  std::vector<float> x(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const uint64_t i = static_cast<uint64_t>(r * cols + c);
      x[i] = 3.0f * std::cos(0.3f * static_cast<float>(c)) + (2 * philox_uniform(seed, 0, i) - 1);
    }
  return Tensor::from_vector({rows, cols}, x);
}

// Counts lines: error messages must be one line.
int lines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

void expect_error(const std::string& args, const std::string& needle) {
  const auto r = run_nibble(args);
  EXPECT_NE(r.code, 0) << args << "\n" << r.out;
  EXPECT_NE(r.code, 128 + 6) << "crashed (abort): " << r.out;
  EXPECT_NE(r.code, 128 + 11) << "crashed (segv): " << r.out;
  EXPECT_NE(r.out.find(needle), std::string::npos) << "expected '" << needle << "' in: " << r.out;
  EXPECT_EQ(lines(r.out), 1) << r.out;
}

}  // namespace

TEST(CliQuant, OutputMatchesLibraryForEveryFormat) {
  ScratchDir d;
  const Tensor x = activations(32, 128, 1);
  write_npy(d.file("x.npy"), x);
  struct Case { std::string flags; QuantSpec q; TransformSpec t; };
  std::vector<Case> cases;
  {
    Case c{"--format nvfp4", QuantSpec::for_format(Format::NVFP4), {}};
    cases.push_back(c);
    c = {"--format int4 --rht 16 --seed 5", QuantSpec::for_format(Format::INT4), {}};
    c.q.seed = 5;
    c.t.rht = 16;
    c.t.rht_seed = 5;
    cases.push_back(c);
    c = {"--format mxfp4 --scale-rule rceil --rounding sr --seed 9 --stream 2 --center",
         QuantSpec::for_format(Format::MXFP4), {}};
    c.q.scale_rule = ScaleRule::RCEIL;
    c.q.rounding = Rounding::SR;
    c.q.seed = 9;
    c.q.stream = 2;
    c.t.center = true;
    cases.push_back(c);
    c = {"--format nvfp4 --tile2d --block 16 --center --rht 128 --seed 3",
         QuantSpec::for_format(Format::NVFP4), {}};
    c.q.tile2d = true;
    c.q.seed = 3;
    c.t.center = true;
    c.t.rht = 128;
    c.t.rht_seed = 3;
    cases.push_back(c);
  }
  for (const auto& c : cases) {
    const auto r = run_nibble("quant --input " + d.file("x.npy") + " --output " + d.file("y.npy") + " " +
                              c.flags + " --packed " + d.file("p.safetensors") + " --stats-json " +
                              d.file("s.json"));
    ASSERT_EQ(r.code, 0) << c.flags << "\n" << r.out;
    EXPECT_NE(r.out.find("snr_db"), std::string::npos);
    const Tensor y = read_npy(d.file("y.npy"));
    ASSERT_EQ(y.shape(), x.shape());
    const PipelineResult want = quantize_pipeline(x.data<float>(), 32, 128, c.q, c.t);
    for (int64_t i = 0; i < y.numel(); ++i)
      ASSERT_EQ(y.data<float>()[i], want.reconstruction[static_cast<size_t>(i)]) << c.flags << " @" << i;
    // the packed file reproduces Y through `nibble dequant`
    const auto dq = run_nibble("dequant --packed " + d.file("p.safetensors") + " --output " + d.file("z.npy"));
    ASSERT_EQ(dq.code, 0) << dq.out;
    const Tensor z = read_npy(d.file("z.npy"));
    for (int64_t i = 0; i < y.numel(); ++i) ASSERT_EQ(z.data<float>()[i], y.data<float>()[i]) << c.flags;
    // the stats JSON is complete and consistent with the table
    const Json s = Json::parse(read_file(d.file("s.json")), "s.json");
    for (const char* k : {"snr_db", "rel_err", "shrinkage", "code_histogram", "operand", "anisotropy"})
      EXPECT_TRUE(s.contains(k)) << k;
    int64_t total = 0;
    for (const auto& h : s.at("code_histogram").as_array()) total += h.as_int64();
    EXPECT_EQ(total, 32 * 128);
    EXPECT_GT(s.at("snr_db").as_double(), 5.0);
    EXPECT_TRUE(s.at("anisotropy").contains("mean_energy_share"));
  }
}

TEST(CliQuant, PackedFileIsSelfDescribing) {
  ScratchDir d;
  write_npy(d.file("x.npy"), activations(16, 64, 2));
  ASSERT_EQ(run_nibble("quant --input " + d.file("x.npy") + " --format nvfp4 --center --rht 32 --output " +
                       d.file("y.npy") + " --packed " + d.file("p.safetensors") + " --quiet").code, 0);
  const SafeTensors st = read_safetensors(d.file("p.safetensors"));
  EXPECT_EQ(st.get("codes").shape(), (Shape{16, 32}));
  EXPECT_EQ(st.get("scales").dtype(), DType::E4M3);
  EXPECT_EQ(st.get("scales").shape(), (Shape{16, 4}));
  EXPECT_EQ(st.get("mean").shape(), (Shape{64}));
  EXPECT_EQ(st.get("rht_signs").shape(), (Shape{32}));
  EXPECT_EQ(st.get("tensor_scale").dtype(), DType::F32);
  EXPECT_EQ(st.metadata.at("format"), "nvfp4");
  EXPECT_EQ(st.metadata.at("transforms"), "center,rht");
  // signs default to Philox(seed 0, stream 0)
  const std::vector<float> want = rht_signs(32, 0, 0);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(st.get("rht_signs").data<float>()[j], want[static_cast<size_t>(j)]);
}

TEST(CliQuant, GivenRhtSignsAreUsed) {
  ScratchDir d;
  const Tensor x = activations(16, 32, 3);
  write_npy(d.file("x.npy"), x);
  std::vector<int32_t> s(16);
  std::vector<float> sf(16);
  for (int j = 0; j < 16; ++j) sf[static_cast<size_t>(j)] = static_cast<float>(s[static_cast<size_t>(j)] = (j % 3 == 0) ? -1 : 1);
  write_npy(d.file("s.npy"), Tensor::from_vector({16}, s));
  ASSERT_EQ(run_nibble("quant --input " + d.file("x.npy") + " --format int4 --rht 16 --rht-signs " +
                       d.file("s.npy") + " --output " + d.file("y.npy") + " --quiet").code, 0);
  QuantSpec q = QuantSpec::for_format(Format::INT4);
  TransformSpec t;
  t.rht = 16;
  t.rht_signs = sf;
  const PipelineResult want = quantize_pipeline(x.data<float>(), 16, 32, q, t);
  const Tensor y = read_npy(d.file("y.npy"));
  for (int64_t i = 0; i < y.numel(); ++i) ASSERT_EQ(y.data<float>()[i], want.reconstruction[static_cast<size_t>(i)]);
}

TEST(CliQuant, HelpDocumentsEveryOption) {
  const auto r = run_nibble("quant --help");
  EXPECT_EQ(r.code, 0);
  for (const char* o : {"--input", "--format", "--block", "--tile2d", "--scale-rule", "--rounding", "--seed",
                        "--rht", "--rht-signs", "--center", "--output", "--packed", "--stats-json"})
    EXPECT_NE(r.out.find(o), std::string::npos) << o;
  EXPECT_NE(run_nibble("--help").out.find("quant"), std::string::npos);
}

TEST(CliQuantErrors, MissingAndTruncatedFiles) {
  ScratchDir d;
  expect_error("quant --input " + d.file("nope.npy") + " --format nvfp4 --output " + d.file("y.npy"), "nope.npy");
  write_npy(d.file("x.npy"), activations(4, 32, 1));
  const std::string bytes = read_file(d.file("x.npy"));
  write_file_atomic(d.file("t.npy"), std::string_view(bytes).substr(0, bytes.size() - 10));
  expect_error("quant --input " + d.file("t.npy") + " --format nvfp4 --output " + d.file("y.npy"), "t.npy");
  write_file_atomic(d.file("h.npy"), std::string_view(bytes).substr(0, 20));
  expect_error("quant --input " + d.file("h.npy") + " --format nvfp4 --output " + d.file("y.npy"), "h.npy");
  EXPECT_FALSE(file_exists(d.file("y.npy")));
}

TEST(CliQuantErrors, WrongDtypeRankAndNonFinite) {
  ScratchDir d;
  write_npy(d.file("f64.npy"), Tensor::from_vector<double>({2, 16}, std::vector<double>(32, 1.0)));
  expect_error("quant --input " + d.file("f64.npy") + " --format nvfp4 --output " + d.file("y.npy"), "float32");
  write_npy(d.file("r3.npy"), Tensor::from_vector<float>({2, 2, 16}, std::vector<float>(64, 1.0f)));
  expect_error("quant --input " + d.file("r3.npy") + " --format nvfp4 --output " + d.file("y.npy"), "2-D");
  std::vector<float> v(64, 1.0f);
  v[37] = NAN;
  write_npy(d.file("nan.npy"), Tensor::from_vector<float>({2, 32}, v));
  expect_error("quant --input " + d.file("nan.npy") + " --format nvfp4 --output " + d.file("y.npy"), "(1, 5)");
  v[37] = 1.0f;
  v[3] = -INFINITY;
  write_npy(d.file("inf.npy"), Tensor::from_vector<float>({2, 32}, v));
  expect_error("quant --input " + d.file("inf.npy") + " --format nvfp4 --output " + d.file("y.npy"), "(0, 3)");
}

TEST(CliQuantErrors, ShapeAndOptionProblems) {
  ScratchDir d;
  write_npy(d.file("x.npy"), activations(4, 48, 1));
  const std::string io = " --input " + d.file("x.npy") + " --output " + d.file("y.npy");
  expect_error("quant --format mxfp4" + io, "multiple of the block size 32");
  expect_error("quant --format nvfp4 --rht 32" + io, "does not divide cols = 48");
  expect_error("quant --format nvfp4 --rht 24" + io, "--rht");
  expect_error("quant --format fp4" + io, "unknown format 'fp4'");
  expect_error("quant --format nvfp4 --rounding nearest" + io, "unknown value 'nearest'");
  expect_error("quant --format nvfp4 --block 8" + io, "--block");
  expect_error("quant --format nvfp4 --seed minus" + io, "not a non-negative integer");
  expect_error("quant --format nvfp4 --frobnicate 1" + io, "unknown option --frobnicate");
  expect_error("quant --format nvfp4 --tile2d" + io, "multiple of the tile size");
  expect_error("quant --format nvfp4 --scale-rule rceil" + io, "mxfp4 only");
  expect_error("quant --input " + d.file("x.npy") + " --format nvfp4", "--output");
  std::vector<float> bad(16, 1.0f);
  bad[2] = 0.5f;
  write_npy(d.file("s.npy"), Tensor::from_vector<float>({16}, bad));
  expect_error("quant --format nvfp4 --rht 16 --rht-signs " + d.file("s.npy") + io, "expected +1 or -1");
  write_npy(d.file("s8.npy"), Tensor::from_vector<float>({8}, std::vector<float>(8, 1.0f)));
  expect_error("quant --format nvfp4 --rht 16 --rht-signs " + d.file("s8.npy") + io, "8 entries");
}

TEST(CliQuantErrors, MalformedPackedFile) {
  ScratchDir d;
  // header length claims more bytes than the file has
  std::string bad(8, '\0');
  bad[0] = 100;
  bad += "{}";
  write_file_atomic(d.file("bad.safetensors"), bad);
  expect_error("dequant --packed " + d.file("bad.safetensors") + " --output " + d.file("y.npy"), "bad.safetensors");
  // valid safetensors, but not a nibble packed file
  std::string hdr = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
  std::string ok(8, '\0');
  ok[0] = static_cast<char>(hdr.size());
  ok += hdr + std::string(4, '\0');
  write_file_atomic(d.file("other.safetensors"), ok);
  expect_error("dequant --packed " + d.file("other.safetensors") + " --output " + d.file("y.npy"), "metadata");
}
