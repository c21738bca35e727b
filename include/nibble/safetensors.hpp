#pragma once
// safetensors read/write. Dtypes: F32, F16, BF16, I32, I64, U8, U16, F8_E4M3, F8_E8M0
// (plus F64, I8, I16). E2M1/INT4 codes are stored packed as U8 (two per byte), with the
// logical layout described in the metadata by the writer of the file.
// The header is validated: size limit (100 MB), JSON syntax, known dtypes, shapes,
// data_offsets inside the data section, sizes matching shape×dtype, no overlaps.
#include <map>
#include <string>
#include <vector>

#include "nibble/tensor.hpp"

namespace nibble {

struct SafeTensors {
  // Tensors in file order (sorted by name when written).
  std::vector<std::pair<std::string, Tensor>> tensors;
  std::map<std::string, std::string> metadata;  // the "__metadata__" entry
  std::string source;  // the file it was read from (for error messages); may be empty

  const Tensor& get(const std::string& name) const;  // throws naming the missing tensor
  const Tensor* find(const std::string& name) const;
  void add(std::string name, Tensor t);              // throws on a duplicate name
};

SafeTensors read_safetensors(const std::string& path);
SafeTensors parse_safetensors(const std::string& bytes, const std::string& what);
// Writes atomically (temporary file, fsync, rename).
void write_safetensors(const std::string& path, const SafeTensors& st);
std::string serialize_safetensors(const SafeTensors& st);

// safetensors dtype string <-> DType ("F8_E4M3" <-> E4M3, ...).
std::string safetensors_dtype_name(DType t);
DType dtype_from_safetensors_name(const std::string& name, const std::string& what);

}  // namespace nibble
