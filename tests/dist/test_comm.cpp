// The TCP communicator (src/dist/tcp_comm.cpp) with its ranks as threads of this process, and
// the launcher environment (DistEnv). Sums are checked against float64 sums in rank order.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "nibble/dist/comm.hpp"
#include "nibble/error.hpp"
#include "support/tcp_ranks.hpp"

using namespace nibble;

using nibble::testing::free_port;
using nibble::testing::run_ranks;

TEST(TcpComm, AllReduceBroadcastAndBarrierGiveTheSameBitsEverywhere) {
  for (const int world : {1, 2, 3, 5}) {
    SCOPED_TRACE(world);
    const int64_t n = 1000;
    std::vector<std::vector<float>> got(static_cast<size_t>(world));
    std::vector<double> dsum(static_cast<size_t>(world));
    std::vector<std::vector<uint8_t>> bytes(static_cast<size_t>(world));
    const auto errors = run_ranks(world, 20, [&](int r, Communicator& c) {
      EXPECT_EQ(c.rank(), r);
      EXPECT_EQ(c.world(), world);
      std::vector<float> x(n);
      for (int64_t i = 0; i < n; ++i) x[static_cast<size_t>(i)] = 0.1f * static_cast<float>(r + 1) + 1e-3f * static_cast<float>(i);
      c.all_reduce_sum(x.data(), n);
      got[static_cast<size_t>(r)] = x;
      double d = std::ldexp(1.0, r);  // 2^r: the sum is 2^world − 1 exactly
      c.all_reduce_sum(&d, 1);
      dsum[static_cast<size_t>(r)] = d;
      std::vector<uint8_t> b(37, static_cast<uint8_t>(r == world - 1 ? 0xAB : 0));
      c.broadcast(b.data(), b.size(), world - 1);  // a root other than 0
      bytes[static_cast<size_t>(r)] = b;
      c.barrier();
    });
    for (const auto& e : errors) EXPECT_EQ(e, "");
    for (int r = 0; r < world; ++r) {
      EXPECT_EQ(dsum[static_cast<size_t>(r)], std::ldexp(1.0, world) - 1.0);
      EXPECT_EQ(bytes[static_cast<size_t>(r)], std::vector<uint8_t>(37, 0xAB));
      EXPECT_EQ(got[static_cast<size_t>(r)], got[0]);  // the same bits on every rank
    }
    // the sum in rank order, as float
    for (int64_t i = 0; i < n; ++i) {
      float s = 0.0f;
      for (int r = 0; r < world; ++r) s += 0.1f * static_cast<float>(r + 1) + 1e-3f * static_cast<float>(i);
      EXPECT_EQ(got[0][static_cast<size_t>(i)], s) << i;
    }
  }
}

// ZeRO-1's pair: reduce_scatter_sum leaves each rank the rank-order sum of its own slice (the
// all-reduce's bits), all_gather then gives every rank every slice; uneven slices, an empty
// one, and bad bounds are an error naming the collective.
TEST(TcpComm, ReduceScatterThenAllGatherGiveTheAllReducesBits) {
  for (const int world : {1, 2, 3}) {
    SCOPED_TRACE(world);
    const int64_t n = 1000;
    std::vector<int64_t> offsets = {0};
    for (int r = 0; r < world; ++r) offsets.push_back(r + 1 == world ? n : std::min<int64_t>(n, offsets.back() + (r == 0 ? 0 : 600)));
    std::vector<std::vector<float>> sliced(static_cast<size_t>(world)), gathered(static_cast<size_t>(world));
    const auto errors = run_ranks(world, 20, [&](int r, Communicator& c) {
      std::vector<float> x(n);
      for (int64_t i = 0; i < n; ++i) x[static_cast<size_t>(i)] = 0.1f * static_cast<float>(r + 1) + 1e-3f * static_cast<float>(i);
      c.reduce_scatter_sum(x.data(), offsets);
      sliced[static_cast<size_t>(r)] = x;
      c.all_gather(x.data(), offsets);
      gathered[static_cast<size_t>(r)] = x;
    });
    for (const auto& e : errors) EXPECT_EQ(e, "");
    for (int r = 0; r < world; ++r)
      for (int64_t i = 0; i < n; ++i) {
        float s = 0.0f;
        for (int q = 0; q < world; ++q) s += 0.1f * static_cast<float>(q + 1) + 1e-3f * static_cast<float>(i);
        EXPECT_EQ(gathered[static_cast<size_t>(r)][static_cast<size_t>(i)], s) << r << " " << i;
        if (i >= offsets[static_cast<size_t>(r)] && i < offsets[static_cast<size_t>(r) + 1]) {
          EXPECT_EQ(sliced[static_cast<size_t>(r)][static_cast<size_t>(i)], s) << r << " " << i;
        }
      }
  }
  const auto errors = run_ranks(2, 5, [&](int, Communicator& c) {
    std::vector<float> x(10, 1.0f);
    c.reduce_scatter_sum(x.data(), {0, 6, 4});
  });
  for (const auto& e : errors) EXPECT_NE(e.find("reduce_scatter_sum"), std::string::npos) << e;
}

TEST(TcpComm, MismatchedCollectivesAndDeadPeersFailWithAMessage) {
  // rank 1 reduces 3 floats while rank 0 reduces 4: both must fail, naming the mismatch or the
  // closed connection, instead of exchanging garbage or hanging
  auto errors = run_ranks(2, 5, [&](int r, Communicator& c) {
    std::vector<float> x(r == 0 ? 4 : 3, 1.0f);
    c.all_reduce_sum(x.data(), static_cast<int64_t>(x.size()));
  });
  EXPECT_NE(errors[0].find("collective mismatch"), std::string::npos) << errors[0];
  EXPECT_NE(errors[1], "");
  // rank 1 leaves after the first collective; rank 0's second one fails within the timeout
  const auto t0 = std::chrono::steady_clock::now();
  errors = run_ranks(2, 3, [&](int r, Communicator& c) {
    c.barrier();
    if (r == 1) return;  // its communicator closes its socket
    double x = 1;
    c.all_reduce_sum(&x, 1);
  });
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_NE(errors[0].find("peer rank 1"), std::string::npos) << errors[0];
  // peer_lost() sees the closed connection without a collective (what a GPU wait polls)
  bool lost_before = true, lost_after = false;
  errors = run_ranks(2, 5, [&](int r, Communicator& c) {
    if (r == 0) lost_before = c.peer_lost();
    c.barrier();
    if (r == 1) return;
    for (int i = 0; i < 200 && !lost_after; ++i) {
      lost_after = c.peer_lost();
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  });
  EXPECT_FALSE(lost_before);
  EXPECT_TRUE(lost_after);
  EXPECT_EQ(errors[1], "");
  EXPECT_LT(secs, 10.0);
  // nobody listening: a rank that cannot reach rank 0 gives up after the timeout
  DistEnv e;
  e.rank = 1;
  e.world = 2;
  e.master_port = free_port();
  e.timeout_s = 0.5;
  try {
    make_tcp_communicator(e);
    ADD_FAILURE() << "connected to nobody";
  } catch (const Error& ex) {
    EXPECT_NE(std::string(ex.what()).find("could not connect to rank 0"), std::string::npos) << ex.what();
  }
}

TEST(DistEnv, ReadsTorchrunAndSlurmVariablesAndRejectsBadOnes) {
  const char* names[] = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_PROCID",
                         "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS", "SLURM_LOCALID", "NIBBLE_DIST_TIMEOUT"};
  auto clear = [&] {
    for (const char* n : names) ::unsetenv(n);
  };
  clear();
  EXPECT_EQ(DistEnv::from_environment().world, 1);
  ::setenv("RANK", "3", 1);
  ::setenv("WORLD_SIZE", "4", 1);
  ::setenv("LOCAL_RANK", "1", 1);
  ::setenv("MASTER_ADDR", "node7", 1);
  ::setenv("MASTER_PORT", "12345", 1);
  DistEnv e = DistEnv::from_environment();
  EXPECT_EQ(e.rank, 3);
  EXPECT_EQ(e.world, 4);
  EXPECT_EQ(e.local_rank, 1);
  EXPECT_EQ(e.master_addr, "node7");
  EXPECT_EQ(e.master_port, 12345);
  ::setenv("RANK", "4", 1);  // out of range
  EXPECT_THROW(DistEnv::from_environment(), Error);
  clear();
  ::setenv("SLURM_PROCID", "0", 1);  // a batch script's shell: not an srun step, one process
  ::setenv("SLURM_NTASKS", "8", 1);
  EXPECT_EQ(DistEnv::from_environment().world, 1);
  ::setenv("SLURM_PROCID", "5", 1);  // a task of an srun step
  ::setenv("SLURM_STEP_NUM_TASKS", "8", 1);
  ::setenv("SLURM_LOCALID", "1", 1);
  e = DistEnv::from_environment();
  EXPECT_EQ(e.rank, 5);
  EXPECT_EQ(e.world, 8);
  EXPECT_EQ(e.local_rank, 1);
  clear();
  ::setenv("RANK", "0", 1);  // WORLD_SIZE missing
  EXPECT_THROW(DistEnv::from_environment(), Error);
  ::setenv("WORLD_SIZE", "two", 1);
  EXPECT_THROW(DistEnv::from_environment(), Error);
  clear();
}
