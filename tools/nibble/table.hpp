#pragma once
// Plain-text tables for terminal output (columns padded to their widest cell).
#include <string>
#include <vector>

namespace nibble::cli {

class Table {
 public:
  explicit Table(std::vector<std::string> header) : header_(std::move(header)) {}
  void row(std::vector<std::string> cells) { rows_.push_back(std::move(cells)); }
  std::string str() const;

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};

// Fixed-point formatting; infinities print as "inf".
std::string fmt(double v, int decimals);

}  // namespace nibble::cli
