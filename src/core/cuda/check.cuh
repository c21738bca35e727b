#pragma once
// Every CUDA runtime return code is checked; failures become nibble::Error with the call,
// file and line.
#include <cuda_runtime.h>

#include "nibble/error.hpp"

#define NIBBLE_CUDA_CHECK(call)                                                           \
  do {                                                                                    \
    const cudaError_t err_ = (call);                                                      \
    if (err_ != cudaSuccess)                                                              \
      ::nibble::fail("CUDA error ", cudaGetErrorName(err_), " (", cudaGetErrorString(err_), \
                     ") in ", #call, " at ", __FILE__, ":", __LINE__);                    \
  } while (0)

// After a kernel launch: configuration errors now, execution errors at the next sync.
#define NIBBLE_CUDA_CHECK_LAUNCH() NIBBLE_CUDA_CHECK(cudaGetLastError())

namespace nibble::cuda {
inline cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }

// RAII device buffer for the host-memory conveniences.
template <class T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t n) : n_(n) {
    if (n_) NIBBLE_CUDA_CHECK(cudaMalloc(&p_, n_ * sizeof(T)));
  }
  ~DeviceBuffer() {
    if (p_) cudaFree(p_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  T* get() const { return p_; }
  size_t size() const { return n_; }
  void upload(const T* h) { if (n_) NIBBLE_CUDA_CHECK(cudaMemcpy(p_, h, n_ * sizeof(T), cudaMemcpyHostToDevice)); }
  void download(T* h) const { if (n_) NIBBLE_CUDA_CHECK(cudaMemcpy(h, p_, n_ * sizeof(T), cudaMemcpyDeviceToHost)); }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};
}  // namespace nibble::cuda
