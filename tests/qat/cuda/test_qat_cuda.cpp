// SM90_Qat* : QAT on the GPU (the CUDA engine and the GPU QatState) against QAT on the CPU, from
// the same pretrained checkpoint. Skipped without a GPU.
#include <gtest/gtest.h>

#include "support/gpu.hpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "nibble/qat/hessian_model.hpp"
#include "nibble/qat/qat_trainer.hpp"
#include "nibble/train/trainer.hpp"
#include "support/cli_runner.hpp"
#include "support/qat_run.hpp"

using namespace nibble;
using nibble::testing::ScratchDir;

// With fp32 activations and the fp32 attention both engines compute the same float model up to
// the GEMMs' summation order (~1e-7): the quantized model's loss before QAT agrees to 1e-5 and
// after 30 steps of 2-bit SEQ to 0.05 (a gradient an ulp apart can move a weight across a level
// boundary, a whole level of difference for that weight); both runs learn.
TEST(SM90_Qat, CudaEngineMatchesTheCpuEngine) {
  REQUIRE_GPU();
  setenv("NIBBLE_ACTIVATIONS", "fp32", 1);
  setenv("NIBBLE_ATTENTION", "fp32", 1);
  ScratchDir d;
  nibble::testing::pretrain(d);
  QatResult r[2];
  for (int i = 0; i < 2; ++i) {
    QatConfig q = nibble::testing::qat_config(d, i == 0 ? "cpu" : "gpu", 2);
    q.winq = true;
    q.reset_every = 10;
    q.train.device = i == 0 ? "cpu" : "cuda";
    r[i] = run_qat(q, true);
  }
  std::printf("  QAT 2-bit + WinQ: val loss %.6f -> %.6f (cpu), %.6f -> %.6f (gpu)\n", r[0].initial_val_loss,
              r[0].final_val_loss, r[1].initial_val_loss, r[1].final_val_loss);
  EXPECT_NEAR(r[1].initial_val_loss, r[0].initial_val_loss, 1e-5 * r[0].initial_val_loss);
  EXPECT_NEAR(r[1].final_val_loss, r[0].final_val_loss, 0.05);
  EXPECT_LT(r[1].final_val_loss, r[1].initial_val_loss);
  const auto cli = nibble::testing::run_nibble("qat --device cuda --checkpoint " + d.file("base") + " --bits 4 --steps 3 --seq 32 "
                                               "--batch 2 --eval-batches 1 --text " + d.file("text.txt") + " --out " + d.file("cli"));
  EXPECT_EQ(cli.code, 0) << cli.out;
  setenv("NIBBLE_ACTIVATIONS", "bf16", 1);
  setenv("NIBBLE_ATTENTION", "tc", 1);
}

// The Hessian from the GPU engine (fp32 gradients, a larger difference step) against the float64
// CPU reference on the same checkpoint and batch, plain and at the 2-bit quantized point: the
// top eigenvalues (signed) and the Hutchinson trace (the same Rademacher probes) within 2%.
TEST(SM90_Qat, GpuHessianMatchesTheFloat64Cpu) {
  REQUIRE_GPU();
  ScratchDir d;
  nibble::testing::pretrain(d);
  for (double bits : {0.0, 2.0}) {
    Json r[2];
    for (int i = 0; i < 2; ++i) {
      HessianConfig h;
      h.checkpoint = d.file("base");
      h.text_file = d.file("text.txt");
      h.top = 2;
      h.probes = 3;
      h.bits = bits;
      h.device = i == 0 ? "cpu" : "cuda";
      r[i] = hessian_spectrum(h);
    }
    const auto& ec = r[0].at("top_eigenvalues").as_array();
    const auto& eg = r[1].at("top_eigenvalues").as_array();
    ASSERT_EQ(ec.size(), eg.size());
    for (size_t k = 0; k < ec.size(); ++k) {
      std::printf("  bits %g: eigenvalue %zu: cpu %.6g, gpu %.6g\n", bits, k + 1, ec[k].as_double(), eg[k].as_double());
      EXPECT_NEAR(eg[k].as_double(), ec[k].as_double(), 0.02 * std::fabs(ec[0].as_double())) << "eigenvalue " << k + 1;
    }
    const double tc = r[0].at("trace").as_double(), tg = r[1].at("trace").as_double();
    std::printf("  bits %g: trace: cpu %.6g, gpu %.6g\n", bits, tc, tg);
    EXPECT_NEAR(tg, tc, 0.02 * std::fabs(tc));
    EXPECT_EQ(r[1].at("device").as_string(), "cuda");
  }
}
