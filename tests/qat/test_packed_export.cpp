// Packed QAT export: bit packing round trips, the decoded model equals the QAT run's
// fake-quantized weights bit for bit, the codes take bits/8 bytes per weight, eval reads it.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "nibble/error.hpp"
#include "nibble/qat/packed_export.hpp"
#include "nibble/qat/qat_trainer.hpp"
#include "nibble/safetensors.hpp"
#include "nibble/train/checkpoint.hpp"
#include "support/small_run.hpp"

using namespace nibble;
using nibble::testing::ScratchDir;
namespace fs = std::filesystem;

TEST(PackedExport, CodesRoundTripForEveryWidth) {
  for (const int levels : {3, 4, 8, 16}) {
    std::vector<uint8_t> codes(1003);
    for (size_t i = 0; i < codes.size(); ++i) codes[i] = static_cast<uint8_t>((i * 7 + i / 3) % levels);
    const std::vector<uint8_t> packed = pack_codes(codes.data(), 1003, levels);
    const size_t expect = levels == 3 ? (1003 + 4) / 5 : (1003 * (levels == 4 ? 2 : levels == 8 ? 3 : 4) + 7) / 8;
    EXPECT_EQ(packed.size(), expect) << levels;
    EXPECT_EQ(unpack_codes(packed, 1003, levels), codes) << levels;
  }
  std::vector<uint8_t> bad = {243};
  EXPECT_THROW(unpack_codes(bad, 5, 3), Error);  // not five ternary digits
  EXPECT_THROW(unpack_codes({0x0F}, 5, 4), Error);  // 5 codes of 2 bits need 2 bytes
  EXPECT_THROW(unpack_codes({0xFF, 0xFF}, 5, 3), Error);  // 255 is not five ternary digits
}

TEST(PackedExport, DecodesToTheFakeQuantizedWeightsAndEvalReadsIt) {
  ScratchDir d;
  TrainConfig base = nibble::testing::small_run_config(d, "base");
  base.steps = 10;
  nibble::testing::train_quietly(base);
  for (const double bits : {1.58, 2.0, 3.0}) {
    SCOPED_TRACE(bits);
    QatConfig q;
    q.checkpoint = d.file("base");
    q.spec = QatSpec::make(bits, "auto");
    q.train.text_file = d.file("text.txt");
    q.train.steps = 3;
    q.train.batch = 2;
    q.train.seq = 32;
    q.train.eval_batches = 1;
    q.train.out = d.file("q");
    run_qat(q, true);
    export_packed(d.file("q"), d.file("p"));
    const std::vector<ParamInfo> params = transformer_param_layout(base.model);
    const std::vector<float> decoded = load_packed(d.file("p/model.packed.safetensors"), params);
    const Checkpoint fq = load_checkpoint(d.file("q/final"), params, false);
    ASSERT_EQ(decoded.size(), fq.weights.size());
    EXPECT_EQ(0, std::memcmp(decoded.data(), fq.weights.data(), decoded.size() * 4));
    const SafeTensors st = read_safetensors(d.file("p/model.packed.safetensors"));
    const int64_t n = 128 * 64;  // mlp.down_proj: [64, 128]
    const int64_t bytes = st.get("model.layers.0.mlp.down_proj.weight.codes").numel();
    EXPECT_EQ(bytes, bits < 2 ? (n + 4) / 5 : n * static_cast<int64_t>(bits) / 8);
    const auto e1 = nibble::testing::run_nibble("eval --device cpu --checkpoint " + d.file("q") + " --text " + d.file("text.txt") + " --max-batches 1");
    const auto e2 = nibble::testing::run_nibble("eval --device cpu --checkpoint " + d.file("p") + " --text " + d.file("text.txt") + " --max-batches 1");
    ASSERT_EQ(e1.code, 0) << e1.out;
    ASSERT_EQ(e2.code, 0) << e2.out;
    EXPECT_EQ(e1.out.substr(e1.out.find("loss")), e2.out.substr(e2.out.find("loss")));
    fs::remove_all(d.file("q"));
    fs::remove_all(d.file("p"));
  }
  EXPECT_THROW(export_packed(d.file("base"), d.file("p")), Error);  // not a QAT checkpoint
}
