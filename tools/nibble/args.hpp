#pragma once
// A small long-option parser shared by the subcommands: `--name value`, `--name=value`
// and boolean flags; unknown options and missing values are errors naming the option;
// `--help` prints the generated option list.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace nibble::cli {

// "a,b,,c" → {"a", "b", "c"} (list-valued options such as --recipes).
std::vector<std::string> split_list(const std::string& s);

class Args {
 public:
  Args(std::string command, std::string synopsis, std::string description);

  // Declarations (in the order they are shown by --help).
  void option(const std::string& name, const std::string& value_name, const std::string& help,
              std::optional<std::string> default_value = std::nullopt);
  void flag(const std::string& name, const std::string& help);
  // Accept arguments that are not options (e.g. directories); without this they are errors.
  void allow_positionals(const std::string& value_name, const std::string& help);
  const std::vector<std::string>& positionals() const { return positionals_; }

  // Parses; returns false when --help was asked for (help already printed).
  bool parse(const std::vector<std::string>& argv);

  bool has(const std::string& name) const;      // given on the command line (or has a default)
  bool given(const std::string& name) const;    // given on the command line
  bool flag_set(const std::string& name) const;
  std::string str(const std::string& name) const;  // throws when absent and no default
  std::string required(const std::string& name) const;
  int64_t integer(const std::string& name) const;  // strict: the whole value must be an integer
  uint64_t unsigned_integer(const std::string& name) const;
  double number(const std::string& name) const;
  // A duration given in minutes (decimals allowed, not negative), returned in seconds.
  double minutes_as_seconds(const std::string& name) const;
  // The value must be one of `choices`.
  std::string choice(const std::string& name, const std::vector<std::string>& choices) const;

  std::string help() const;

 private:
  struct Opt {
    std::string name, value_name, help;
    std::optional<std::string> def;
    bool is_flag = false;
  };
  const Opt* find(const std::string& name) const;
  std::string command_, synopsis_, description_;
  std::vector<Opt> opts_;
  std::map<std::string, std::string> values_;
  std::string positional_name_, positional_help_;
  std::vector<std::string> positionals_;
};

}  // namespace nibble::cli
