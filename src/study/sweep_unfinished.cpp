// The sweep report's unfinished runs: a run that a machine's time limit cut short still holds
// evidence up to its last evaluation, and at 124m metis needs longer than a lent machine is held.
// It is compared with the other runs of its seed at the evaluations it reached, never mixed into
// the final-loss table.
#include <algorithm>
#include <cmath>
#include <limits>

#include "nibble/report/markdown.hpp"
#include "nibble/study/sweep.hpp"

namespace nibble {

namespace {

// The validation loss `r` logged at exactly `tokens` (NaN if it did not evaluate there).
double val_at(const SweepRun& r, double tokens) {
  for (size_t i = 0; i < r.eval_tokens.size() && i < r.eval_val.size(); ++i)
    if (r.eval_tokens[i] == tokens) return r.eval_val[i];
  return std::numeric_limits<double>::quiet_NaN();
}

std::string signed_pct(double v) {
  return std::isfinite(v) ? (v >= 0 ? "+" : "") + report::fmt_fixed(v, 2) + "%" : std::string("—");
}

}  // namespace

MatchedGaps matched_gaps(const std::vector<SweepRun>& runs, const SweepRun& run, size_t last) {
  MatchedGaps m;
  const SweepRun* bf16 = nullptr;
  for (const SweepRun& r : runs)
    if (r.recipe == "bf16" && r.seed == run.seed) bf16 = &r;
  if (bf16 == nullptr || run.recipe == "bf16") return m;
  for (size_t i = 0; i < run.eval_tokens.size() && i < run.eval_val.size(); ++i)
    if (std::isfinite(run.eval_val[i]) && std::isfinite(val_at(*bf16, run.eval_tokens[i])))
      m.tokens.push_back(run.eval_tokens[i]);
  if (m.tokens.size() > last) m.tokens.erase(m.tokens.begin(), m.tokens.end() - static_cast<ptrdiff_t>(last));
  if (m.tokens.empty()) return m;
  std::vector<const SweepRun*> rows = {&run};
  for (const SweepRun& r : runs)
    if (r.seed == run.seed && r.recipe != "bf16" && &r != &run &&
        std::none_of(rows.begin(), rows.end(), [&](const SweepRun* x) { return x->recipe == r.recipe; }))
      rows.push_back(&r);
  for (const SweepRun* r : rows) {
    m.recipes.push_back(r->recipe);
    std::vector<double> g;
    for (double t : m.tokens) {
      const double b = val_at(*bf16, t);
      g.push_back(100.0 * (val_at(*r, t) - b) / b);
    }
    m.gap_pct.push_back(std::move(g));
  }
  return m;
}

std::string unfinished_runs_section(const SweepConfig& cfg, const SweepResult& r) {
  if (r.unfinished.empty()) return "";
  std::vector<SweepRun> all = r.runs;
  all.insert(all.end(), r.unfinished.begin(), r.unfinished.end());
  std::string md = "## Unfinished runs\n\nNot in the tables above. Each is compared with the other runs of its seed at " +
                   std::string("the evaluations it reached (validation gap to that seed's bf16 run); the learning ") +
                   "rate follows the configured steps, so at one step all of them had the same schedule.\n\n";
  for (const SweepRun& u : r.unfinished) {
    const double total = static_cast<double>(cfg.base.steps * cfg.base.tokens_per_step());
    md += "**" + u.recipe + ", seed " + std::to_string(u.seed) + "**: step " + std::to_string(u.steps) + " of " +
          std::to_string(cfg.base.steps) + " (" + report::fmt_si(u.tokens) + " of " + report::fmt_si(total) +
          " tokens), " + report::fmt_si(u.tokens_per_s) + " tokens/s";
    const MatchedGaps m = matched_gaps(all, u);
    if (u.recipe == "bf16") {  // the reference itself: the seed's gaps wait for it
      md += "; the reference of seed " + std::to_string(u.seed) + ", so that seed's gaps are not in the tables until it finishes.\n\n";
      continue;
    }
    if (m.tokens.empty()) {
      md += "; no evaluation in common with a bf16 run of seed " + std::to_string(u.seed) + ".\n\n";
      continue;
    }
    md += ".\n\n";
    std::vector<std::string> header = {"recipe"};
    for (double t : m.tokens) header.push_back(report::fmt_si(t) + " tokens");
    std::vector<report::Align> align(header.size(), report::Align::Right);
    align[0] = report::Align::Left;
    report::MarkdownTable t(header, align);
    for (size_t k = 0; k < m.recipes.size(); ++k) {
      std::vector<std::string> cells = {m.recipes[k]};
      for (double g : m.gap_pct[k]) cells.push_back(signed_pct(g));
      t.add_row(cells);
    }
    md += t.str() + "\n";
  }
  return md;
}

}  // namespace nibble
