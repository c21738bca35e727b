#pragma once
// `nibble data`: text files -> token shards (data.cpp). Registered in commands.cpp.
#include <string>
#include <vector>

namespace nibble::cli {

int run_data(const std::vector<std::string>& args);

}  // namespace nibble::cli
