#include "nibble/tensor.hpp"

#include <limits>
#include <sstream>

namespace nibble {

std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << ']';
  return os.str();
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) {
    if (d < 0) fail("negative dimension in shape ", shape_str(s));
    if (d != 0 && n > std::numeric_limits<int64_t>::max() / d)
      fail("shape ", shape_str(s), " has too many elements");
    n *= d;
  }
  return n;
}

Tensor::Tensor(Shape shape, DType dtype)
    : shape_(std::move(shape)), dtype_(dtype), numel_(shape_numel(shape_)) {
  storage_.assign(dtype_storage_bytes(dtype_, static_cast<size_t>(numel_)), 0);
}

Tensor Tensor::reshaped(Shape shape) const {
  if (shape_numel(shape) != numel_)
    fail("cannot reshape ", shape_str(shape_), " to ", shape_str(shape));
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

namespace {
template <class Out>
Tensor convert(const Tensor& in) {
  Tensor out(in.shape(), dtype_of<Out>());
  Out* o = out.data<Out>();
  const int64_t n = in.numel();
  auto copy = [&](const auto* p) {
    for (int64_t i = 0; i < n; ++i) o[i] = static_cast<Out>(p[i]);
  };
  switch (in.dtype()) {
    case DType::F32: copy(in.data<float>()); break;
    case DType::F64: copy(in.data<double>()); break;
    case DType::I8: copy(in.data<int8_t>()); break;
    case DType::I16: copy(in.data<int16_t>()); break;
    case DType::I32: copy(in.data<int32_t>()); break;
    case DType::I64: copy(in.data<int64_t>()); break;
    case DType::U8: copy(in.data<uint8_t>()); break;
    case DType::U16:
      copy(in.data<uint16_t>());
      break;
    case DType::BF16: {
      const uint16_t* p = in.data<uint16_t>();
      for (int64_t i = 0; i < n; ++i) o[i] = static_cast<Out>(bf16_to_float(p[i]));
      break;
    }
    case DType::F16: {
      const uint16_t* p = in.data<uint16_t>();
      for (int64_t i = 0; i < n; ++i) o[i] = static_cast<Out>(f16_to_float(p[i]));
      break;
    }
    case DType::E4M3: {
      const uint8_t* p = in.data<uint8_t>();
      for (int64_t i = 0; i < n; ++i) o[i] = static_cast<Out>(e4m3_to_float(p[i]));
      break;
    }
    case DType::E8M0: {
      const uint8_t* p = in.data<uint8_t>();
      for (int64_t i = 0; i < n; ++i) o[i] = static_cast<Out>(e8m0_to_float(p[i]));
      break;
    }
    default:
      fail("cannot convert a ", dtype_name(in.dtype()),
           " tensor to numbers (4-bit codes need their scales: use the quantizer)");
  }
  return out;
}
}  // namespace

Tensor Tensor::to_f32() const { return dtype_ == DType::F32 ? *this : convert<float>(*this); }
Tensor Tensor::to_f64() const { return dtype_ == DType::F64 ? *this : convert<double>(*this); }

}  // namespace nibble
