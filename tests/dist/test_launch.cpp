// nibble launch and data-parallel training on the CPU engine (the TCP backend): a 2-rank run
// against a 1-process run with the same global batch, checkpoints written once and resumable on
// another number of ranks, and a failing rank that stops the run instead of hanging it.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <future>
#include <string>
#include <vector>

#include <cstdlib>

#include "nibble/data/corpus.hpp"
#include "nibble/fileio.hpp"
#include "nibble/report/metrics.hpp"
#include "support/cli_runner.hpp"

using nibble::testing::run_nibble;
using nibble::testing::ScratchDir;
namespace fs = std::filesystem;

namespace {

int port_for_test(int k) { return 20000 + static_cast<int>(::getpid() % 20000) + k; }

std::string train_args(const ScratchDir& d, const std::string& out, const std::string& extra = "", int batch = 4) {
  return "train --recipe bf16 --steps 8 --batch " + std::to_string(batch) +
         " --seq 64 --log-every 1 --eval-every 4 --eval-batches 2 --save-every 4 --out " + d.file(out) + " " + extra;
}

std::vector<double> column(const std::string& run, const char* key) {
  return nibble::report::read_metrics_jsonl(run + "/metrics.jsonl").column(key);
}

// Two runs logged the same losses, gradient norms and validation losses, bit for bit.
void expect_same_logs(const std::string& a_run, const std::string& b_run) {
  for (const char* key : {"loss", "grad_norm", "val_loss"}) {
    const auto a = column(a_run, key), b = column(b_run, key);
    ASSERT_EQ(a.size(), b.size()) << key;
    for (size_t i = 0; i < a.size(); ++i)
      if (std::isfinite(a[i]) || std::isfinite(b[i])) {
        EXPECT_EQ(a[i], b[i]) << key << " row " << i;
      }
  }
}

}  // namespace

// bf16 on two ranks: each rank's mean over its 2 sequences, averaged, is the 4-sequence mean, and
// the gradients' sum / 2 the 4-sequence mean gradient — up to float rounding. The first step
// shows it sharply: the same tokens and weights give the loss to 1e-12 and the gradient norm
// (which a missing 1/W, or ranks that do not exchange gradients, would change: AdamW itself is
// blind to a constant factor) to 1e-5. Later steps drift as flipped bf16 roundings accumulate:
// measured 1.5e-3 after 8 steps, budget 1e-2.
TEST(Launch, TwoRanksMatchOneProcessWithTheSameGlobalBatch) {
  ScratchDir d;
  const auto one = run_nibble(train_args(d, "one"));
  ASSERT_EQ(one.code, 0) << one.out;
  const auto two = run_nibble("launch --nproc 2 --master-port " + std::to_string(port_for_test(0)) + " -- nibble " +
                              train_args(d, "two"));
  ASSERT_EQ(two.code, 0) << two.out;
  const auto a = column(d.file("one"), "loss"), b = column(d.file("two"), "loss");
  ASSERT_EQ(a.size(), 8u);
  ASSERT_EQ(b.size(), 8u);
  EXPECT_NEAR(a[0], b[0], 1e-12);
  const auto ga = column(d.file("one"), "grad_norm"), gb = column(d.file("two"), "grad_norm");
  EXPECT_NEAR(gb[0], ga[0], 1e-5 * ga[0]);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-2) << "step " << i;
  const auto va = column(d.file("one"), "val_loss"), vb = column(d.file("two"), "val_loss");
  EXPECT_NEAR(va.back(), vb.back(), 1e-2);
  // one summary, one set of outputs
  size_t summaries = 0;
  for (size_t p = two.out.find("train loss"); p != std::string::npos; p = two.out.find("train loss", p + 1)) ++summaries;
  EXPECT_EQ(summaries, 1u) << two.out;
  for (const char* f : {"final/model.safetensors", "step_000004/model.safetensors", "metrics.jsonl", "loss.svg"})
    EXPECT_TRUE(fs::exists(d.file("two") + "/" + f)) << f;
  // a 2-rank checkpoint resumes in one process (the state is the same on every rank)
  const auto resumed = run_nibble(train_args(d, "resumed", "--resume " + d.file("two") + "/step_000004"));
  ASSERT_EQ(resumed.code, 0) << resumed.out;
  const auto c = column(d.file("resumed"), "loss");
  ASSERT_FALSE(c.empty());
  EXPECT_NEAR(c.back(), b.back(), 1e-2);
}

// Two "nodes" on this machine, one rank each, joined only through --master-addr/--master-port as
// on a cluster (no MPI): the same run as one node with two ranks, bit for bit — the TCP backend
// sums in rank order whatever the layout, and ranks 0 and 1 hold the same rows either way.
TEST(Launch, TwoNodesOfOneRankEachTrainExactlyLikeOneNodeOfTwo) {
  ScratchDir d;
  const std::string port = std::to_string(port_for_test(6));
  const auto one_node = run_nibble("launch --nproc 2 --master-port " + std::to_string(port_for_test(7)) + " -- nibble " +
                                   train_args(d, "one-node"));
  ASSERT_EQ(one_node.code, 0) << one_node.out;
  auto node = [&](int rank) {
    return run_nibble("launch --nproc 1 --nnodes 2 --node-rank " + std::to_string(rank) +
                      " --master-addr 127.0.0.1 --master-port " + port + " -- nibble " + train_args(d, "two-nodes"));
  };
  auto second = std::async(std::launch::async, node, 1);
  const auto first = node(0);
  const auto other = second.get();
  ASSERT_EQ(first.code, 0) << first.out;
  ASSERT_EQ(other.code, 0) << other.out;
  expect_same_logs(d.file("one-node"), d.file("two-nodes"));
  EXPECT_EQ(nibble::read_file(d.file("one-node") + "/final/model.safetensors"),
            nibble::read_file(d.file("two-nodes") + "/final/model.safetensors"));
}

// ZeRO-1 on two ranks: the gradients are reduce-scattered (each rank receives the sum of its
// half only), the gradient norm is summed from the halves' chunk sums, each rank keeps half of
// the AdamW moments and updates half of the weights, then the halves are all-gathered — the
// same numbers as plain data parallelism, bit for bit (the same float sums in rank order, the
// norm's chunks added in order, AdamW elementwise). Its checkpoints hold the whole state: the optimizer file equals plain
// DP's, and a ZeRO-1 checkpoint resumes in one process.
TEST(Launch, Zero1TrainsExactlyLikePlainDataParallelism) {
  ScratchDir d;
  const auto plain = run_nibble("launch --nproc 2 --master-port " + std::to_string(port_for_test(8)) + " -- nibble " +
                                train_args(d, "plain"));
  ASSERT_EQ(plain.code, 0) << plain.out;
  const auto zero = run_nibble("launch --nproc 2 --master-port " + std::to_string(port_for_test(9)) + " -- nibble " +
                               train_args(d, "zero", "--zero1"));
  ASSERT_EQ(zero.code, 0) << zero.out;
  EXPECT_NE(zero.out.find("ZeRO-1"), std::string::npos) << zero.out;
  expect_same_logs(d.file("plain"), d.file("zero"));
  for (const char* f : {"step_000004/model.safetensors", "step_000004/optimizer.safetensors", "final/model.safetensors",
                        "final/optimizer.safetensors"})
    EXPECT_EQ(nibble::read_file(d.file("plain") + "/" + f), nibble::read_file(d.file("zero") + "/" + f)) << f;
  // the middle checkpoint of the ZeRO-1 run, resumed by one process, ends where plain DP ended
  const auto resumed = run_nibble(train_args(d, "resumed", "--resume " + d.file("zero") + "/step_000004"));
  ASSERT_EQ(resumed.code, 0) << resumed.out;
  EXPECT_NEAR(column(d.file("resumed"), "loss").back(), column(d.file("plain"), "loss").back(), 1e-2);
  // and a plain checkpoint resumes under ZeRO-1 on two ranks, bit for bit
  const auto back = run_nibble("launch --nproc 2 --master-port " + std::to_string(port_for_test(10)) + " -- nibble " +
                               train_args(d, "back", "--zero1 --resume " + d.file("plain") + "/step_000004"));
  ASSERT_EQ(back.code, 0) << back.out;
  EXPECT_EQ(nibble::read_file(d.file("plain") + "/final/model.safetensors"),
            nibble::read_file(d.file("back") + "/final/model.safetensors"));
}

TEST(Launch, AFailingRankStopsTheOthersAndTheBatchMustSplit) {
  ScratchDir d;
  // rank 1 fails at once; rank 0 would sleep for a minute: the launcher stops it and exits 7
  const auto t0 = std::chrono::steady_clock::now();
  const auto r = run_nibble("launch --nproc 2 --grace 2 --master-port " + std::to_string(port_for_test(1)) +
                            " -- sh -c 'if [ \"$RANK\" = 1 ]; then exit 7; fi; sleep 60'");
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(r.code, 7) << r.out;
  EXPECT_NE(r.out.find("rank 1 exited with status 7"), std::string::npos) << r.out;
  EXPECT_LT(secs, 20.0);
  // every rank sees the environment
  const auto env = run_nibble("launch --nproc 3 --master-port " + std::to_string(port_for_test(2)) +
                              " -- sh -c 'echo rank=$RANK/$WORLD_SIZE local=$LOCAL_RANK port=$MASTER_PORT'");
  EXPECT_EQ(env.code, 0) << env.out;
  for (const char* s : {"rank=0/3 local=0", "rank=1/3 local=1", "rank=2/3 local=2"})
    EXPECT_NE(env.out.find(s), std::string::npos) << env.out;
  // a global batch that does not split evenly is refused by every rank, with the reason
  const auto odd = run_nibble("launch --nproc 2 --master-port " + std::to_string(port_for_test(3)) + " -- nibble " +
                              train_args(d, "odd", "", 3));
  EXPECT_NE(odd.code, 0);
  EXPECT_NE(odd.out.find("not a multiple of the 2 ranks"), std::string::npos) << odd.out;
  // the second of two nodes: ranks 2 and 3 of 4, local ranks 0 and 1, rank 0's address
  const auto node1 = run_nibble("launch --nproc 2 --nnodes 2 --node-rank 1 --master-addr 10.1.2.3 --master-port " +
                                std::to_string(port_for_test(5)) +
                                " -- sh -c 'echo rank=$RANK/$WORLD_SIZE local=$LOCAL_RANK at=$MASTER_ADDR'");
  EXPECT_EQ(node1.code, 0) << node1.out;
  for (const char* s : {"rank=2/4 local=0 at=10.1.2.3", "rank=3/4 local=1 at=10.1.2.3"})
    EXPECT_NE(node1.out.find(s), std::string::npos) << node1.out;
  EXPECT_NE(run_nibble("launch --nproc 2").code, 0);  // no command
  EXPECT_NE(run_nibble("launch --nproc 2 --nnodes 2 --node-rank 2 -- true").code, 0);  // no such node
}

// Without the launcher (as under Slurm): rank 1 is killed mid-run; rank 0 must stop with a
// message naming its peer — its next collective finds the connection closed — not hang, and the
// run's last good checkpoint must stay loadable.
TEST(Launch, AKilledRankStopsItsPeerWithAMessageAndTheCheckpointSurvives) {
  ScratchDir d;
  const std::string nib = NIBBLE_CLI_PATH;
  const std::string train = nib + " train --device cpu --recipe bf16 --steps 400 --batch 4 --seq 64 --log-every 1" +
                            " --eval-every 0 --save-every 2 --out " + d.file("run");
  const std::string env = "WORLD_SIZE=2 MASTER_PORT=" + std::to_string(port_for_test(4)) +
                          " NIBBLE_DIST_TIMEOUT=30 OMP_NUM_THREADS=1 ";
  const std::string script = "cd " + d.path().string() + " && (RANK=0 " + env + train + " > r0.log 2>&1 & echo $! > p0) && (RANK=1 " + env +
                             train + " > r1.log 2>&1 & echo $! > p1) && sleep 3 && kill -9 $(cat p1) && " +
                             "while kill -0 $(cat p0) 2>/dev/null; do sleep 0.1; done";
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(std::system(("sh -c '" + script + "'").c_str()), 0);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::string log = nibble::read_file(d.file("r0.log"));
  EXPECT_NE(log.find("peer rank 1"), std::string::npos) << log;
  EXPECT_LT(secs, 20.0);  // found at the next collective, well before the 30 s timeout
  // the last checkpoint rank 0 wrote before the failure is complete and loads
  ASSERT_TRUE(fs::exists(d.file("run") + "/latest")) << log;
  const auto ev = run_nibble("eval --checkpoint " + d.file("run") + " --max-batches 1 --text " + nibble::default_corpus_path());
  EXPECT_EQ(ev.code, 0) << ev.out;
}
