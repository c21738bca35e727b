#include "nibble/fileio.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "nibble/error.hpp"

namespace nibble {

std::string read_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) fail(path, ": is a directory, expected a file");
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) fail(path, ": cannot open: ", std::strerror(errno));
  struct stat st {};
  std::string out;
  if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) out.reserve(static_cast<size_t>(st.st_size));
  // One read per chunk straight into the string: no stream buffering or extra copies.
  char buf[1 << 16];
  for (;;) {
    if (out.capacity() > out.size()) {
      const size_t old = out.size();
      out.resize(out.capacity());
      const ssize_t n = ::read(fd, out.data() + old, out.size() - old);
      if (n < 0 && errno == EINTR) { out.resize(old); continue; }
      if (n < 0) {
        const std::string why = std::strerror(errno);
        ::close(fd);
        fail(path, ": read error: ", why);
      }
      out.resize(old + static_cast<size_t>(n));
      if (n == 0) break;
      continue;
    }
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const std::string why = std::strerror(errno);
      ::close(fd);
      fail(path, ": read error: ", why);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

bool file_exists(const std::string& path) {
  std::error_code ec;
  return std::filesystem::exists(path, ec);
}

void fsync_directory(const std::string& dir) {
  const int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return;  // best effort: some filesystems refuse directory fds
  ::fsync(fd);
  ::close(fd);
}

void write_file_atomic(const std::string& path, std::string_view bytes, Durability durability) {
  const std::filesystem::path target(path);
  const std::string dir = target.has_parent_path() ? target.parent_path().string() : ".";
  std::string tmp = (std::filesystem::path(dir) / ("." + target.filename().string() + ".tmpXXXXXX")).string();
  const int fd = ::mkstemp(tmp.data());
  if (fd < 0) fail(path, ": cannot create a temporary file in ", dir, ": ", std::strerror(errno));
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      const std::string why = std::strerror(errno);
      ::close(fd);
      ::unlink(tmp.c_str());
      fail(path, ": write failed: ", why);
    }
    done += static_cast<size_t>(n);
  }
  ::fchmod(fd, 0644);
  const bool durable = durability == Durability::Fsync;
  if ((durable && ::fsync(fd) != 0) || ::close(fd) != 0) {
    const std::string why = std::strerror(errno);
    ::unlink(tmp.c_str());
    fail(path, ": fsync/close failed: ", why);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    ::unlink(tmp.c_str());
    fail(path, ": rename failed: ", why);
  }
  if (durable) fsync_directory(dir);
}

}  // namespace nibble
