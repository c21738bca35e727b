// `nibble bench` on the CPU (the training benchmark; the kernel benchmarks need a GPU) and the
// device errors a machine without a GPU gives.
#include <gtest/gtest.h>

#include "nibble/cuda.hpp"
#include "nibble/fileio.hpp"
#include "nibble/json.hpp"
#include "support/cli_runner.hpp"

using namespace nibble;
using nibble::testing::run_nibble;
using nibble::testing::ScratchDir;

TEST(CliBench, TrainingBenchmarkOnTheCpuWritesJson) {
  ScratchDir d;
  const auto r = run_nibble("bench --device cpu --only train --models tiny --recipes bf16,nvfp4 --batch 2 --seq 32 "
                            "--steps 1 --json " + d.file("b.json"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("tokens/s"), std::string::npos) << r.out;
  const Json j = Json::parse(read_file(d.file("b.json")), "b.json");
  ASSERT_EQ(j.at("training").as_array().size(), 2u);
  const Json& row = j.at("training").as_array()[1];
  EXPECT_EQ(row.at("recipe").as_string(), "nvfp4");
  EXPECT_EQ(row.at("params").as_int64(), 885888);  // tiny: 256·128 + 4·213248 + 128 (tied head)
  EXPECT_GT(row.at("tokens_per_s").as_double(), 0.0);
  EXPECT_GT(row.at("step_vs_bf16").as_double(), 0.0);
}

TEST(CliBench, BadChoicesAreOneLineErrors) {
  auto expect_error = [](const std::string& args, const std::string& needle) {
    const auto r = run_nibble(args);
    EXPECT_NE(r.code, 0) << args << "\n" << r.out;
    EXPECT_LT(r.code, 128) << "crashed: " << r.out;
    EXPECT_NE(r.out.find(needle), std::string::npos) << args << "\n" << r.out;
  };
  expect_error("bench --device cpu --only kernels", "--device cuda");
  expect_error("bench --device cpu --only spectral", "--device cuda");
  expect_error("bench --device cpu --only train --recipes bf16,nope", "nope");
  expect_error("bench --device cpu --only train --models tiny --seq 100000", "max_seq");
}

// Without a GPU, asking for one is a clear error (with one, the GPU tests cover --device cuda).
TEST(CliDevice, CudaWithoutAGpuIsAClearError) {
  if (cuda::device_count() > 0) GTEST_SKIP() << "a GPU is present: tests/nn/cuda cover --device cuda";
  ScratchDir d;
  write_file_atomic(d.file("text.txt"), std::string(5000, 'a'));
  const auto r = run_nibble("train --device cuda --text " + d.file("text.txt") + " --steps 1 --out " + d.file("run"));
  EXPECT_NE(r.code, 0) << r.out;
  EXPECT_LT(r.code, 128) << r.out;
  EXPECT_NE(r.out.find("--device cpu"), std::string::npos) << r.out;
}
