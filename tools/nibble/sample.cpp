// nibble sample: generate text from a checkpoint.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "args.hpp"
#include "commands.hpp"
#include "model_loading.hpp"
#include "nibble/data/tokenizer.hpp"
#include "nibble/error.hpp"
#include "nibble/philox.hpp"

namespace nibble::cli {

int run_sample(const std::vector<std::string>& argv) {
  Args a("sample", "nibble sample --checkpoint DIR --prompt TEXT [--tokens N] [--temperature T] [--top-k K] [--seed N]",
         "Generates a continuation of the prompt, token by token, with the model's forward under\n"
         "its training recipe. Temperature 0 is greedy decoding.");
  a.option("checkpoint", "DIR", "run or checkpoint directory");
  a.option("prompt", "TEXT", "the text to continue", "");
  a.option("tokens", "N", "tokens to generate", "200");
  a.option("temperature", "T", "softmax temperature (0 = greedy)", "0.8");
  a.option("top-k", "K", "sample among the K most likely tokens (0 = all)", "40");
  a.option("seed", "N", "Philox seed of the sampler", "1");
  a.option("device", "D", "cpu | cuda | auto (the GPU when one is present; default $NIBBLE_DEVICE or auto)", default_device());
  if (!a.parse(argv)) return 0;
  LoadedModel m = load_model(a.required("checkpoint"), a.choice("device", {"cpu", "cuda", "auto"}));
  std::unique_ptr<Tokenizer> tok = make_tokenizer(m.cfg.model.tokenizer);
  const int64_t n_new = a.integer("tokens");
  const double temp = a.number("temperature");
  const int64_t top_k = a.integer("top-k");
  const uint64_t seed = a.unsigned_integer("seed");
  if (n_new < 0 || temp < 0 || top_k < 0) fail("--tokens, --temperature and --top-k must be >= 0");
  std::vector<int32_t> ids = {tok->eot()};
  const std::vector<int32_t> p = tok->encode(a.str("prompt"));
  ids.insert(ids.end(), p.begin(), p.end());
  const int64_t vocab = tok->vocab_size();  // logits beyond it are padding rows
  std::fputs(a.str("prompt").c_str(), stdout);
  StepContext ctx;
  ctx.seed = m.cfg.seed;
  std::string pending;  // bytes not yet printable (a partial UTF-8 sequence)
  for (int64_t i = 0; i < n_new; ++i) {
    const int64_t ctx_len = std::min<int64_t>(static_cast<int64_t>(ids.size()), m.cfg.model.max_seq);
    const int32_t* window = ids.data() + ids.size() - static_cast<size_t>(ctx_len);
    m.model->forward(window, nullptr, 1, ctx_len, ctx, false);
    const std::vector<float> row = m.model->logits_row(ctx_len - 1);
    const float* logits = row.data();
    std::vector<int32_t> order(static_cast<size_t>(vocab));
    std::iota(order.begin(), order.end(), 0);
    int32_t next;
    if (temp == 0) {
      next = static_cast<int32_t>(std::max_element(logits, logits + vocab) - logits);
    } else {
      const int64_t k = top_k > 0 ? std::min(top_k, vocab) : vocab;
      std::partial_sort(order.begin(), order.begin() + k, order.end(),
                        [&](int32_t x, int32_t y) { return logits[x] > logits[y]; });
      std::vector<double> pr(static_cast<size_t>(k));
      const double mx = logits[order[0]];
      double z = 0;
      for (int64_t j = 0; j < k; ++j) z += pr[static_cast<size_t>(j)] = std::exp((logits[order[static_cast<size_t>(j)]] - mx) / temp);
      double u = philox_uniform(seed, 0x5a, static_cast<uint64_t>(i)) * z, acc = 0;
      next = order[static_cast<size_t>(k - 1)];
      for (int64_t j = 0; j < k; ++j) {
        acc += pr[static_cast<size_t>(j)];
        if (u < acc) { next = order[static_cast<size_t>(j)]; break; }
      }
    }
    ids.push_back(next);
    if (next == tok->eot()) break;
    pending += tok->decode({next});
    // print whole UTF-8 sequences only
    size_t cut = pending.size();
    for (size_t back = 1; back <= std::min<size_t>(3, pending.size()); ++back) {
      const unsigned char ch = static_cast<unsigned char>(pending[pending.size() - back]);
      if ((ch & 0xC0) == 0xC0) {  // a lead byte: is its sequence complete?
        const size_t need = (ch & 0xE0) == 0xC0 ? 2 : (ch & 0xF0) == 0xE0 ? 3 : 4;
        if (back < need) cut = pending.size() - back;
        break;
      }
      if ((ch & 0x80) == 0) break;
    }
    std::fwrite(pending.data(), 1, cut, stdout);
    pending.erase(0, cut);
    std::fflush(stdout);
  }
  std::fputs((pending + "\n").c_str(), stdout);
  return 0;
}

}  // namespace nibble::cli
