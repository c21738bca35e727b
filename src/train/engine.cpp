// Choosing an engine by device name.
#include "nibble/cuda.hpp"
#include "nibble/error.hpp"
#include "nibble/train/engine.hpp"

namespace nibble {

std::string resolve_device(const std::string& device) {
  if (device == "cpu" || device == "cuda") return device;
  if (device == "auto") return cuda::device_count() > 0 ? "cuda" : "cpu";
  fail("device '", device, "' (use cpu, cuda or auto)");
}

std::unique_ptr<TrainEngine> make_engine(const std::string& device, const ModelConfig& cfg, const EngineOptions& opts) {
  const std::string d = resolve_device(device);
  if (d == "cpu") return make_cpu_engine(cfg);
  if (!cuda::built_with_cuda())
    fail("--device cuda: this nibble was built without CUDA (nvcc was not found at configure time); use --device cpu");
  if (cuda::device_count() == 0) fail("--device cuda: no CUDA device is visible (use --device cpu or auto)");
  return make_cuda_engine(cfg, opts);
}

#ifndef NIBBLE_WITH_CUDA
std::unique_ptr<TrainEngine> make_cuda_engine(const ModelConfig&, const EngineOptions&) {
  fail("--device cuda: this nibble was built without CUDA; use --device cpu");
}
#endif

}  // namespace nibble
