#pragma once
// Collectives between the processes of a data-parallel run (one process per GPU, or per CPU
// engine). Two backends share this interface:
//   "tcp"  — sockets through rank 0 (a star): host buffers, sums taken at rank 0 in rank order,
//            so every rank gets the same bits; works anywhere, used on the CPU and to exchange
//            NCCL's unique id;
//   "nccl" — NCCL on the GPUs (src/dist/cuda/nccl_comm.cu): device buffers, NVLink / network.
// Every call is collective: all ranks make the same calls in the same order. A rank that dies
// or stops answering makes the others fail with an error naming it within `timeout_s`, never
// hang.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace nibble {

// Where this process sits in the run, from the launcher's environment: torchrun's RANK,
// WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT, or, inside an srun job step, Slurm's
// SLURM_PROCID, SLURM_STEP_NUM_TASKS, SLURM_LOCALID (set MASTER_ADDR/MASTER_PORT to the first
// node). No variables: a single process (world 1).
struct DistEnv {
  int rank = 0, world = 1, local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  double timeout_s = 300.0;  // NIBBLE_DIST_TIMEOUT: how long a collective waits for a peer
  bool distributed() const { return world > 1; }
  static DistEnv from_environment();
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world() const = 0;
  virtual std::string backend() const = 0;
  // x ← Σ over ranks of x (host arrays), the same bits on every rank.
  virtual void all_reduce_sum(double* x, int64_t n) = 0;
  virtual void all_reduce_sum(float* x, int64_t n) = 0;
  // x ← Σ over ranks of x for a device array of the CUDA engine (stream: its cudaStream_t).
  // The TCP backend goes through the host.
  virtual void all_reduce_sum_device(float* d_x, int64_t n, void* stream) = 0;
  // The same, queued on `stream` without waiting (NCCL: a bucket reduced while the backward
  // goes on); finish_device waits for everything queued on `stream`, with the timeout. The TCP
  // backend runs it at once (it has no asynchronous path).
  virtual void enqueue_all_reduce_sum_device(float* d_x, int64_t n, void* stream) { all_reduce_sum_device(d_x, n, stream); }
  virtual void finish_device(void* /*stream*/) {}
  // root's bytes to every rank.
  virtual void broadcast(void* data, size_t bytes, int root) = 0;
  // ZeRO-1's all-gather: rank r's slice [offsets[r], offsets[r+1]) of x to every rank, in place
  // (offsets: world() + 1 bounds). Host arrays: one broadcast per rank.
  virtual void all_gather(float* x, const std::vector<int64_t>& offsets);
  // The same for a device array of the CUDA engine (NCCL: grouped broadcasts on `stream`; the
  // TCP backend goes through the host).
  virtual void all_gather_device(float* d_x, const std::vector<int64_t>& offsets, void* stream) = 0;
  // ZeRO-1's reduce-scatter: afterwards rank r's slice [offsets[r], offsets[r+1]) of x holds the
  // sum over the ranks of that slice, the same bits all_reduce_sum gives there; the rest of x is
  // unspecified. Host arrays; the default is a whole all-reduce, the TCP backend sends each rank
  // only its slice back.
  virtual void reduce_scatter_sum(float* x, const std::vector<int64_t>& offsets);
  // The same for a device array (NCCL: one reduce per slice to its owner, grouped; the TCP
  // backend goes through the host).
  virtual void reduce_scatter_sum_device(float* d_x, const std::vector<int64_t>& offsets, void* stream) = 0;
  virtual void barrier() = 0;
  // Whether a peer's connection has closed (its process exited), without blocking: lets a wait
  // on the GPU notice a dead rank before its timeout.
  virtual bool peer_lost() { return false; }
};

// Errors unless `offsets` holds world + 1 non-decreasing slice bounds (what: the collective).
void check_slice_bounds(const char* what, const std::vector<int64_t>& offsets, int world);

// Connects the ranks of `env` over TCP (rank 0 listens on MASTER_PORT). Throws nibble::Error
// naming the address, port and rank when the rendezvous does not complete within the timeout.
std::unique_ptr<Communicator> make_tcp_communicator(const DistEnv& env);
// NCCL over the GPUs (each rank on device LOCAL_RANK), bootstrapped through `tcp` (which the
// returned communicator keeps for host collectives). Throws in a build without CUDA.
std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<Communicator> tcp, const DistEnv& env);
bool built_with_nccl();

}  // namespace nibble
