// ZeRO-1's host logic (src/train/data_parallel.cpp) and the CPU engine's sharded step, with the
// ranks as threads over the TCP communicator: slice bounds for parameter counts that are not a
// multiple of kNormChunk × ranks (a short last slice, empty ones after it), the optimizer state's
// slices and their gather (what every checkpoint under ZeRO-1 runs), and one whole sharded step
// against the same step on one engine, bit for bit.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "nibble/ops/ops.hpp"
#include "nibble/train/engine.hpp"
#include "support/tcp_ranks.hpp"
#include "train/data_parallel.hpp"

using namespace nibble;
using nibble::testing::run_ranks;

namespace {

constexpr int64_t kChunk = ops::kNormChunk;

// 3 blocks of dim 64: 139712 parameters, 2.13 norm chunks (tiny, 885888, is 13.5 chunks)
ModelConfig small_model() {
  ModelConfig c = ModelConfig::preset("tiny");
  c.dim = 64;
  c.n_heads = 2;
  c.n_kv_heads = 2;
  c.ffn_dim = 128;
  c.n_layers = 3;
  return c;
}

// rank r's gradient i: small values that differ per rank and element
float grad_value(int r, int64_t i) {
  return static_cast<float>((i * 7919 + r * 104729) % 2001 - 1000) * 1e-4f + 1e-6f * static_cast<float>(r);
}

}  // namespace

TEST(Zero1, SlicesAreWholeNormChunksCoveringEveryParameterWithEmptyOnesLast) {
  // the 2-GPU case of the tiny model: rank 1's slice is the short one
  EXPECT_EQ(zero1_offsets(885888, 2), (std::vector<int64_t>{0, 7 * kChunk, 885888}));
  // fewer chunks than ranks: the ranks after the last parameter get [n, n)
  EXPECT_EQ(zero1_offsets(100000, 4), (std::vector<int64_t>{0, kChunk, 100000, 100000, 100000}));
  EXPECT_EQ(zero1_offsets(885888, 8).back(), 885888);
  EXPECT_EQ(zero1_offsets(885888, 8)[7], 885888);  // rank 7 of 8 holds nothing
  EXPECT_EQ(zero1_offsets(0, 3), (std::vector<int64_t>{0, 0, 0, 0}));
  for (const int64_t n : {int64_t{1}, kChunk - 1, kChunk, kChunk + 1, int64_t{139712}, int64_t{885888}, 4 * kChunk,
                          5 * kChunk + 3, int64_t{124439808}})
    for (const int w : {1, 2, 3, 4, 5, 8, 16}) {
      SCOPED_TRACE(std::to_string(n) + " parameters, " + std::to_string(w) + " ranks");
      const std::vector<int64_t> o = zero1_offsets(n, w);
      ASSERT_EQ(o.size(), static_cast<size_t>(w) + 1);
      EXPECT_EQ(o.front(), 0);
      EXPECT_EQ(o.back(), n);
      EXPECT_NO_THROW(check_slice_bounds("test", o, w));
      const int64_t first = o[1] - o[0];
      bool ended = false;  // past the last non-empty slice
      for (int r = 0; r < w; ++r) {
        const int64_t b = o[static_cast<size_t>(r)], e = o[static_cast<size_t>(r) + 1];
        if (b < n) {
          EXPECT_EQ(b % kChunk, 0) << "rank " << r;  // the norm's chunks are never split
        }
        if (e < n) {
          EXPECT_EQ(e - b, first) << "rank " << r;  // equal slices but the last
        }
        if (b == e) {
          ended = true;
        } else {
          EXPECT_FALSE(ended) << "rank " << r << " holds parameters after an empty slice";
        }
      }
      EXPECT_GT(first, 0);
    }
}

// Every rank's slice of a whole state, gathered back: the whole state on every rank, with empty
// slices. A state longer than the rank's slice (the CUDA engine returned all num_params moments
// and rank 1 copied them to its slice's offset, past the buffer's end: SIGSEGV after the first
// checkpoint) is an error naming the sizes on every rank.
TEST(Zero1, OptimizerStateSlicesGatherBackWholeOnEveryRank) {
  const int64_t n = 139712;
  OptimizerState whole;
  whole.step = 7;
  for (int64_t i = 0; i < n; ++i) {
    whole.m.push_back(grad_value(0, i));
    whole.v.push_back(grad_value(1, i) * grad_value(1, i));
  }
  for (const int world : {1, 2, 3, 4}) {
    SCOPED_TRACE(world);
    const std::vector<int64_t> offsets = zero1_offsets(n, world);
    std::vector<OptimizerState> got(static_cast<size_t>(world));
    const auto errors = run_ranks(world, 20, [&](int r, Communicator& c) {
      const OptimizerState part = slice_optimizer_state(whole, offsets, r);
      EXPECT_EQ(static_cast<int64_t>(part.m.size()), offsets[static_cast<size_t>(r) + 1] - offsets[static_cast<size_t>(r)]);
      got[static_cast<size_t>(r)] = gather_optimizer_state(part, offsets, c);
    });
    for (const auto& e : errors) EXPECT_EQ(e, "");
    for (int r = 0; r < world; ++r) {
      EXPECT_EQ(got[static_cast<size_t>(r)].m, whole.m) << "rank " << r;
      EXPECT_EQ(got[static_cast<size_t>(r)].v, whole.v) << "rank " << r;
      EXPECT_EQ(got[static_cast<size_t>(r)].step, whole.step) << "rank " << r;
    }
  }
  const auto errors = run_ranks(2, 5, [&](int, Communicator& c) { gather_optimizer_state(whole, zero1_offsets(n, 2), c); });
  for (const auto& e : errors) EXPECT_NE(e.find("optimizer state holds 139712"), std::string::npos) << e;
  EXPECT_THROW(slice_optimizer_state(whole, zero1_offsets(n + 1, 2), 0), Error);  // another model's state
}

// The CPU engine under ZeRO-1 on 2, 3 and 4 ranks (the 4th's slice empty, past a short one):
// reduce-scatter, the norm from the slices, AdamW on each slice, the all-gather of the weights
// and the moments gathered for a checkpoint equal one engine's step on the summed gradients, bit
// for bit; the engine's optimizer state is its slice.
TEST(Zero1, ShardedCpuStepEqualsOneEnginesStepWithEmptySlices) {
  const ModelConfig cfg = small_model();
  const AdamHyper h{0.9f, 0.95f, 1e-8f, 0.1f, false};
  for (const int world : {2, 3, 4}) {
    SCOPED_TRACE(world);
    auto ref = make_cpu_engine(cfg);
    ref->init(5);
    const int64_t n = ref->num_params();
    ASSERT_EQ(n, 139712);
    const std::vector<int64_t> offsets = zero1_offsets(n, world);
    // the TCP sums in rank order, as float
    std::vector<float> sum(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      float s = grad_value(0, i);
      for (int r = 1; r < world; ++r) s += grad_value(r, i);
      sum[static_cast<size_t>(i)] = s;
    }
    std::copy(sum.begin(), sum.end(), ref->cpu_model()->grads());
    const double ref_norm = ref->grad_norm();
    ref->optimizer_step(h, 1e-2f, 1.0f / static_cast<float>(world), 1);
    std::vector<float> ref_w(static_cast<size_t>(n));
    ref->get_weights(ref_w.data());
    const OptimizerState ref_opt = ref->get_optimizer();

    std::vector<double> norms(static_cast<size_t>(world));
    std::vector<std::vector<float>> weights(static_cast<size_t>(world));
    std::vector<OptimizerState> opts(static_cast<size_t>(world));
    const auto errors = run_ranks(world, 60, [&](int r, Communicator& c) {
      auto e = make_cpu_engine(cfg);
      e->init(5);
      const int64_t b = offsets[static_cast<size_t>(r)], end = offsets[static_cast<size_t>(r) + 1];
      e->set_optimizer_range(b, end);
      EXPECT_EQ(static_cast<int64_t>(e->get_optimizer().m.size()), end - b);
      float* g = e->cpu_model()->grads();
      for (int64_t i = 0; i < n; ++i) g[i] = grad_value(r, i);
      e->reduce_scatter_gradients(c, offsets);
      for (int64_t i = b; i < end; ++i) ASSERT_EQ(g[i], sum[static_cast<size_t>(i)]) << "rank " << r << " element " << i;
      norms[static_cast<size_t>(r)] = e->sharded_grad_norm(c, offsets);
      e->optimizer_step(h, 1e-2f, 1.0f / static_cast<float>(world), 1);
      e->all_gather_weights(c, offsets);
      weights[static_cast<size_t>(r)].resize(static_cast<size_t>(n));
      e->get_weights(weights[static_cast<size_t>(r)].data());
      opts[static_cast<size_t>(r)] = gather_optimizer_state(e->get_optimizer(), offsets, c);
    });
    for (const auto& e : errors) EXPECT_EQ(e, "");
    for (int r = 0; r < world; ++r) {
      EXPECT_EQ(norms[static_cast<size_t>(r)], ref_norm) << "rank " << r;
      EXPECT_TRUE(weights[static_cast<size_t>(r)] == ref_w) << "rank " << r;
      EXPECT_TRUE(opts[static_cast<size_t>(r)].m == ref_opt.m) << "rank " << r;
      EXPECT_TRUE(opts[static_cast<size_t>(r)].v == ref_opt.v) << "rank " << r;
    }
  }
}
