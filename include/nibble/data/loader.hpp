#pragma once
// Batches of training windows from a token stream, deterministic and resumable.
//
// Windows. Window w is the T+1 tokens starting at w*T (stride T, as llm.c's loader reads
// them): inputs are its first T tokens, targets its last T, so each window's last target is
// the next window's first input and every token after the first is a target exactly once per
// epoch. A stream of n tokens has W = (n - 1) / T windows; the partial tail is not used.
//
// Order. A batch is B windows (rows). With shuffle, epoch e visits the windows in a
// Fisher-Yates permutation drawn from Philox4x32-10 keyed by `seed`, counter
// (draw index low, high, e, 0x4C4F4144 "LOAD") — the last word keeps these draws apart from
// SPEC §3.4's streams, which use 0 there — so the order depends only on (seed, epoch, W).
// Without shuffle (validation) windows come in stream order. Each epoch is
// floor(W / B) batches; the W mod B windows left over by that epoch's order are skipped.
//
// The loader's whole state is (epoch, batch within the epoch): LoaderState saves it with the
// configuration, so that a resumed run continues with exactly the same batches.
#include <cstdint>
#include <span>
#include <vector>

#include "nibble/json.hpp"

namespace nibble {

struct LoaderState {
  uint64_t epoch = 0;
  int64_t batch = 0;  // batches already taken in this epoch
  // The configuration the position belongs to; DataLoader::restore refuses another one.
  uint64_t seed = 0;
  int64_t batch_size = 0, seq_len = 0, windows = 0;
  bool shuffle = false;

  Json to_json() const;
  static LoaderState from_json(const Json& j);  // errors name the missing or bad field
  bool operator==(const LoaderState&) const = default;
};

struct Batch {
  int64_t batch_size = 0, seq_len = 0;
  std::vector<int32_t> inputs, targets;  // [batch_size * seq_len], row-major
};

class DataLoader {
 public:
  // `tokens` must outlive the loader (it keeps a view, not a copy). Fails when the stream
  // holds fewer than batch windows (batch * seq + 1 tokens).
  DataLoader(std::span<const uint16_t> tokens, int64_t batch, int64_t seq, uint64_t seed,
             bool shuffle);

  Batch next();
  void next(int32_t* inputs, int32_t* targets);  // batch * seq each

  void reset();  // back to epoch 0, batch 0 (validation passes)
  LoaderState state() const;
  void restore(const LoaderState& s);  // errors when s was saved by a differently set up loader

  int64_t batch_size() const { return batch_; }
  int64_t seq_len() const { return seq_; }
  int64_t windows() const { return windows_; }
  int64_t batches_per_epoch() const { return windows_ / batch_; }
  int64_t tokens_per_batch() const { return batch_ * seq_; }  // targets per batch
  int64_t tokens_per_epoch() const { return batches_per_epoch() * tokens_per_batch(); }
  uint64_t epoch() const { return epoch_; }
  int64_t batch_in_epoch() const { return pos_; }

 private:
  int64_t window_at(int64_t index);  // the index-th window of the current epoch's order

  std::span<const uint16_t> tokens_;
  int64_t batch_, seq_, windows_;
  uint64_t seed_;
  bool shuffle_;
  uint64_t epoch_ = 0;
  int64_t pos_ = 0;
  std::vector<int64_t> order_;   // the permutation of order_epoch_ (shuffle only)
  uint64_t order_epoch_ = 0;
  bool order_valid_ = false;
};

}  // namespace nibble
