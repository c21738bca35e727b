// nibble export --packed: a QAT checkpoint with really packed integer codes.
#include <cstdio>
#include <filesystem>

#include "args.hpp"
#include "commands.hpp"
#include "nibble/error.hpp"
#include "nibble/qat/packed_export.hpp"

namespace nibble::cli {

int run_export(const std::vector<std::string>& argv) {
  Args a("export", "nibble export --checkpoint DIR --packed OUT",
         "Writes a QAT checkpoint (nibble qat) with its quantized projections as bit-packed integer\n"
         "codes and per-row (or per-group) scales: OUT/model.packed.safetensors + OUT/config.json.\n"
         "nibble eval and nibble sample read OUT directly and give the QAT model's numbers.");
  a.option("checkpoint", "DIR", "a nibble qat run or its final/ directory");
  a.option("packed", "OUT", "output directory");
  if (!a.parse(argv)) return 0;
  export_packed(a.required("checkpoint"), a.required("packed"));
  const auto bytes = std::filesystem::file_size(a.str("packed") + "/model.packed.safetensors");
  std::printf("%s/model.packed.safetensors (%.2f MB)\n", a.str("packed").c_str(), static_cast<double>(bytes) / 1e6);
  return 0;
}

}  // namespace nibble::cli
