// The NCCL backend of Communicator (comm.hpp): gradients all-reduced on the GPUs. Rank 0 draws
// NCCL's unique id and sends it over the TCP communicator, which also carries the host
// collectives (losses, barriers). A collective that fails or makes no progress within the
// timeout aborts the communicator and throws, so a dead peer stops every rank with a message
// rather than a hang.
#if defined(NIBBLE_WITH_NCCL)
#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <thread>

#include "nibble/dist/comm.hpp"
#include "nibble/error.hpp"

namespace nibble {
namespace {

#define NIBBLE_NCCL_CHECK(call, who)                                                        \
  do {                                                                                      \
    const ncclResult_t r_ = (call);                                                         \
    if (r_ != ncclSuccess) fail(who, ": ", #call, " failed: ", ncclGetErrorString(r_));   \
  } while (0)

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(std::unique_ptr<Communicator> tcp, const DistEnv& env) : tcp_(std::move(tcp)), env_(env) {
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) fail(who(), ": no CUDA device");
    const int dev = devices == 1 ? 0 : env.local_rank;  // one visible GPU: this task's own
    if (dev >= devices)
      fail(who(), ": LOCAL_RANK ", env.local_rank, " but this node has ", devices, " GPU(s): launch at most ", devices,
           " processes per node");
    if (cudaSetDevice(dev) != cudaSuccess) fail(who(), ": cudaSetDevice(", dev, ") failed");
    ncclUniqueId id{};
    if (env.rank == 0) NIBBLE_NCCL_CHECK(ncclGetUniqueId(&id), who());
    tcp_->broadcast(&id, sizeof id, 0);
    NIBBLE_NCCL_CHECK(ncclCommInitRank(&comm_, env.world, id, env.rank), who());
    tcp_->barrier();
  }
  ~NcclCommunicator() override {
    if (comm_) ncclCommDestroy(comm_);
  }

  int rank() const override { return env_.rank; }
  int world() const override { return env_.world; }
  std::string backend() const override { return "nccl"; }
  void all_reduce_sum(double* x, int64_t n) override { tcp_->all_reduce_sum(x, n); }
  void all_reduce_sum(float* x, int64_t n) override { tcp_->all_reduce_sum(x, n); }
  void broadcast(void* data, size_t bytes, int root) override { tcp_->broadcast(data, bytes, root); }
  void barrier() override { tcp_->barrier(); }
  bool peer_lost() override { return tcp_->peer_lost(); }

  void all_reduce_sum_device(float* d_x, int64_t n, void* stream) override {
    enqueue_all_reduce_sum_device(d_x, n, stream);
    finish_device(stream);
  }
  void enqueue_all_reduce_sum_device(float* d_x, int64_t n, void* stream) override {
    if (!comm_) fail(who(), ": the communicator was aborted by an earlier error");
    NIBBLE_NCCL_CHECK(ncclAllReduce(d_x, d_x, static_cast<size_t>(n), ncclFloat32, ncclSum, comm_,
                                    static_cast<cudaStream_t>(stream)),
                      who());
  }
  void finish_device(void* stream) override { wait(static_cast<cudaStream_t>(stream)); }
  // Variable slices: one broadcast per rank, grouped (ncclAllGather wants equal counts).
  void all_gather_device(float* d_x, const std::vector<int64_t>& offsets, void* stream) override {
    per_slice("all_gather_device", d_x, offsets, stream, [&](float* slice, size_t count, int owner, cudaStream_t st) {
      return ncclBroadcast(slice, slice, count, ncclFloat32, owner, comm_, st);
    });
  }
  // Variable slices: one reduce per rank to that rank, grouped (ncclReduceScatter wants equal
  // counts). In place: the owner's slice receives the sum.
  void reduce_scatter_sum_device(float* d_x, const std::vector<int64_t>& offsets, void* stream) override {
    per_slice("reduce_scatter_sum_device", d_x, offsets, stream, [&](float* slice, size_t count, int owner,
                                                                     cudaStream_t st) {
      return ncclReduce(slice, slice, count, ncclFloat32, ncclSum, owner, comm_, st);
    });
  }
  // Host arrays go through the TCP communicator it keeps (see all_reduce_sum).
  void reduce_scatter_sum(float* x, const std::vector<int64_t>& offsets) override { tcp_->reduce_scatter_sum(x, offsets); }

 private:
  std::string who() const { return "rank " + std::to_string(env_.rank) + " (nccl)"; }

  // The ZeRO-1 collectives: op(slice, count, owner, stream) for every rank's slice of d_x in one
  // NCCL group, then waits. An empty slice (a rank past the last parameter) is skipped, by
  // every rank alike.
  template <class Op>
  void per_slice(const char* what, float* d_x, const std::vector<int64_t>& offsets, void* stream, Op op) {
    if (!comm_) fail(who(), ": the communicator was aborted by an earlier error");
    check_slice_bounds(what, offsets, env_.world);
    const auto st = static_cast<cudaStream_t>(stream);
    NIBBLE_NCCL_CHECK(ncclGroupStart(), who());
    for (int r = 0; r < env_.world; ++r) {
      const int64_t b = offsets[static_cast<size_t>(r)], e = offsets[static_cast<size_t>(r) + 1];
      if (e > b) NIBBLE_NCCL_CHECK(op(d_x + b, static_cast<size_t>(e - b), r, st), who());
    }
    NIBBLE_NCCL_CHECK(ncclGroupEnd(), who());
    wait(st);
  }

  // Polls the stream and NCCL's asynchronous error state until the collective is done.
  void wait(cudaStream_t st) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(env_.timeout_s);
    int64_t polls = 0;
    for (;;) {
      const cudaError_t q = cudaStreamQuery(st);
      if (q == cudaSuccess) return;
      if (q != cudaErrorNotReady) fail(who(), ": CUDA error during the all-reduce: ", cudaGetErrorString(q));
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(comm_, &async);
      if (async != ncclSuccess && async != ncclInProgress) {
        ncclCommAbort(comm_);
        comm_ = nullptr;
        fail(who(), ": NCCL error during the all-reduce: ", ncclGetErrorString(async), " (a peer died?)");
      }
      if (++polls % 2000 == 0 && tcp_->peer_lost()) {  // every ~0.1 s
        ncclCommAbort(comm_);
        comm_ = nullptr;
        fail(who(), ": a peer rank exited during the all-reduce (its connection closed)");
      }
      if (std::chrono::steady_clock::now() > deadline) {
        ncclCommAbort(comm_);
        comm_ = nullptr;
        fail(who(), ": the all-reduce made no progress within ", env_.timeout_s,
             " s (a rank died or hangs; NIBBLE_DIST_TIMEOUT sets the limit)");
      }
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

  std::unique_ptr<Communicator> tcp_;
  DistEnv env_;
  ncclComm_t comm_ = nullptr;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<Communicator> tcp, const DistEnv& env) {
  return std::make_unique<NcclCommunicator>(std::move(tcp), env);
}

}  // namespace nibble
#endif
