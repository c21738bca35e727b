#pragma once
// Host ↔ device copies for the GPU tests: a cudaMalloc'ed copy of a host vector (the caller
// frees it) and a host copy of n device elements; a failed CUDA call fails the test.
#include <gtest/gtest.h>

#include <cuda_runtime.h>

#include <vector>

template <class T>
T* to_device(const std::vector<T>& h) {
  T* d = nullptr;
  EXPECT_EQ(cudaMalloc(&d, h.size() * sizeof(T)), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  return d;
}

template <class T>
std::vector<T> from_device(const T* d, size_t n) {
  std::vector<T> h(n);
  EXPECT_EQ(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  return h;
}
