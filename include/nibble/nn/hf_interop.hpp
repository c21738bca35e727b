#pragma once
// Hugging Face interop for LLaMA-architecture models: a directory with config.json
// (LlamaConfig) and model.safetensors (HF tensor names, HF's rotate_half rotary layout, which is
// nibble's own) converted to a nibble checkpoint directory and back. nibble's parameter names
// are HF's, so the weights move unchanged (f32; bf16/f16 inputs are widened exactly).
#include <string>

#include "nibble/nn/model.hpp"

namespace nibble {

// The model of an HF config.json; errors name the unsupported field (biases, a non-SiLU
// activation, rope scaling, head_dim ≠ hidden/heads). tokenizer: byte | gpt2 (which of nibble's
// tokenizers reads text for it; its vocabulary must fit in the model's).
ModelConfig model_config_from_hf(const Json& hf, const std::string& what, const std::string& tokenizer);
Json model_config_to_hf(const ModelConfig& m, const std::string& torch_dtype);

// HF directory → nibble checkpoint directory (config.json with the model and a bf16 recipe,
// model.safetensors in f32). A tied model's lm_head.weight, when present, must equal the
// embedding.
void import_hf(const std::string& hf_dir, const std::string& out_dir, const std::string& tokenizer);
// nibble checkpoint (run or checkpoint directory) → HF directory; dtype f32 or bf16.
void export_hf(const std::string& checkpoint, const std::string& out_dir, const std::string& dtype);

}  // namespace nibble
