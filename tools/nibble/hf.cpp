// nibble hf import|export: Hugging Face LLaMA directories <-> nibble checkpoints.
#include <cstdio>

#include "args.hpp"
#include "commands.hpp"
#include "nibble/error.hpp"
#include "nibble/nn/hf_interop.hpp"

namespace nibble::cli {

int run_hf(const std::vector<std::string>& argv) {
  Args a("hf", "nibble hf import --hf DIR --out DIR [--tokenizer gpt2|byte]\n"
               "       nibble hf export --checkpoint DIR --out DIR [--dtype f32|bf16]",
         "Moves LLaMA-architecture models between Hugging Face's layout (config.json +\n"
         "model.safetensors, HF tensor names and rotary layout) and nibble checkpoints, so that a\n"
         "pretrained model can be evaluated, sampled or trained further (and QAT'd) by nibble.");
  a.allow_positionals("import|export", "the direction");
  a.option("hf", "DIR", "import: the Hugging Face model directory");
  a.option("checkpoint", "DIR", "export: a nibble run or checkpoint directory");
  a.option("out", "DIR", "output directory");
  a.option("tokenizer", "T", "import: which nibble tokenizer reads text for the model (byte | gpt2)", "gpt2");
  a.option("dtype", "D", "export: f32 | bf16", "f32");
  if (!a.parse(argv)) return 0;
  if (a.positionals().size() != 1) fail("nibble hf: say import or export (see --help)");
  const std::string what = a.positionals()[0];
  if (what == "import") {
    import_hf(a.required("hf"), a.required("out"), a.choice("tokenizer", {"gpt2", "byte"}));
  } else if (what == "export") {
    export_hf(a.required("checkpoint"), a.required("out"), a.choice("dtype", {"f32", "bf16"}));
  } else {
    fail("nibble hf: '", what, "' (use import or export)");
  }
  std::printf("%s\n", a.str("out").c_str());
  return 0;
}

}  // namespace nibble::cli
