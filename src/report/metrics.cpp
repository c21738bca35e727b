#include "nibble/report/metrics.hpp"

#include <cmath>
#include <filesystem>
#include <limits>
#include <unordered_set>

#include "nibble/error.hpp"
#include "nibble/fileio.hpp"

namespace nibble::report {

namespace {

bool blank(std::string_view s) {
  for (char c : s)
    if (c != ' ' && c != '\t' && c != '\r') return false;
  return true;
}

// Json::parse reports "WHAT: JSON error at line L, column C: ...". Each record is a single
// line, so "line 1" only repeats what "PATH:LINE" already says; drop it.
std::string without_inner_line(std::string msg) {
  const std::string inner = "JSON error at line 1, column ";
  if (const size_t at = msg.find(inner); at != std::string::npos)
    msg.replace(at, inner.size(), "JSON error at column ");
  return msg;
}

}  // namespace

MetricsLog parse_metrics_jsonl(std::string_view text, const std::string& what) {
  MetricsLog log;
  log.path = what;
  size_t line_no = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    ++line_no;
    const size_t nl = text.find('\n', pos);
    const bool terminated = nl != std::string_view::npos;
    const std::string_view line = text.substr(pos, terminated ? nl - pos : std::string_view::npos);
    pos = terminated ? nl + 1 : text.size();
    if (blank(line)) continue;
    const std::string where = what + ":" + std::to_string(line_no);
    Json row;
    try {
      row = Json::parse(line, where);
    } catch (const Error& e) {
      if (!terminated) {
        log.warnings.push_back(where + ": skipped a truncated last line (" +
                               std::to_string(line.size()) +
                               " bytes without a newline, as a run killed mid-write leaves)");
        break;
      }
      throw Error(without_inner_line(e.what()));
    }
    if (!row.is_object())
      fail(where, ": expected a JSON object per line, got ", row.type_name());
    log.rows.push_back(std::move(row));
    log.line_numbers.push_back(line_no);
  }
  return log;
}

MetricsLog read_metrics_jsonl(const std::string& path) {
  return parse_metrics_jsonl(read_file(path), path);
}

std::vector<double> MetricsLog::column(const std::string& key) const {
  std::vector<double> out;
  out.reserve(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    const Json* v = rows[i].find(key);
    if (v == nullptr || v->is_null()) {
      out.push_back(std::numeric_limits<double>::quiet_NaN());
    } else if (v->is_number()) {
      out.push_back(v->as_double());
    } else {
      fail(path, ":", i < line_numbers.size() ? line_numbers[i] : i + 1, ": field '", key,
           "' is a ", v->type_name(), ", expected a number");
    }
  }
  return out;
}

bool MetricsLog::has(const std::string& key) const {
  for (const Json& r : rows)
    if (const Json* v = r.find(key); v != nullptr && !v->is_null()) return true;
  return false;
}

std::vector<std::string> MetricsLog::keys() const {
  std::vector<std::string> out;
  std::unordered_set<std::string> seen;
  for (const Json& r : rows)
    for (const auto& [k, v] : r.as_object())
      if (seen.insert(k).second) out.push_back(k);
  return out;
}

MetricsWriter::MetricsWriter(const std::string& path, int64_t resume_step) : path_(path) {
  if (resume_step >= 0 && std::filesystem::exists(path)) {
    std::ifstream in(path);
    std::string line, kept;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      try {
        const Json j = Json::parse(line, path);
        if (j.contains("step") && j.at("step").as_int64() > resume_step) continue;
      } catch (const Error&) {
        continue;  // a torn last line from a killed run
      }
      kept += line + "\n";
    }
    write_file_atomic(path, kept, Durability::Fsync);
  } else if (resume_step < 0) {
    write_file_atomic(path, "", Durability::Fsync);
  }
  out_.open(path, std::ios::app);
  if (!out_) fail(path, ": cannot open for appending");
}

void MetricsWriter::write(const Json& row) {
  out_ << row.dump() << "\n";
  out_.flush();
}

}  // namespace nibble::report
