// DistEnv::from_environment: torchrun's and Slurm's conventions.
#include <cstdlib>
#include <string>

#include "nibble/dist/comm.hpp"
#include "nibble/error.hpp"

namespace nibble {
namespace {

const char* env(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : nullptr;
}

long parse_int(const char* name, const char* v, long lo, long hi) {
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  if (!end || *end != '\0' || x < lo || x > hi) fail("environment variable ", name, "=", v, " is not an integer in [", lo, ", ", hi, "]");
  return x;
}

}  // namespace

DistEnv DistEnv::from_environment() {
  DistEnv e;
  // torchrun / nibble launch first, then Slurm.
  const char* rank = env("RANK");
  const char* world = env("WORLD_SIZE");
  const char* local = env("LOCAL_RANK");
  const char* rank_name = "RANK";
  const char* world_name = "WORLD_SIZE";
  const char* local_name = "LOCAL_RANK";
  // Slurm: only inside a job step started by srun (SLURM_STEP_NUM_TASKS); a batch script's own
  // shell also carries SLURM_PROCID and SLURM_NTASKS, and a plain `nibble train` there is one
  // process, not rank 0 of the allocation.
  if (!rank && !world && env("SLURM_PROCID") && env("SLURM_STEP_NUM_TASKS")) {
    rank = env("SLURM_PROCID");
    world = env("SLURM_STEP_NUM_TASKS");
    local = env("SLURM_LOCALID");
    rank_name = "SLURM_PROCID";
    world_name = "SLURM_STEP_NUM_TASKS";
    local_name = "SLURM_LOCALID";
  }
  if (!rank && !world) return e;
  if (!rank || !world) fail("set both ", rank_name, " and ", world_name, " (or neither, for a single process)");
  e.world = static_cast<int>(parse_int(world_name, world, 1, 1 << 20));
  e.rank = static_cast<int>(parse_int(rank_name, rank, 0, e.world - 1));
  e.local_rank = local ? static_cast<int>(parse_int(local_name, local, 0, 1 << 20)) : e.rank;
  if (const char* a = env("MASTER_ADDR")) e.master_addr = a;
  if (const char* p = env("MASTER_PORT")) e.master_port = static_cast<int>(parse_int("MASTER_PORT", p, 1, 65535));
  if (const char* t = env("NIBBLE_DIST_TIMEOUT")) {
    char* end = nullptr;
    e.timeout_s = std::strtod(t, &end);
    if (!end || *end != '\0' || !(e.timeout_s > 0)) fail("NIBBLE_DIST_TIMEOUT=", t, " is not a positive number of seconds");
  }
  return e;
}

void check_slice_bounds(const char* what, const std::vector<int64_t>& offsets, int world) {
  if (static_cast<int>(offsets.size()) != world + 1)
    fail(what, ": ", offsets.size(), " slice bounds for ", world, " ranks (want ", world + 1, ")");
  for (size_t r = 0; r + 1 < offsets.size(); ++r)
    if (offsets[r] < 0 || offsets[r + 1] < offsets[r]) fail(what, ": slice bounds must not decrease (rank ", r, ")");
}

void Communicator::reduce_scatter_sum(float* x, const std::vector<int64_t>& offsets) {
  check_slice_bounds("reduce_scatter_sum", offsets, world());
  all_reduce_sum(x, offsets.back());
}

void Communicator::all_gather(float* x, const std::vector<int64_t>& offsets) {
  check_slice_bounds("all_gather", offsets, world());
  for (int r = 0; r < world(); ++r)
    broadcast(x + offsets[static_cast<size_t>(r)],
              static_cast<size_t>(offsets[static_cast<size_t>(r) + 1] - offsets[static_cast<size_t>(r)]) * sizeof(float), r);
}

}  // namespace nibble
