#include <algorithm>
#include "args.hpp"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "nibble/error.hpp"

namespace nibble::cli {

Args::Args(std::string command, std::string synopsis, std::string description)
    : command_(std::move(command)), synopsis_(std::move(synopsis)), description_(std::move(description)) {}

void Args::option(const std::string& name, const std::string& value_name, const std::string& help,
                  std::optional<std::string> default_value) {
  opts_.push_back({name, value_name, help, std::move(default_value), false});
}
void Args::flag(const std::string& name, const std::string& help) {
  opts_.push_back({name, "", help, std::nullopt, true});
}

const Args::Opt* Args::find(const std::string& name) const {
  for (const auto& o : opts_)
    if (o.name == name) return &o;
  return nullptr;
}

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  size_t a = 0;
  while (a <= s.size()) {
    const size_t b = std::min(s.find(',', a), s.size());
    if (b > a) out.push_back(s.substr(a, b - a));
    a = b + 1;
  }
  return out;
}

void Args::allow_positionals(const std::string& value_name, const std::string& help) {
  positional_name_ = value_name;
  positional_help_ = help;
}

bool Args::parse(const std::vector<std::string>& argv) {
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    if (a == "--help" || a == "-h") {
      std::fputs(help().c_str(), stdout);
      return false;
    }
    if (a.rfind("--", 0) != 0) {
      if (positional_name_.empty()) fail("unexpected argument '", a, "' (options start with --; see --help)");
      positionals_.push_back(a);
      continue;
    }
    std::string name = a.substr(2), value;
    bool inline_value = false;
    if (const auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      inline_value = true;
    }
    const Opt* o = find(name);
    if (!o) fail("unknown option --", name, " (see nibble ", command_, " --help)");
    if (o->is_flag) {
      if (inline_value) fail("option --", name, " takes no value");
      values_[name] = "1";
      continue;
    }
    if (!inline_value) {
      if (i + 1 >= argv.size()) fail("option --", name, " needs a value (", o->value_name, ")");
      value = argv[++i];
    }
    if (values_.count(name)) fail("option --", name, " given twice");
    values_[name] = value;
  }
  return true;
}

bool Args::has(const std::string& name) const {
  if (values_.count(name)) return true;
  const Opt* o = find(name);
  return o && o->def.has_value();
}
bool Args::flag_set(const std::string& name) const { return values_.count(name) > 0; }
bool Args::given(const std::string& name) const { return values_.count(name) > 0; }

std::string Args::str(const std::string& name) const {
  if (auto it = values_.find(name); it != values_.end()) return it->second;
  const Opt* o = find(name);
  NIBBLE_CHECK(o != nullptr, "undeclared option ", name);
  if (!o->def) fail("option --", name, " is required");
  return *o->def;
}
std::string Args::required(const std::string& name) const {
  if (!has(name)) fail("option --", name, " is required (see nibble ", command_, " --help)");
  return str(name);
}

namespace {
// Strict numeric parse: the whole value must be consumed.
template <class V>
V parse_number(const std::string& name, const std::string& v, const char* what) {
  V out{};
  const auto r = std::from_chars(v.data(), v.data() + v.size(), out);
  if (r.ec != std::errc() || r.ptr != v.data() + v.size() || v.empty())
    fail("option --", name, ": '", v, "' is not ", what);
  return out;
}
}  // namespace

int64_t Args::integer(const std::string& name) const {
  return parse_number<int64_t>(name, str(name), "an integer");
}
uint64_t Args::unsigned_integer(const std::string& name) const {
  return parse_number<uint64_t>(name, str(name), "a non-negative integer");
}
double Args::number(const std::string& name) const {
  return parse_number<double>(name, str(name), "a number");
}
double Args::minutes_as_seconds(const std::string& name) const {
  const double m = number(name);
  if (!(m >= 0) || !std::isfinite(m)) fail("option --", name, ": '", str(name), "' minutes must be a finite number >= 0");
  return m * 60.0;
}
std::string Args::choice(const std::string& name, const std::vector<std::string>& choices) const {
  const std::string v = str(name);
  std::string list;
  for (const auto& c : choices) {
    if (c == v) return v;
    list += (list.empty() ? "" : ", ") + c;
  }
  fail("option --", name, ": unknown value '", v, "' (valid: ", list, ")");
}

std::string Args::help() const {
  std::ostringstream os;
  os << "usage: " << synopsis_ << "\n\n" << description_ << "\n\n";
  if (!positional_name_.empty()) os << "arguments:\n  " << positional_name_ << "...  " << positional_help_ << "\n\n";
  os << "options:\n";
  for (const auto& o : opts_) {
    std::string head = "  --" + o.name + (o.is_flag ? "" : " " + o.value_name);
    os << head;
    if (head.size() < 26) os << std::string(26 - head.size(), ' ');
    else os << "\n" << std::string(26, ' ');
    // Indent continuation lines of the help text.
    std::string h = o.help;
    for (size_t p = h.find('\n'); p != std::string::npos; p = h.find('\n', p + 1))
      h.insert(p + 1, std::string(26, ' '));
    os << h;
    if (o.def && !o.def->empty()) os << " [default: " << *o.def << "]";
    os << "\n";
  }
  os << "  --help                  show this help\n";
  return os.str();
}

}  // namespace nibble::cli
