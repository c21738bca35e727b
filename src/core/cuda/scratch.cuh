#pragma once
// A device buffer that grows on demand and is reused: the CUDA backend's activations and
// scratch are sized by the first step and never reallocated afterwards.
#include <cuda_runtime.h>

#include <cstddef>

#include "core/cuda/check.cuh"

namespace nibble::cuda {

class DeviceScratch {
 public:
  DeviceScratch() = default;
  DeviceScratch(const DeviceScratch&) = delete;
  DeviceScratch& operator=(const DeviceScratch&) = delete;
  DeviceScratch(DeviceScratch&& o) noexcept : p_(o.p_), bytes_(o.bytes_) { o.p_ = nullptr; o.bytes_ = 0; }
  DeviceScratch& operator=(DeviceScratch&& o) noexcept {
    if (this != &o) {
      if (p_) cudaFree(p_);
      p_ = o.p_;
      bytes_ = o.bytes_;
      o.p_ = nullptr;
      o.bytes_ = 0;
    }
    return *this;
  }
  ~DeviceScratch() { if (p_) cudaFree(p_); }

  // At least `bytes` of device memory (contents undefined after a growth).
  void* ensure(size_t bytes) {
    if (bytes > bytes_) {
      if (p_) NIBBLE_CUDA_CHECK(cudaFree(p_));
      p_ = nullptr;
      bytes_ = 0;
      NIBBLE_CUDA_CHECK(cudaMalloc(&p_, bytes));
      bytes_ = bytes;
    }
    return p_;
  }
  template <class T>
  T* as(size_t n) { return static_cast<T*>(ensure(n * sizeof(T))); }
  template <class T>
  T* get() const { return static_cast<T*>(p_); }
  size_t bytes() const { return bytes_; }

 private:
  void* p_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace nibble::cuda
