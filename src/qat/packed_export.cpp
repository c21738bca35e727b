// Packed export of QAT checkpoints (see packed_export.hpp).
#include "nibble/qat/packed_export.hpp"

#include <filesystem>

#include "nibble/error.hpp"
#include "nibble/fileio.hpp"
#include "nibble/qat/qat_model.hpp"
#include "nibble/safetensors.hpp"
#include "nibble/train/checkpoint.hpp"
#include "nibble/train/train_config.hpp"

namespace nibble {
namespace fs = std::filesystem;

namespace {
int bits_for(int levels) { return levels <= 4 ? 2 : (levels <= 8 ? 3 : 4); }
}  // namespace

std::vector<uint8_t> pack_codes(const uint8_t* codes, int64_t n, int levels) {
  if (levels == 3) {  // base-3 digits, five per byte (3^5 = 243)
    std::vector<uint8_t> out(static_cast<size_t>((n + 4) / 5), 0);
    for (int64_t i = 0; i < n; i += 5) {
      int v = 0;
      for (int k = 4; k >= 0; --k) v = v * 3 + (i + k < n ? codes[i + k] : 0);
      out[static_cast<size_t>(i / 5)] = static_cast<uint8_t>(v);
    }
    return out;
  }
  const int b = bits_for(levels);
  std::vector<uint8_t> out(static_cast<size_t>((n * b + 7) / 8), 0);
  for (int64_t i = 0; i < n; ++i)
    for (int k = 0; k < b; ++k)
      if ((codes[i] >> k) & 1) out[static_cast<size_t>((i * b + k) / 8)] |= static_cast<uint8_t>(1u << ((i * b + k) % 8));
  return out;
}

std::vector<uint8_t> unpack_codes(const std::vector<uint8_t>& packed, int64_t n, int levels) {
  std::vector<uint8_t> out(static_cast<size_t>(n));
  if (levels == 3) {
    if (static_cast<int64_t>(packed.size()) < (n + 4) / 5) fail("packed codes: ", packed.size(), " bytes cannot hold ", n, " ternary codes");
    for (int64_t i = 0; i < n; i += 5) {
      int v = packed[static_cast<size_t>(i / 5)];
      if (v >= 243) fail("packed codes: byte ", i / 5, " = ", v, " is not five ternary digits");
      for (int k = 0; k < 5 && i + k < n; ++k) {
        out[static_cast<size_t>(i + k)] = static_cast<uint8_t>(v % 3);
        v /= 3;
      }
    }
    return out;
  }
  const int b = bits_for(levels);
  if (static_cast<int64_t>(packed.size()) < (n * b + 7) / 8) fail("packed codes: ", packed.size(), " bytes cannot hold ", n, " codes of ", b, " bits");
  for (int64_t i = 0; i < n; ++i) {
    int v = 0;
    for (int k = 0; k < b; ++k) v |= ((packed[static_cast<size_t>((i * b + k) / 8)] >> ((i * b + k) % 8)) & 1) << k;
    if (v >= levels) fail("packed codes: code ", v, " at element ", i, " is outside [0, ", levels, ")");
    out[static_cast<size_t>(i)] = static_cast<uint8_t>(v);
  }
  return out;
}

void export_packed(const std::string& qat_checkpoint, const std::string& out_dir) {
  const std::string ck = resolve_checkpoint_dir(qat_checkpoint);
  const std::string qat_file = (fs::path(ck) / "qat.safetensors").string();
  if (!fs::exists(qat_file)) fail(ck, ": not a QAT checkpoint (no qat.safetensors; train it with nibble qat)");
  const SafeTensors lat = read_safetensors(qat_file);
  const Json spec_json = Json::parse(lat.metadata.at("qat"), qat_file + ": metadata qat");
  const QatSpec spec = qat_spec_from_json(spec_json);
  const TrainConfig tc = TrainConfig::from_json(read_checkpoint_config(ck), ck + "/config.json");
  const std::vector<ParamInfo> params = transformer_param_layout(tc.model);
  SafeTensors out;
  for (const ParamInfo& p : params) {
    const Tensor w = lat.get("latent." + p.name).to_f32();
    if (!is_qat_projection(p)) {
      out.add(p.name, w);
      continue;
    }
    const Tensor a = lat.get("scale." + p.name).to_f32();
    const int64_t rows = p.shape[0], cols = p.shape[1];
    std::vector<uint8_t> codes(static_cast<size_t>(rows * cols));
    qat_codes(spec, w.data<float>(), a.data<float>(), rows, cols, codes.data());
    const std::vector<uint8_t> packed = pack_codes(codes.data(), rows * cols, qat_levels(spec));
    Tensor c({static_cast<int64_t>(packed.size())}, DType::U8);
    std::copy(packed.begin(), packed.end(), c.data<uint8_t>());
    out.add(p.name + ".codes", std::move(c));
    out.add(p.name + ".scales", a);
  }
  out.metadata["qat"] = spec_json.dump();
  out.metadata["format"] = "nibble-packed-qat";
  fs::create_directories(out_dir);
  write_safetensors((fs::path(out_dir) / "model.packed.safetensors").string(), out);
  write_file_atomic((fs::path(out_dir) / "config.json").string(), tc.to_json().dump(2) + "\n", Durability::Fsync);
}

std::vector<float> load_packed(const std::string& path, const std::vector<ParamInfo>& params) {
  const SafeTensors st = read_safetensors(path);
  if (!st.metadata.count("qat")) fail(path, ": no qat metadata (not a packed QAT model)");
  const QatSpec spec = qat_spec_from_json(Json::parse(st.metadata.at("qat"), path + ": metadata qat"));
  std::vector<float> w;
  int64_t total = 0;
  for (const ParamInfo& p : params) total = std::max(total, p.offset + p.numel);
  w.assign(static_cast<size_t>(total), 0.0f);
  for (const ParamInfo& p : params) {
    if (!is_qat_projection(p)) {
      const Tensor t = st.get(p.name).to_f32();
      if (t.shape() != p.shape) fail(path, ": tensor '", p.name, "' has shape ", shape_str(t.shape()), ", expected ", shape_str(p.shape));
      std::copy(t.data<float>(), t.data<float>() + p.numel, w.begin() + p.offset);
      continue;
    }
    const int64_t rows = p.shape[0], cols = p.shape[1];
    const Tensor& c = st.get(p.name + ".codes");
    const Tensor a = st.get(p.name + ".scales").to_f32();
    if (a.numel() != rows * spec.groups_per_row(cols)) fail(path, ": '", p.name, ".scales' has ", a.numel(), " values, expected ", rows * spec.groups_per_row(cols));
    const std::vector<uint8_t> packed(c.data<uint8_t>(), c.data<uint8_t>() + c.numel());
    const std::vector<uint8_t> codes = unpack_codes(packed, rows * cols, qat_levels(spec));
    qat_decode(spec, codes.data(), a.data<float>(), rows, cols, w.data() + p.offset);
  }
  return w;
}

}  // namespace nibble
