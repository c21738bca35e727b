#include "nibble/data/shard.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>

#include "nibble/error.hpp"
#include "nibble/fileio.hpp"

namespace nibble {

namespace {

void put_u32(char* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xFFu);
}
int32_t get_i32(const unsigned char* p) {
  return static_cast<int32_t>(static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
                              (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24));
}

// An open file that closes itself; errors name the path.
class File {
 public:
  explicit File(const std::string& path) : path_(path) {
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec)) fail(path, ": is a directory, expected a token shard");
    fd_ = ::open(path.c_str(), O_RDONLY);
    if (fd_ < 0) fail(path, ": cannot open: ", std::strerror(errno));
  }
  ~File() { ::close(fd_); }
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  int64_t size() const {
    struct stat st {};
    if (::fstat(fd_, &st) != 0) fail(path_, ": cannot stat: ", std::strerror(errno));
    return static_cast<int64_t>(st.st_size);
  }
  // Reads exactly n bytes (fewer only at end of file); returns the count read.
  size_t read(void* dst, size_t n) {
    size_t done = 0;
    while (done < n) {
      const ssize_t r = ::read(fd_, static_cast<char*>(dst) + done, n - done);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) fail(path_, ": read error: ", std::strerror(errno));
      if (r == 0) break;
      done += static_cast<size_t>(r);
    }
    return done;
  }

 private:
  std::string path_;
  int fd_ = -1;
};

// Reads and checks the header; returns the token count and leaves the file at the body.
int64_t read_header(File& f, const std::string& path, int64_t file_size) {
  unsigned char h[kShardHeaderBytes];
  if (file_size < kShardHeaderBytes || f.read(h, sizeof h) != sizeof h)
    fail(path, ": truncated token shard: ", file_size, " bytes, shorter than the ",
         kShardHeaderBytes, "-byte header");
  const int32_t magic = get_i32(h), version = get_i32(h + 4), count = get_i32(h + 8);
  if (magic != kShardMagic)
    fail(path, ": bad magic ", magic, " (expected ", kShardMagic,
         "): not a token shard in llm.c's layout");
  if (version != kShardVersion)
    fail(path, ": token shard version ", version, " is not supported (expected ", kShardVersion,
         ": uint16 tokens)");
  if (count < 0) fail(path, ": negative token count ", count, " in the header");
  const int64_t expected = kShardHeaderBytes + 2 * static_cast<int64_t>(count);
  if (file_size != expected)
    fail(path, ": size mismatch: the header says ", count, " tokens (", expected, " bytes) but the file has ",
         file_size, " bytes", file_size < expected ? " (truncated)" : " (trailing bytes)");
  return count;
}

}  // namespace

void write_shard(const std::string& path, std::span<const uint16_t> tokens) {
  if (tokens.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max()))
    fail(path, ": ", tokens.size(), " tokens do not fit one shard (at most 2^31 - 1)");
  std::string bytes(static_cast<size_t>(kShardHeaderBytes) + 2 * tokens.size(), '\0');
  put_u32(bytes.data(), static_cast<uint32_t>(kShardMagic));
  put_u32(bytes.data() + 4, static_cast<uint32_t>(kShardVersion));
  put_u32(bytes.data() + 8, static_cast<uint32_t>(tokens.size()));
  char* body = bytes.data() + kShardHeaderBytes;
  for (size_t i = 0; i < tokens.size(); ++i) {
    body[2 * i] = static_cast<char>(tokens[i] & 0xFFu);
    body[2 * i + 1] = static_cast<char>(tokens[i] >> 8);
  }
  write_file_atomic(path, bytes, Durability::RenameOnly);
}

int64_t shard_token_count(const std::string& path) {
  File f(path);
  return read_header(f, path, f.size());
}

std::vector<uint16_t> read_shard(const std::string& path, int64_t vocab_size) {
  File f(path);
  const int64_t count = read_header(f, path, f.size());
  // Straight into the vector: shards are hundreds of MB, a staging copy would double that.
  std::vector<uint16_t> tokens(static_cast<size_t>(count));
  const size_t want = tokens.size() * sizeof(uint16_t);
  if (f.read(tokens.data(), want) != want)
    fail(path, ": truncated token shard: the file shrank while being read");
  if constexpr (std::endian::native == std::endian::big)
    for (uint16_t& t : tokens) t = static_cast<uint16_t>((t >> 8) | (t << 8));
  for (size_t i = 0; i < tokens.size(); ++i)
    if (tokens[i] >= vocab_size)
      fail(path, ": token ", tokens[i], " at index ", i, " is outside the vocabulary (vocab_size ",
           vocab_size, ")");
  return tokens;
}

}  // namespace nibble
