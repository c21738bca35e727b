// nibble report: runs (or sweeps) → one Markdown page with plots.
#include <cstdio>

#include "args.hpp"
#include "commands.hpp"
#include "nibble/error.hpp"
#include "nibble/study/report.hpp"

namespace nibble::cli {

int run_report(const std::vector<std::string>& argv) {
  Args a("report", "nibble report RUN_DIR... --out DIR",
         "Renders training runs (their directories, or sweep directories whose runs are taken in\n"
         "order) into DIR/report.md: a table of model, recipe, seed, steps, tokens, final train and\n"
         "validation loss and tokens/s, with DIR/loss.svg and DIR/val_loss.svg.");
  a.option("out", "DIR", "where report.md and the plots go");
  a.option("baseline", "RUN", "add each run's steps to reach this run's final validation loss, and the speed-up");
  a.allow_positionals("RUN_DIR", "training run or sweep directories");
  if (!a.parse(argv)) return 0;
  write_runs_report(a.positionals(), a.required("out"), a.has("baseline") ? a.str("baseline") : "");
  std::printf("%s/report.md\n", a.str("out").c_str());
  return 0;
}

}  // namespace nibble::cli
