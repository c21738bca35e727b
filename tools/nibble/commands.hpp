#pragma once
// The subcommand table. Each subcommand lives in its own file (quant.cpp, ...).
#include <string>
#include <vector>

namespace nibble::cli {

struct Command {
  const char* name;
  const char* summary;
  int (*run)(const std::vector<std::string>& args);  // returns the exit code
};

const std::vector<Command>& commands();

int run_quant(const std::vector<std::string>& args);
int run_dequant(const std::vector<std::string>& args);
int run_synth(const std::vector<std::string>& args);
int run_train(const std::vector<std::string>& args);
int run_eval(const std::vector<std::string>& args);
int run_sample(const std::vector<std::string>& args);
int run_data(const std::vector<std::string>& args);
int run_bench(const std::vector<std::string>& args);
int run_sweep(const std::vector<std::string>& args);
int run_report(const std::vector<std::string>& args);
int run_analyze(const std::vector<std::string>& args);
int run_hf(const std::vector<std::string>& args);
int run_hessian(const std::vector<std::string>& args);
int run_qat(const std::vector<std::string>& args);
int run_export(const std::vector<std::string>& args);
int run_launch(const std::vector<std::string>& args);

}  // namespace nibble::cli
