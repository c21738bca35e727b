#pragma once
// The attention tests' inputs (tests/ops/cuda): q, k, v inside one fused row-major buffer as the
// trainer lays them out (q | k | v | pad), with CPU-layout copies of the slices for the
// reference, from Philox normals; and their device copies.
#include <bit>
#include <cstdint>
#include <vector>

#include "core/cuda/check.cuh"  // DeviceBuffer
#include "nibble/quant/spectral.hpp"  // philox_normal

namespace nibble::testing::attention {

// A quiet NaN with a payload: what an unwritten output holds, and what the pad columns must
// still hold afterwards.
inline const float kPoison = std::bit_cast<float>(0x7FC0DEADu);

struct Case {
  int64_t b, t, hq, hkv, d;
  int64_t pad;  // extra columns at the end of each fused row (not a multiple of 4: unaligned rows)
  int64_t width() const { return (hq + 2 * hkv) * d + pad; }
  int64_t rows() const { return b * t; }
};

// Host images of the fused buffers and the CPU-layout copies of their slices.
struct Data {
  std::vector<float> qkv;   // [B·T, width]: q | k | v | pad (pad = kPoison)
  std::vector<float> dout;  // [B·T, Hq·D]
  std::vector<float> q, k, v;  // [B, T, H, D] contiguous, for the CPU
};

// q, k ~ N(0, 1.2²): the scaled scores q·k/√D then have a standard deviation of 1.2² ≈ 1.44,
// so a row's softmax over up to 1024 keys is neither flat nor one-hot (its largest weight is
// typically a few percent to a few tens of percent). v, dO ~ N(0, 1).
inline Data make_data(const Case& c, uint64_t seed) {
  Data x;
  const int64_t w = c.width(), n = c.rows(), dq = c.hq * c.d, dkv = c.hkv * c.d;
  x.qkv.assign(static_cast<size_t>(n * w), kPoison);
  x.dout.resize(static_cast<size_t>(n * dq));
  x.q.resize(static_cast<size_t>(n * dq));
  x.k.resize(static_cast<size_t>(n * dkv));
  x.v.resize(static_cast<size_t>(n * dkv));
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t e = 0; e < dq; ++e) {
      const uint64_t i = static_cast<uint64_t>(r * dq + e);
      x.q[i] = static_cast<float>(1.2 * philox_normal(seed, 1, i));
      x.dout[i] = static_cast<float>(philox_normal(seed, 4, i));
      x.qkv[static_cast<size_t>(r * w + e)] = x.q[i];
    }
    for (int64_t e = 0; e < dkv; ++e) {
      const uint64_t i = static_cast<uint64_t>(r * dkv + e);
      x.k[i] = static_cast<float>(1.2 * philox_normal(seed, 2, i));
      x.v[i] = static_cast<float>(philox_normal(seed, 3, i));
      x.qkv[static_cast<size_t>(r * w + dq + e)] = x.k[i];
      x.qkv[static_cast<size_t>(r * w + dq + dkv + e)] = x.v[i];
    }
  }
  return x;
}


// Device copies of one case, laid out as in the trainer.
struct Device {
  cuda::DeviceBuffer<float> qkv, dqkv, dout, out, lse, delta;
  explicit Device(const Case& c)
      : qkv(static_cast<size_t>(c.rows() * c.width())),
        dqkv(static_cast<size_t>(c.rows() * c.width())),
        dout(static_cast<size_t>(c.rows() * c.hq * c.d)),
        out(static_cast<size_t>(c.rows() * c.hq * c.d)),
        lse(static_cast<size_t>(c.b * c.hq * c.t)),
        delta(static_cast<size_t>(c.b * c.hq * c.t)) {}
};

inline void fill(cuda::DeviceBuffer<float>& buf, float value) {
  const std::vector<float> h(buf.size(), value);
  buf.upload(h.data());
}
inline std::vector<float> download(const cuda::DeviceBuffer<float>& buf) {
  std::vector<float> h(buf.size());
  buf.download(h.data());
  return h;
}

}  // namespace nibble::testing::attention
