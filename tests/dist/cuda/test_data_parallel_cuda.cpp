// SM90_DataParallel* : data-parallel training on 2 GPUs through NCCL (nibble launch), against
// one GPU with the same global batch. Skipped without 2 GPUs.
#include <gtest/gtest.h>

#include "support/gpu.hpp"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "nibble/cuda.hpp"
#include "nibble/fileio.hpp"
#include "nibble/report/metrics.hpp"
#include "support/cli_runner.hpp"

using nibble::testing::run_nibble;
using nibble::testing::ScratchDir;

namespace {

#define REQUIRE_TWO_GPUS()                                                               \
  do {                                                                                   \
    REQUIRE_GPU();                                                                       \
    if (nibble::cuda::device_count() < 2) GTEST_SKIP() << "needs 2 GPUs";                \
  } while (0)

std::string args(const ScratchDir& d, const std::string& recipe, const std::string& out) {
  return "train --device cuda --recipe " + recipe +
         " --steps 20 --batch 8 --seq 128 --log-every 1 --eval-every 10 --eval-batches 2 --save-every 10 --out " +
         d.file(out);
}

std::vector<double> col(const std::string& run, const char* key) {
  return nibble::report::read_metrics_jsonl(run + "/metrics.jsonl").column(key);
}

}  // namespace

// bf16 (the engine's defaults: bf16 activations, tensor-core attention): the first step sees the
// same tokens and weights on both layouts; the per-GPU GEMMs have half the rows (cuBLAS may pick
// other kernels) and the activations' bf16 roundings may flip, so the loss agrees to 1e-4
// relative and the gradient norm (a missing 1/W or a missing exchange changes it by O(1)) to
// 1e-2; the curves then drift by rounding: budget 0.05 over 20 steps. nvfp4: each rank's tensor
// amax is its shard's (the layout changes the 4-bit scales and SR draws): the first loss within
// 1e-2 and the run learns.
TEST(SM90_DataParallel, TwoGpusMatchOneGpuWithTheSameGlobalBatch) {
  REQUIRE_TWO_GPUS();
  ScratchDir d;
  for (const std::string recipe : {"bf16", "nvfp4"}) {
    SCOPED_TRACE(recipe);
    const auto one = run_nibble(args(d, recipe, recipe + "-1"));
    ASSERT_EQ(one.code, 0) << one.out;
    const auto two = run_nibble("launch --nproc 2 --master-port 29731 -- nibble " + args(d, recipe, recipe + "-2"));
    ASSERT_EQ(two.code, 0) << two.out;
    EXPECT_NE(two.out.find("2 ranks (nccl"), std::string::npos) << two.out;
    const auto a = col(d.file(recipe + "-1"), "loss"), b = col(d.file(recipe + "-2"), "loss");
    const auto ga = col(d.file(recipe + "-1"), "grad_norm"), gb = col(d.file(recipe + "-2"), "grad_norm");
    ASSERT_EQ(a.size(), 20u);
    ASSERT_EQ(b.size(), 20u);
    double worst = 0;
    for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(a[i] - b[i]));
    std::printf("  %s: step-0 loss %.7f / %.7f, grad norm %.5f / %.5f, worst |d loss| %.4f, final %.4f / %.4f\n",
                recipe.c_str(), a[0], b[0], ga[0], gb[0], worst, a.back(), b.back());
    if (recipe == "bf16") {
      // the gradients reduced in per-block buckets during the backward (the default) or in one
      // all-reduce after it: with 2 ranks each sum is a + b either way, so the runs are equal
      const auto flat = run_nibble("launch --nproc 2 --master-port 29733 -- env NIBBLE_DP_OVERLAP=0 " +
                                   std::string(NIBBLE_CLI_PATH) + " " + args(d, recipe, recipe + "-2-flat"));
      ASSERT_EQ(flat.code, 0) << flat.out;
      EXPECT_EQ(col(d.file(recipe + "-2-flat"), "loss"), b);
      EXPECT_EQ(col(d.file(recipe + "-2-flat"), "grad_norm"), gb);
      // ZeRO-1 (NCCL grouped reduces of each rank's half to it, grouped broadcasts of the updated
      // halves): with 2 ranks each gradient sum is a + b as in the all-reduce; the norm is summed
      // from the halves (float64, a different order: last-bit differences), so the runs agree to
      // float noise rather than bit for bit
      const auto zero = run_nibble("launch --nproc 2 --master-port 29735 -- nibble " + args(d, recipe, recipe + "-2-zero") +
                                   " --zero1");
      ASSERT_EQ(zero.code, 0) << zero.out;
      EXPECT_NE(zero.out.find("ZeRO-1"), std::string::npos) << zero.out;
      const auto zl = col(d.file(recipe + "-2-zero"), "loss"), zg = col(d.file(recipe + "-2-zero"), "grad_norm");
      ASSERT_EQ(zl.size(), b.size());
      EXPECT_EQ(zl[0], b[0]);                      // the first forward precedes any exchange
      EXPECT_NEAR(zg[0], gb[0], 1e-9 * gb[0]);     // the same gradients, summed in another order
      double zero_worst = 0;
      for (size_t i = 0; i < zl.size(); ++i) zero_worst = std::max(zero_worst, std::fabs(zl[i] - b[i]));
      std::printf("  ZeRO-1: grad norm %.9f / %.9f, worst |d loss| against 2-rank DP %.2e\n", zg[0], gb[0], zero_worst);
      EXPECT_LT(zero_worst, 1e-3);
      EXPECT_TRUE(std::filesystem::exists(d.file(recipe + "-2-zero") + "/final/optimizer.safetensors"));
      EXPECT_NEAR(b[0], a[0], 1e-4 * a[0]);
      EXPECT_NEAR(gb[0], ga[0], 1e-2 * ga[0]);
      EXPECT_LT(worst, 0.05);
    } else {
      EXPECT_NEAR(b[0], a[0], 1e-2 * a[0]);
      EXPECT_LT(b.back(), b.front() - 1.0);
    }
  }
}

// A rank killed mid-run (no launcher, as under Slurm): rank 0 stops with a message naming the
// lost peer — at the next host collective, or from its all-reduce wait, which polls the peers'
// connections — long before the 60 s timeout.
TEST(SM90_DataParallel, AKilledRankStopsItsPeer) {
  REQUIRE_TWO_GPUS();
  ScratchDir d;
  const std::string train = std::string(NIBBLE_CLI_PATH) +
                            " train --device cuda --recipe bf16 --steps 5000 --batch 8 --seq 128 --log-every 1"
                            " --eval-every 0 --save-every 50 --out " + d.file("run");
  const std::string env = "WORLD_SIZE=2 MASTER_PORT=29741 NIBBLE_DIST_TIMEOUT=60 ";
  const std::string script = "cd " + d.path().string() + " && (RANK=0 LOCAL_RANK=0 " + env + train +
                             " > r0.log 2>&1 & echo $! > p0) && (RANK=1 LOCAL_RANK=1 " + env + train +
                             " > r1.log 2>&1 & echo $! > p1) && sleep 8 && kill -9 $(cat p1) && "
                             "while kill -0 $(cat p0) 2>/dev/null; do sleep 0.1; done";
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(std::system(("sh -c '" + script + "'").c_str()), 0);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::string log = nibble::read_file(d.file("r0.log"));
  std::printf("  rank 0 stopped %.1f s after the start (rank 1 killed at 8 s): %s\n", secs,
              log.substr(log.rfind("error") == std::string::npos ? 0 : log.rfind("error")).c_str());
  EXPECT_NE(log.find("peer rank"), std::string::npos) << log;
  EXPECT_LT(secs, 30.0);
}
