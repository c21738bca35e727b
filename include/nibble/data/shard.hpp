#pragma once
// Token shards in llm.c's layout (karpathy/llm.c, dev/data/data_common.py), so that shards
// made by either tool work in both:
//   header  256 x int32, little endian: [0] = 20240520 (magic), [1] = 1 (version),
//           [2] = number of tokens, the rest 0
//   body    the tokens as uint16, little endian (so vocabularies up to 65536 ids)
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace nibble {

inline constexpr int32_t kShardMagic = 20240520;
inline constexpr int32_t kShardVersion = 1;
inline constexpr int64_t kShardHeaderInts = 256;
inline constexpr int64_t kShardHeaderBytes = kShardHeaderInts * 4;

// The file's bytes, written atomically (fileio.hpp; renamed, not fsynced: shards can be
// remade from their text). More than 2^31 - 1 tokens do not fit the header: an error.
void write_shard(const std::string& path, std::span<const uint16_t> tokens);

// Reads and validates a shard; errors name the file and say what is wrong: bad magic
// (value found and expected), unsupported version, a file shorter or longer than its header
// says, a token id >= vocab_size (its index and value).
std::vector<uint16_t> read_shard(const std::string& path, int64_t vocab_size);

// The header's token count, after checking magic and version (reads only the header).
int64_t shard_token_count(const std::string& path);

}  // namespace nibble
