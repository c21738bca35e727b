#pragma once
// Whole-file reads with errors that name the path, and atomic writes: the bytes go to a
// temporary file in the same directory, are fsynced, then renamed over the target, so a
// crash leaves either the old file or the new one, never a torn one.
#include <string>
#include <string_view>

namespace nibble {

std::string read_file(const std::string& path);  // throws "PATH: cannot open: REASON"

// Fsync: the data and the rename reach the disk before returning (checkpoints, anything
// a crash must not lose). RenameOnly: still atomic (never a torn file), but the kernel
// flushes when it likes — for bulk outputs such as .npy results that can be recomputed.
enum class Durability { Fsync, RenameOnly };
void write_file_atomic(const std::string& path, std::string_view bytes,
                       Durability durability = Durability::Fsync);
bool file_exists(const std::string& path);
void fsync_directory(const std::string& dir);

}  // namespace nibble
