// The DataLoader: window layout, determinism, one visit per window per epoch, resuming from
// a saved state, sequential validation passes, and the errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <vector>

#include "nibble/data/loader.hpp"
#include "nibble/error.hpp"

using namespace nibble;

namespace {

// Token i has value i, so a row's first input tells which window it is (window = first / T).
std::vector<uint16_t> ramp(size_t n) {
  std::vector<uint16_t> t(n);
  for (size_t i = 0; i < n; ++i) t[i] = static_cast<uint16_t>(i);
  return t;
}

// The window index of each row of a batch.
std::vector<int64_t> rows(const Batch& b) {
  std::vector<int64_t> w;
  for (int64_t r = 0; r < b.batch_size; ++r) w.push_back(b.inputs[static_cast<size_t>(r * b.seq_len)] / b.seq_len);
  return w;
}

}  // namespace

TEST(LoaderWindows, TargetsAreInputsShiftedByOne) {
  const auto toks = ramp(1001);
  DataLoader dl(toks, 4, 10, 1, true);
  EXPECT_EQ(dl.windows(), 100);  // (1001 - 1) / 10: stride T, T + 1 tokens each
  EXPECT_EQ(dl.batches_per_epoch(), 25);
  EXPECT_EQ(dl.tokens_per_batch(), 40);
  EXPECT_EQ(dl.tokens_per_epoch(), 1000);
  for (int k = 0; k < 30; ++k) {
    const Batch b = dl.next();
    ASSERT_EQ(b.inputs.size(), 40u);
    for (int64_t r = 0; r < 4; ++r) {
      const int32_t first = b.inputs[static_cast<size_t>(r * 10)];
      EXPECT_EQ(first % 10, 0);  // windows start at multiples of T
      for (int64_t t = 0; t < 10; ++t) {
        EXPECT_EQ(b.inputs[static_cast<size_t>(r * 10 + t)], first + t);
        EXPECT_EQ(b.targets[static_cast<size_t>(r * 10 + t)], first + t + 1);
      }
    }
  }
}

TEST(LoaderOrder, SameSeedSameBatchesOtherSeedOther) {
  const auto toks = ramp(5000);
  DataLoader a(toks, 8, 16, 42, true), b(toks, 8, 16, 42, true), c(toks, 8, 16, 43, true);
  bool differs = false;
  for (int k = 0; k < 100; ++k) {  // several epochs (39 batches each)
    const Batch x = a.next(), y = b.next(), z = c.next();
    EXPECT_EQ(x.inputs, y.inputs);
    EXPECT_EQ(x.targets, y.targets);
    differs |= x.inputs != z.inputs;
  }
  EXPECT_TRUE(differs);
}

TEST(LoaderOrder, EveryWindowOncePerEpoch) {
  const auto toks = ramp(321);  // 32 windows of T = 10, B = 4: 8 batches
  DataLoader dl(toks, 4, 10, 7, true);
  ASSERT_EQ(dl.windows(), 32);
  std::vector<std::vector<int64_t>> epochs;
  for (int e = 0; e < 3; ++e) {
    EXPECT_EQ(dl.epoch(), static_cast<uint64_t>(e));
    std::vector<int64_t> seen;
    for (int k = 0; k < 8; ++k) {
      const auto w = rows(dl.next());
      seen.insert(seen.end(), w.begin(), w.end());
    }
    std::vector<int64_t> sorted = seen;
    std::sort(sorted.begin(), sorted.end());
    for (int64_t i = 0; i < 32; ++i) EXPECT_EQ(sorted[static_cast<size_t>(i)], i);
    epochs.push_back(seen);
  }
  EXPECT_NE(epochs[0], epochs[1]);  // a new permutation each epoch
  EXPECT_NE(epochs[1], epochs[2]);
  std::vector<int64_t> identity(32);
  for (int64_t i = 0; i < 32; ++i) identity[static_cast<size_t>(i)] = i;
  EXPECT_NE(epochs[0], identity);  // actually shuffled
}

TEST(LoaderOrder, LeftoverWindowsAreSkippedDistinctly) {
  const auto toks = ramp(351);  // 35 windows, B = 4: 8 batches, 3 windows left over
  DataLoader dl(toks, 4, 10, 3, true);
  ASSERT_EQ(dl.batches_per_epoch(), 8);
  std::set<int64_t> seen;
  for (int k = 0; k < 8; ++k)
    for (const int64_t w : rows(dl.next())) EXPECT_TRUE(seen.insert(w).second) << "window " << w << " twice";
  EXPECT_EQ(seen.size(), 32u);
  EXPECT_EQ(dl.epoch(), 1u);
  EXPECT_EQ(dl.batch_in_epoch(), 0);
}

TEST(LoaderState, SaveAndRestoreContinuesIdentically) {
  const auto toks = ramp(3000);
  DataLoader run(toks, 4, 8, 99, true);  // 374 windows, 93 batches per epoch
  for (int k = 0; k < 120; ++k) (void)run.next();  // into the second epoch
  const LoaderState saved = run.state();
  EXPECT_EQ(saved.epoch, 1u);
  EXPECT_EQ(saved.batch, 27);
  // Through JSON text, as a checkpoint stores it.
  const LoaderState back = LoaderState::from_json(Json::parse(saved.to_json().dump()));
  EXPECT_EQ(back, saved);
  DataLoader resumed(toks, 4, 8, 99, true);
  resumed.restore(back);
  for (int k = 0; k < 200; ++k) {
    const Batch x = run.next(), y = resumed.next();
    ASSERT_EQ(x.inputs, y.inputs) << "batch " << k << " after resuming";
    ASSERT_EQ(x.targets, y.targets);
  }
  EXPECT_EQ(run.state(), resumed.state());
}

TEST(LoaderState, LargeSeedsSurviveJson) {
  const auto toks = ramp(100);
  DataLoader dl(toks, 1, 4, 0xFEDCBA9876543210ull, true);
  const LoaderState s = LoaderState::from_json(Json::parse(dl.state().to_json().dump()));
  EXPECT_EQ(s.seed, 0xFEDCBA9876543210ull);
  dl.restore(s);
}

TEST(LoaderState, RestoreRefusesAnotherConfiguration) {
  const auto toks = ramp(1000);
  DataLoader a(toks, 4, 8, 1, true);
  const LoaderState s = a.state();
  DataLoader other_seed(toks, 4, 8, 2, true), other_batch(toks, 2, 8, 1, true);
  const auto shorter = ramp(900);
  DataLoader other_data(shorter, 4, 8, 1, true);
  EXPECT_THROW(other_seed.restore(s), Error);
  EXPECT_THROW(other_batch.restore(s), Error);
  try {
    other_data.restore(s);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("window count 124"), std::string::npos) << e.what();
  }
  LoaderState bad = s;
  bad.batch = 1000;
  EXPECT_THROW(a.restore(bad), Error);
}

TEST(LoaderState, FromJsonNamesTheBadField) {
  Json j = DataLoader(ramp(100), 1, 4, 1, true).state().to_json();
  Json missing = Json::object();
  for (const auto& [k, v] : j.as_object())
    if (k != "seq_len") missing[k] = v;
  try {
    (void)LoaderState::from_json(missing);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'seq_len'"), std::string::npos) << e.what();
  }
  j["epoch"] = "one";
  EXPECT_THROW((void)LoaderState::from_json(j), Error);
}

TEST(LoaderSequential, ValidationWindowsInOrderAndReset) {
  const auto toks = ramp(81);  // 10 windows of T = 8; B = 3: 3 batches, window 9 unused
  DataLoader val(toks, 3, 8, 0, false);
  std::vector<int64_t> seen;
  for (int k = 0; k < 3; ++k) {
    const auto w = rows(val.next());
    seen.insert(seen.end(), w.begin(), w.end());
  }
  EXPECT_EQ(seen, (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_EQ(val.epoch(), 1u);  // a pass wraps around to the start
  EXPECT_EQ(rows(val.next()), (std::vector<int64_t>{0, 1, 2}));
  val.reset();
  EXPECT_EQ(val.state().epoch, 0u);
  EXPECT_EQ(rows(val.next()), (std::vector<int64_t>{0, 1, 2}));
}

TEST(LoaderErrors, DataShorterThanABatch) {
  const auto toks = ramp(32);  // 3 windows of T = 10
  try {
    DataLoader dl(toks, 4, 10, 0, true);
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("32 tokens make 3 windows"), std::string::npos) << msg;
    EXPECT_NE(msg.find("at least 41 tokens"), std::string::npos) << msg;
  }
  EXPECT_THROW(DataLoader(std::vector<uint16_t>{}, 1, 1, 0, false), Error);
  EXPECT_THROW(DataLoader(toks, 0, 10, 0, false), Error);
  EXPECT_THROW(DataLoader(toks, 1, 0, 0, false), Error);
  DataLoader exact(toks, 3, 10, 0, false);  // 31 tokens would do: 3 windows
  EXPECT_EQ(exact.batches_per_epoch(), 1);
}
