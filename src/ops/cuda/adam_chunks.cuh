#pragma once
// AdamW's chunk list in device memory (ops_cuda.hpp, adamw_update): the parameters in chunks of
// at most 2^16 elements, each inside one tensor so that it carries that tensor's weight-decay
// flag. Built once by the engine (its parameters) and by QAT's GPU state (latent weights, scales).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/cuda/check.cuh"
#include "core/cuda/scratch.cuh"
#include "ops/cuda/ops_cuda.hpp"

namespace nibble::cuda {

struct AdamTensor {
  int64_t offset = 0, numel = 0;
  bool decay = false;
};

class DeviceAdamChunks {
 public:
  // Waits for `stream` (the chunks may be in use), then copies the new list.
  void build(const std::vector<AdamTensor>& tensors, cudaStream_t stream) {
    constexpr int64_t kChunk = 1 << 16;
    std::vector<int64_t> start;
    std::vector<int32_t> len;
    std::vector<uint8_t> decay;
    for (const AdamTensor& t : tensors)
      for (int64_t o = 0; o < t.numel; o += kChunk) {
        start.push_back(t.offset + o);
        len.push_back(static_cast<int32_t>(std::min(kChunk, t.numel - o)));
        decay.push_back(t.decay ? 1 : 0);
      }
    count_ = static_cast<int64_t>(start.size());
    NIBBLE_CUDA_CHECK(cudaStreamSynchronize(stream));
    if (count_ == 0) return;
    NIBBLE_CUDA_CHECK(cudaMemcpy(start_.as<int64_t>(start.size()), start.data(), start.size() * 8, cudaMemcpyHostToDevice));
    NIBBLE_CUDA_CHECK(cudaMemcpy(len_.as<int32_t>(len.size()), len.data(), len.size() * 4, cudaMemcpyHostToDevice));
    NIBBLE_CUDA_CHECK(cudaMemcpy(decay_.as<uint8_t>(decay.size()), decay.data(), decay.size(), cudaMemcpyHostToDevice));
  }
  ops::AdamChunks view() const {
    ops::AdamChunks c;
    c.start = start_.get<int64_t>();
    c.len = len_.get<int32_t>();
    c.decay = decay_.get<uint8_t>();
    c.count = count_;
    return c;
  }

 private:
  DeviceScratch start_, len_, decay_;
  int64_t count_ = 0;
};

}  // namespace nibble::cuda
