#pragma once
// Host tensor: a shape, an element type and contiguous row-major storage.
// 4-bit types store two codes per byte (SPEC §1 packing).
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "nibble/dtype.hpp"
#include "nibble/error.hpp"

namespace nibble {

using Shape = std::vector<int64_t>;

std::string shape_str(const Shape& s);  // "[3, 4]"
int64_t shape_numel(const Shape& s);    // throws on negative dims or overflow

template <class T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::F32; }
template <> constexpr DType dtype_of<double>() { return DType::F64; }
template <> constexpr DType dtype_of<int8_t>() { return DType::I8; }
template <> constexpr DType dtype_of<int16_t>() { return DType::I16; }
template <> constexpr DType dtype_of<int32_t>() { return DType::I32; }
template <> constexpr DType dtype_of<int64_t>() { return DType::I64; }
template <> constexpr DType dtype_of<uint8_t>() { return DType::U8; }
template <> constexpr DType dtype_of<uint16_t>() { return DType::U16; }

class Tensor {
 public:
  Tensor() = default;
  Tensor(Shape shape, DType dtype);  // zero-filled

  template <class T>
  static Tensor from_vector(Shape shape, const std::vector<T>& values) {
    Tensor t(std::move(shape), dtype_of<T>());
    NIBBLE_CHECK(static_cast<int64_t>(values.size()) == t.numel(), "from_vector size");
    if (!values.empty()) std::memcpy(t.raw(), values.data(), values.size() * sizeof(T));
    return t;
  }

  const Shape& shape() const { return shape_; }
  int64_t dim(size_t i) const { return shape_.at(i); }
  size_t rank() const { return shape_.size(); }
  DType dtype() const { return dtype_; }
  int64_t numel() const { return numel_; }
  size_t nbytes() const { return storage_.size(); }

  uint8_t* raw() { return storage_.data(); }
  const uint8_t* raw() const { return storage_.data(); }

  template <class T> T* data() { check_type<T>(); return reinterpret_cast<T*>(storage_.data()); }
  template <class T> const T* data() const {
    check_type<T>();
    return reinterpret_cast<const T*>(storage_.data());
  }
  template <class T> std::vector<T> to_vector() const {
    const T* p = data<T>();
    return std::vector<T>(p, p + numel_);
  }

  // Same storage under another shape of equal element count.
  Tensor reshaped(Shape shape) const;
  // Numeric conversion of any float/int type (not the 4-bit or scale codes) to f32/f64.
  Tensor to_f32() const;
  Tensor to_f64() const;

 private:
  // Code types are accessed through their storage word: uint8_t for the 8-bit and
  // packed 4-bit codes, uint16_t for bf16/f16 bit patterns.
  template <class T> void check_type() const {
    if constexpr (std::is_same_v<T, uint8_t>) {
      if (dtype_ == DType::E4M3 || dtype_ == DType::E8M0 || dtype_ == DType::E2M1 ||
          dtype_ == DType::INT4)
        return;
    }
    if constexpr (std::is_same_v<T, uint16_t>) {
      if (dtype_ == DType::BF16 || dtype_ == DType::F16) return;
    }
    if (dtype_of<T>() != dtype_)
      fail("tensor of dtype ", dtype_name(dtype_), " accessed as ", dtype_name(dtype_of<T>()));
  }
  Shape shape_;
  DType dtype_ = DType::F32;
  int64_t numel_ = 0;
  std::vector<uint8_t> storage_;
};

}  // namespace nibble
