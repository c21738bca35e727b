// The CUDA API in a build without CUDA: no devices, and a clear error for everything else.
#ifndef NIBBLE_WITH_CUDA
#include "nibble/cuda.hpp"
#include "nibble/error.hpp"

namespace nibble::cuda {

namespace {
[[noreturn]] void no_cuda() {
  fail("this nibble was built without CUDA (nvcc was not found at configure time); "
       "rebuild on a machine with the CUDA toolkit or use --device cpu");
}
}  // namespace

struct QuantScratch {};
bool built_with_cuda() { return false; }
int device_count() { return 0; }
std::string device_summary() { return "no CUDA (CPU-only build)"; }
void select_device(int) { no_cuda(); }
QuantScratch* make_quant_scratch() { no_cuda(); }
void free_quant_scratch(QuantScratch*) {}
void quantize_dequantize(const float*, int64_t, int64_t, const QuantSpec&, float*, QuantScratch*, void*) { no_cuda(); }
void quantize_packed(const float*, int64_t, int64_t, const QuantSpec&, uint8_t*, uint8_t*, float*,
                     QuantScratch*, void*) { no_cuda(); }
void quantize_for_gemm(const float*, int64_t, int64_t, const QuantSpec&, bool, void*, float*, QuantScratch*, void*,
                       bool) {
  no_cuda();
}
void reset_quant_scratch(QuantScratch*, void*) { no_cuda(); }
void* quant_scratch_slot(QuantScratch*) { no_cuda(); }
void check_finite(QuantScratch*, void*) { no_cuda(); }
void rht_forward(float*, int64_t, int64_t, int, const float*, void*) { no_cuda(); }
void rht_inverse(float*, int64_t, int64_t, int, const float*, void*) { no_cuda(); }
std::vector<float> quantize_dequantize_host(const float*, int64_t, int64_t, const QuantSpec&) { no_cuda(); }
QuantizedMatrix quantize_host(const float*, int64_t, int64_t, const QuantSpec&) { no_cuda(); }
std::vector<float> rht_forward_host(const float*, int64_t, int64_t, int, const std::vector<float>&, bool) {
  no_cuda();
}

}  // namespace nibble::cuda
#endif
