// nibble eval: loss and perplexity of a checkpoint on a text file or a token data set.
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "args.hpp"
#include "commands.hpp"
#include "model_loading.hpp"
#include "nibble/data/dataset.hpp"
#include "nibble/data/loader.hpp"
#include "nibble/data/tokenizer.hpp"
#include "nibble/error.hpp"

namespace nibble::cli {

int run_eval(const std::vector<std::string>& argv) {
  Args a("eval", "nibble eval --checkpoint DIR (--text FILE | --data DIR) [options]",
         "Evaluates a checkpoint (a run directory or a checkpoint directory) under the recipe it\n"
         "was trained with: mean cross-entropy, perplexity, and bits per byte for byte-level\n"
         "models. --text evaluates the whole file (in windows of --seq tokens); --data the\n"
         "validation split of a token data set.");
  a.option("checkpoint", "DIR", "run or checkpoint directory");
  a.option("text", "FILE", "a UTF-8 text file");
  a.option("data", "DIR", "token shards (nibble data or llm.c); the val split is used");
  a.option("seq", "T", "tokens per window [default: the training --seq]");
  a.option("batch", "B", "windows per forward", "8");
  a.option("max-batches", "N", "stop after N batches (0 = all)", "0");
  a.option("device", "D", "cpu | cuda | auto (the GPU when one is present; default $NIBBLE_DEVICE or auto)", default_device());
  if (!a.parse(argv)) return 0;
  if (a.has("text") == a.has("data")) fail("give exactly one of --text FILE and --data DIR");
  LoadedModel m = load_model(a.required("checkpoint"), a.choice("device", {"cpu", "cuda", "auto"}));
  const int64_t seq = a.has("seq") ? a.integer("seq") : m.cfg.seq;
  const int64_t batch = a.integer("batch");
  if (seq < 1 || seq > m.cfg.model.max_seq) fail("--seq ", seq, " must be in [1, ", m.cfg.model.max_seq, "]");
  if (batch < 1) fail("--batch must be positive");
  std::unique_ptr<Tokenizer> tok = make_tokenizer(m.cfg.model.tokenizer);
  std::vector<uint16_t> tokens;
  std::string source;
  if (a.has("text")) {
    source = a.str("text");
    tokens = TokenDataset::from_text(source, *tok, 0.0).train;
  } else {
    source = a.str("data");
    const TokenDataset ds = TokenDataset::open(source);
    if (ds.tokenizer != m.cfg.model.tokenizer) fail(source, ": tokenized with ", ds.tokenizer, ", the model uses ", m.cfg.model.tokenizer);
    tokens = ds.val;
  }
  const double bytes = a.has("text") ? static_cast<double>(std::filesystem::file_size(source)) : 0;
  if (static_cast<int64_t>(tokens.size()) < seq + 1)
    fail(source, ": ", tokens.size(), " tokens is shorter than one window of ", seq + 1);
  DataLoader loader(tokens, batch, seq, 0, false);
  const int64_t windows = (static_cast<int64_t>(tokens.size()) - 1) / seq;
  int64_t nb = std::max<int64_t>(1, windows / batch);
  if (a.integer("max-batches") > 0) nb = std::min(nb, a.integer("max-batches"));
  StepContext ctx;
  ctx.seed = m.cfg.seed;
  double sum = 0;
  for (int64_t i = 0; i < nb; ++i) {
    const Batch b = loader.next();
    sum += m.model->forward(b.inputs.data(), b.targets.data(), b.batch_size, b.seq_len, ctx, false);
  }
  const double loss = sum / static_cast<double>(nb);
  const double evaluated = static_cast<double>(nb * batch * seq);
  std::printf("checkpoint  %s (model %s, recipe %s)\n", m.dir.c_str(), m.cfg.model.name.c_str(), m.cfg.recipe.name.c_str());
  std::printf("data        %s (%.0f tokens evaluated in %lld windows of %lld)\n", source.c_str(), evaluated,
              static_cast<long long>(nb * batch), static_cast<long long>(seq));
  std::printf("loss        %.4f nats/token\n", loss);
  std::printf("perplexity  %.3f\n", std::exp(loss));
  if (m.cfg.model.tokenizer == "byte") std::printf("bits/byte   %.4f\n", loss / std::log(2.0));
  else if (bytes > 0)
    std::printf("bits/byte   %.4f (over the file's %.0f bytes / %zu tokens)\n",
                loss / std::log(2.0) * static_cast<double>(tokens.size()) / bytes, bytes, tokens.size());
  return 0;
}

}  // namespace nibble::cli
