#include "nibble/quant/packed.hpp"

#include <charconv>

#include "nibble/error.hpp"
#include "nibble/quant/rht.hpp"

namespace nibble {

namespace {

Tensor f32_tensor(Shape shape, const std::vector<float>& v) { return Tensor::from_vector(std::move(shape), v); }

std::string meta_str(const SafeTensors& st, const std::string& key, const std::string& what) {
  const auto it = st.metadata.find(key);
  if (it == st.metadata.end()) fail(what, ": metadata field '", key, "' is missing (not a nibble packed file?)");
  return it->second;
}

int64_t meta_int(const SafeTensors& st, const std::string& key, const std::string& what) {
  const std::string v = meta_str(st, key, what);
  int64_t out = 0;
  const auto r = std::from_chars(v.data(), v.data() + v.size(), out);
  if (r.ec != std::errc() || r.ptr != v.data() + v.size())
    fail(what, ": metadata field '", key, "' = '", v, "' is not an integer");
  return out;
}

const Tensor& expect(const SafeTensors& st, const std::string& name, DType dt, const Shape& shape,
                     const std::string& what) {
  const Tensor* t = st.find(name);
  if (!t) fail(what, ": tensor '", name, "' is missing");
  if (t->dtype() != dt)
    fail(what, ": tensor '", name, "' has dtype ", dtype_name(t->dtype()), ", expected ", dtype_name(dt));
  if (t->shape() != shape)
    fail(what, ": tensor '", name, "' has shape ", shape_str(t->shape()), ", expected ", shape_str(shape));
  return *t;
}

}  // namespace

SafeTensors pack_to_safetensors(const PipelineResult& r) {
  const QuantizedMatrix& q = r.q;
  SafeTensors st;
  Tensor codes({q.rows, q.cols / 2}, DType::U8);
  std::copy(q.codes.begin(), q.codes.end(), codes.data<uint8_t>());
  st.add("codes", std::move(codes));
  const bool mx = !format_has_tensor_scale(q.spec.format);
  Tensor scales({q.scale_rows(), q.scale_cols()}, mx ? DType::E8M0 : DType::E4M3);
  std::copy(q.scales.begin(), q.scales.end(), scales.data<uint8_t>());
  st.add("scales", std::move(scales));
  st.add("tensor_scale", f32_tensor({1}, {q.tensor_scale}));
  if (!mx) st.add("tensor_amax", f32_tensor({1}, {q.tensor_amax}));
  std::string transforms;
  auto note = [&](const char* t) { transforms += (transforms.empty() ? "" : ",") + std::string(t); };
  if (!r.mean.empty()) {
    st.add("mean", f32_tensor({q.cols}, r.mean));
    note("center");
  }
  if (r.lowrank) {
    const LowRank& l = *r.lowrank;
    st.add("lowrank_u", f32_tensor({l.rows, l.rank}, l.u));
    st.add("lowrank_s", f32_tensor({l.rank}, l.s));
    st.add("lowrank_v", f32_tensor({l.cols, l.rank}, l.v));
    note("spectral");
  }
  if (!r.rht_signs.empty()) {
    st.add("rht_signs", f32_tensor({static_cast<int64_t>(r.rht_signs.size())}, r.rht_signs));
    note("rht");
  }
  auto& m = st.metadata;
  m["producer"] = "nibble";
  m["format"] = std::string(format_name(q.spec.format));
  m["grid"] = format_grid(q.spec.format) == Grid::E2M1 ? "e2m1" : "int4";
  m["block"] = std::to_string(q.spec.block);
  m["tile2d"] = q.spec.tile2d ? "true" : "false";
  m["scale_rule"] = std::string(scale_rule_name(q.spec.scale_rule));
  m["rounding"] = std::string(rounding_name(q.spec.rounding));
  m["seed"] = std::to_string(q.spec.seed);
  m["stream"] = std::to_string(q.spec.stream);
  m["rows"] = std::to_string(q.rows);
  m["cols"] = std::to_string(q.cols);
  m["rht"] = std::to_string(r.rht_signs.size());
  m["transforms"] = transforms.empty() ? "none" : transforms;
  m["code_layout"] = "row-major, two 4-bit codes per byte, element 2i in the low nibble";
  m["dequant"] = mx ? "x = grid(code) * 2^(scale-127)" : "x = (grid(code) * e4m3(scale)) * tensor_scale";
  m["reconstruct"] = "dequant, inverse RHT, + lowrank_u diag(lowrank_s) lowrank_v^T, + mean";
  return st;
}

PackedMatrix unpack_from_safetensors(const SafeTensors& st, const std::string& what) {
  PackedMatrix p;
  QuantizedMatrix& q = p.q;
  if (meta_str(st, "producer", what) != "nibble") fail(what, ": not a nibble packed file");
  try {
    q.spec.format = format_from_name(meta_str(st, "format", what));
    q.spec.scale_rule = scale_rule_from_name(meta_str(st, "scale_rule", what));
    q.spec.rounding = rounding_from_name(meta_str(st, "rounding", what));
  } catch (const Error& e) {
    fail(what, ": ", e.what());
  }
  q.spec.block = static_cast<int>(meta_int(st, "block", what));
  q.spec.tile2d = meta_str(st, "tile2d", what) == "true";
  q.rows = meta_int(st, "rows", what);
  q.cols = meta_int(st, "cols", what);
  try {
    validate_quant_shape(q.spec, q.rows, q.cols);
  } catch (const Error& e) {
    fail(what, ": ", e.what());
  }
  const bool mx = !format_has_tensor_scale(q.spec.format);
  const Tensor& codes = expect(st, "codes", DType::U8, {q.rows, q.cols / 2}, what);
  q.codes.assign(codes.raw(), codes.raw() + codes.nbytes());
  const Tensor& scales = expect(st, "scales", mx ? DType::E8M0 : DType::E4M3, {q.scale_rows(), q.scale_cols()}, what);
  q.scales.assign(scales.raw(), scales.raw() + scales.nbytes());
  q.tensor_scale = expect(st, "tensor_scale", DType::F32, {1}, what).data<float>()[0];
  if (!mx) q.tensor_amax = expect(st, "tensor_amax", DType::F32, {1}, what).data<float>()[0];
  if (st.find("mean")) p.mean = expect(st, "mean", DType::F32, {q.cols}, what).to_vector<float>();
  if (const Tensor* s = st.find("rht_signs")) {
    const int64_t n = s->rank() == 1 ? s->dim(0) : -1;
    p.rht_signs = expect(st, "rht_signs", DType::F32, {n}, what).to_vector<float>();
    try {
      validate_rht(static_cast<int>(n), q.cols, p.rht_signs);
    } catch (const Error& e) {
      fail(what, ": ", e.what());
    }
  }
  if (st.find("lowrank_s")) {
    const Tensor& s = *st.find("lowrank_s");
    const int64_t k = s.rank() == 1 ? s.dim(0) : -1;
    LowRank l;
    l.rows = q.rows;
    l.cols = q.cols;
    l.rank = static_cast<int>(k);
    l.s = expect(st, "lowrank_s", DType::F32, {k}, what).to_vector<float>();
    l.u = expect(st, "lowrank_u", DType::F32, {q.rows, k}, what).to_vector<float>();
    l.v = expect(st, "lowrank_v", DType::F32, {q.cols, k}, what).to_vector<float>();
    p.lowrank = std::move(l);
  }
  return p;
}

std::vector<float> PackedMatrix::reconstruct() const {
  std::vector<float> y = dequantize(q);
  undo_transforms(y.data(), q.rows, q.cols, mean, rht_signs, lowrank ? &*lowrank : nullptr);
  return y;
}

}  // namespace nibble
