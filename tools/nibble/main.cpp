// nibble — 4-bit LLM training. Entry point: dispatches to one file per subcommand.
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "commands.hpp"
#include "nibble/error.hpp"

namespace {

void print_usage(std::FILE* out) {
  std::fprintf(out,
               "nibble — 4-bit LLM training (NVFP4, MXFP4, UFP4/INT4, mean-bias centring, RHT)\n\n"
               "usage: nibble <command> [options]      (nibble <command> --help for details)\n\n"
               "commands:\n");
  for (const auto& c : nibble::cli::commands())
    std::fprintf(out, "  %-10s %s\n", c.name, c.summary);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") ||
      !std::strcmp(argv[1], "help")) {
    print_usage(stdout);
    return argc < 2 ? 2 : 0;
  }
  if (!std::strcmp(argv[1], "--version")) {
    std::printf("nibble 0.1.0\n");
    return 0;
  }
  const std::string name = argv[1];
  std::vector<std::string> args(argv + 2, argv + argc);
  for (const auto& c : nibble::cli::commands()) {
    if (name != c.name) continue;
    try {
      return c.run(args);
    } catch (const nibble::Error& e) {
      std::fprintf(stderr, "nibble %s: error: %s\n", c.name, e.what());
      return 1;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "nibble %s: error: %s\n", c.name, e.what());
      return 1;
    }
  }
  std::fprintf(stderr, "nibble: unknown command '%s'\n\n", name.c_str());
  print_usage(stderr);
  return 2;
}
