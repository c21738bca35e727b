// QAT's GPU state in a build without CUDA: a clear error.
#ifndef NIBBLE_WITH_CUDA
#include "nibble/error.hpp"
#include "nibble/qat/qat_state.hpp"

namespace nibble {
std::unique_ptr<QatState> make_cuda_qat_state(const QatLayout&, void*) {
  fail("QAT on the GPU needs the CUDA backend (this build has none)");
}
}  // namespace nibble
#endif
