#include "nibble/data/loader.hpp"

#include <numeric>

#include "nibble/error.hpp"
#include "nibble/philox.hpp"

namespace nibble {

namespace {

constexpr uint32_t kLoaderDomain = 0x4C4F4144u;  // "LOAD": counter word 3 of the shuffle draws

// A uniform integer in [0, bound) from draw k of epoch e: 64 random bits mod bound (the
// modulo bias, at most bound / 2^64, is far below anything observable).
uint64_t uniform_below(uint64_t seed, uint64_t epoch, uint64_t k, uint64_t bound) {
  const Philox4 r = philox4x32_10(
      Philox4{{static_cast<uint32_t>(k), static_cast<uint32_t>(k >> 32), static_cast<uint32_t>(epoch),
               kLoaderDomain}},
      static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  const uint64_t bits = (static_cast<uint64_t>(r.v[0]) << 32) | r.v[1];
  return bits % bound;
}

}  // namespace

Json LoaderState::to_json() const {
  Json j = Json::object();
  j["epoch"] = epoch;
  j["batch"] = batch;
  j["seed"] = seed;  // stored as int64 bits: seeds >= 2^63 read back exactly
  j["batch_size"] = batch_size;
  j["seq_len"] = seq_len;
  j["windows"] = windows;
  j["shuffle"] = shuffle;
  return j;
}

LoaderState LoaderState::from_json(const Json& j) {
  if (!j.is_object()) fail("data loader state: expected a JSON object, got ", j.type_name());
  auto field = [&](const char* name) -> const Json& {
    const Json* v = j.find(name);
    if (!v) fail("data loader state: missing field '", name, "'");
    return *v;
  };
  auto integer = [&](const char* name) {
    const Json& v = field(name);
    if (!v.is_int()) fail("data loader state: field '", name, "' must be an integer, got ", v.type_name());
    return v.as_int64();
  };
  LoaderState s;
  s.epoch = static_cast<uint64_t>(integer("epoch"));
  s.batch = integer("batch");
  s.seed = static_cast<uint64_t>(integer("seed"));
  s.batch_size = integer("batch_size");
  s.seq_len = integer("seq_len");
  s.windows = integer("windows");
  const Json& sh = field("shuffle");
  if (!sh.is_bool()) fail("data loader state: field 'shuffle' must be true or false, got ", sh.type_name());
  s.shuffle = sh.as_bool();
  if (s.batch < 0) fail("data loader state: field 'batch' is negative (", s.batch, ")");
  return s;
}

DataLoader::DataLoader(std::span<const uint16_t> tokens, int64_t batch, int64_t seq, uint64_t seed,
                       bool shuffle)
    : tokens_(tokens), batch_(batch), seq_(seq), windows_(0), seed_(seed), shuffle_(shuffle) {
  if (batch < 1) fail("data loader: batch size must be at least 1, got ", batch);
  if (seq < 1) fail("data loader: sequence length must be at least 1, got ", seq);
  const auto n = static_cast<int64_t>(tokens.size());
  windows_ = n > 0 ? (n - 1) / seq : 0;
  if (windows_ < batch)
    fail("data loader: ", n, " tokens make ", windows_, " windows of ", seq + 1,
         " tokens (stride ", seq, "), fewer than the batch size ", batch, "; need at least ",
         batch * seq + 1, " tokens");
}

int64_t DataLoader::window_at(int64_t index) {
  if (!shuffle_) return index;
  if (!order_valid_ || order_epoch_ != epoch_) {
    order_.resize(static_cast<size_t>(windows_));
    std::iota(order_.begin(), order_.end(), int64_t{0});
    // Fisher-Yates: step k swaps position i = W-1-k with a uniform j in [0, i].
    for (int64_t i = windows_ - 1, k = 0; i > 0; --i, ++k) {
      const auto j = static_cast<int64_t>(
          uniform_below(seed_, epoch_, static_cast<uint64_t>(k), static_cast<uint64_t>(i) + 1));
      std::swap(order_[static_cast<size_t>(i)], order_[static_cast<size_t>(j)]);
    }
    order_epoch_ = epoch_;
    order_valid_ = true;
  }
  return order_[static_cast<size_t>(index)];
}

void DataLoader::next(int32_t* inputs, int32_t* targets) {
  for (int64_t b = 0; b < batch_; ++b) {
    const int64_t w = window_at(pos_ * batch_ + b);
    const uint16_t* src = tokens_.data() + w * seq_;
    int32_t* in = inputs + b * seq_;
    int32_t* tg = targets + b * seq_;
    for (int64_t t = 0; t < seq_; ++t) {
      in[t] = src[t];
      tg[t] = src[t + 1];
    }
  }
  // Roll over as soon as an epoch is used up, so that state() reads (next epoch, 0).
  if (++pos_ == batches_per_epoch()) {
    pos_ = 0;
    ++epoch_;
  }
}

Batch DataLoader::next() {
  Batch b;
  b.batch_size = batch_;
  b.seq_len = seq_;
  b.inputs.resize(static_cast<size_t>(batch_ * seq_));
  b.targets.resize(static_cast<size_t>(batch_ * seq_));
  next(b.inputs.data(), b.targets.data());
  return b;
}

void DataLoader::reset() {
  epoch_ = 0;
  pos_ = 0;
}

LoaderState DataLoader::state() const {
  return LoaderState{epoch_, pos_, seed_, batch_, seq_, windows_, shuffle_};
}

void DataLoader::restore(const LoaderState& s) {
  auto mismatch = [](const char* what, auto saved, auto now) {
    fail("data loader state: saved with ", what, " ", saved, " but this loader has ", now,
         " (the data or the batch settings changed; a resumed run must use the same)");
  };
  if (s.seed != seed_) mismatch("seed", s.seed, seed_);
  if (s.batch_size != batch_) mismatch("batch size", s.batch_size, batch_);
  if (s.seq_len != seq_) mismatch("sequence length", s.seq_len, seq_);
  if (s.windows != windows_) mismatch("window count", s.windows, windows_);
  if (s.shuffle != shuffle_) mismatch("shuffle", s.shuffle ? "on" : "off", shuffle_ ? "on" : "off");
  if (s.batch < 0 || s.batch >= batches_per_epoch())
    fail("data loader state: batch ", s.batch, " is outside the epoch's ", batches_per_epoch(), " batches");
  epoch_ = s.epoch;
  pos_ = s.batch;
}

}  // namespace nibble
