#pragma once
// GPU tests skip (and CTest shows them as skipped, never passed) when no CUDA device is visible.
#include <gtest/gtest.h>

#include "nibble/cuda.hpp"

#define REQUIRE_GPU()                                                         \
  do {                                                                        \
    if (::nibble::cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device"; \
  } while (0)
