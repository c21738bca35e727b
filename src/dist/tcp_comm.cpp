// The TCP backend of Communicator (comm.hpp): a star through rank 0. Every message carries a
// header (the collective and its size), so ranks that call different collectives fail with a
// message instead of exchanging garbage. Reductions run at rank 0 in rank order
// (((x₀ + x₁) + x₂) + …), then rank 0 sends the result to everyone: the same bits everywhere.
#ifndef _GNU_SOURCE
#define _GNU_SOURCE  // POLLRDHUP
#endif
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "nibble/dist/comm.hpp"
#include "nibble/error.hpp"

#if defined(NIBBLE_WITH_CUDA)
#include <cuda_runtime.h>
#endif

namespace nibble {
namespace {

using Clock = std::chrono::steady_clock;

enum class Op : uint32_t { SumF64 = 1, SumF32 = 2, Broadcast = 3, Barrier = 4, ReduceScatter = 5 };
const char* op_name(uint32_t op) {
  switch (op) {
    case 1: return "all_reduce(double)";
    case 2: return "all_reduce(float)";
    case 3: return "broadcast";
    case 4: return "barrier";
    case 5: return "reduce_scatter(float)";
    default: return "unknown";
  }
}

struct Header {
  uint32_t magic = 0x4E42444Cu;  // "NBDL"
  uint32_t op = 0;
  uint64_t bytes = 0;
};

class Socket {
 public:
  Socket() = default;
  explicit Socket(int fd) : fd_(fd) {}
  Socket(Socket&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Socket& operator=(Socket&& o) noexcept {
    if (this != &o) {
      close_fd();
      fd_ = o.fd_;
      o.fd_ = -1;
    }
    return *this;
  }
  ~Socket() { close_fd(); }
  int fd() const { return fd_; }
  bool valid() const { return fd_ >= 0; }

 private:
  void close_fd() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  int fd_ = -1;
};

// Waits until fd is readable / writable, or fails naming the peer.
void wait_fd(int fd, short events, double timeout_s, const std::string& who) {
  pollfd p{fd, events, 0};
  const int ms = static_cast<int>(std::min(timeout_s * 1000.0, 2.0e9));
  for (;;) {
    const int r = ::poll(&p, 1, ms);
    if (r > 0) return;
    if (r == 0) fail(who, ": no progress within ", timeout_s, " s (a rank died, hangs, or called another collective; ",
                     "NIBBLE_DIST_TIMEOUT sets the limit)");
    if (errno != EINTR) fail(who, ": poll failed: ", std::strerror(errno));
  }
}

void send_all(int fd, const void* data, size_t n, double timeout_s, const std::string& who) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    wait_fd(fd, POLLOUT, timeout_s, who);
    // non-blocking: a peer that stops reading makes the next poll time out, not this send hang
    const ssize_t k = ::send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (k < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      fail(who, ": connection lost (", std::strerror(errno), "): the peer process has exited");
    }
    p += k;
    n -= static_cast<size_t>(k);
  }
}

void recv_all(int fd, void* data, size_t n, double timeout_s, const std::string& who) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    wait_fd(fd, POLLIN, timeout_s, who);
    const ssize_t k = ::recv(fd, p, n, MSG_DONTWAIT);
    if (k == 0) fail(who, ": connection closed: the peer process has exited");
    if (k < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      fail(who, ": connection lost (", std::strerror(errno), ")");
    }
    p += k;
    n -= static_cast<size_t>(k);
  }
}

void no_delay(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

class TcpCommunicator final : public Communicator {
 public:
  explicit TcpCommunicator(const DistEnv& env) : env_(env), peers_(static_cast<size_t>(env.world)) {
    if (env.world < 1 || env.rank < 0 || env.rank >= env.world) fail("bad rank ", env.rank, " of world ", env.world);
    if (env.world == 1) return;
    if (env.rank == 0) listen_and_accept();
    else connect_to_root();
  }

  int rank() const override { return env_.rank; }
  int world() const override { return env_.world; }
  std::string backend() const override { return "tcp"; }

  void all_reduce_sum(double* x, int64_t n) override { reduce(x, n, Op::SumF64); }
  void all_reduce_sum(float* x, int64_t n) override { reduce(x, n, Op::SumF32); }

  void all_reduce_sum_device(float* d_x, int64_t n, void* stream) override {
    via_host(d_x, n, stream, "all_reduce_sum_device", [&](float* h) { all_reduce_sum(h, n); });
  }
  void all_gather_device(float* d_x, const std::vector<int64_t>& offsets, void* stream) override {
    via_host(d_x, offsets.back(), stream, "all_gather_device", [&](float* h) { all_gather(h, offsets); });
  }

  void reduce_scatter_sum_device(float* d_x, const std::vector<int64_t>& offsets, void* stream) override {
    via_host(d_x, offsets.back(), stream, "reduce_scatter_sum_device", [&](float* h) { reduce_scatter_sum(h, offsets); });
  }
  // Every rank sends its whole array to rank 0, which sums in rank order (as reduce(): the same
  // bits as the all-reduce) and sends each rank only its own slice back.
  void reduce_scatter_sum(float* x, const std::vector<int64_t>& offsets) override {
    check_slice_bounds("reduce_scatter_sum", offsets, env_.world);
    const int64_t n = offsets.back();
    if (env_.world == 1 || n == 0) return;
    const size_t bytes = static_cast<size_t>(n) * sizeof(float);
    auto slice_bytes = [&](int r) {
      return static_cast<size_t>(offsets[static_cast<size_t>(r) + 1] - offsets[static_cast<size_t>(r)]) * sizeof(float);
    };
    if (env_.rank == 0) {
      std::vector<float> in(static_cast<size_t>(n));
      for (int r = 1; r < env_.world; ++r) {
        recv_msg(r, Op::ReduceScatter, in.data(), bytes);
        for (int64_t i = 0; i < n; ++i) x[i] += in[static_cast<size_t>(i)];
      }
      for (int r = 1; r < env_.world; ++r) send_msg(r, Op::ReduceScatter, x + offsets[static_cast<size_t>(r)], slice_bytes(r));
    } else {
      send_msg(0, Op::ReduceScatter, x, bytes);
      recv_msg(0, Op::ReduceScatter, x + offsets[static_cast<size_t>(env_.rank)], slice_bytes(env_.rank));
    }
  }

  void broadcast(void* data, size_t bytes, int root) override {
    if (root < 0 || root >= env_.world) fail("broadcast: root ", root, " is not a rank of ", env_.world);
    if (env_.world == 1) return;
    if (env_.rank == 0) {
      if (root != 0) recv_msg(root, Op::Broadcast, data, bytes);
      for (int r = 1; r < env_.world; ++r)
        if (r != root) send_msg(r, Op::Broadcast, data, bytes);
    } else {
      if (env_.rank == root) send_msg(0, Op::Broadcast, data, bytes);
      else recv_msg(0, Op::Broadcast, data, bytes);
    }
  }

  void barrier() override {
    double one = 1.0;
    reduce(&one, 1, Op::Barrier);
  }

  bool peer_lost() override {
    std::vector<pollfd> fds;
    for (const Socket& s : peers_)
      if (s.valid()) fds.push_back(pollfd{s.fd(), static_cast<short>(POLLRDHUP), 0});
    if (fds.empty() || ::poll(fds.data(), fds.size(), 0) <= 0) return false;
    for (const pollfd& p : fds)
      if (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) return true;
    return false;
  }

 private:
  // A device array's collective through host staging: correct everywhere, fast nowhere (the NCCL
  // backend is the fast path).
  template <class Op>
  void via_host(float* d_x, int64_t n, void* stream, const char* what, Op op) {
#if defined(NIBBLE_WITH_CUDA)
    staging_.resize(static_cast<size_t>(n));
    const auto st = static_cast<cudaStream_t>(stream);
    if (cudaMemcpyAsync(staging_.data(), d_x, static_cast<size_t>(n) * 4, cudaMemcpyDeviceToHost, st) != cudaSuccess ||
        cudaStreamSynchronize(st) != cudaSuccess)
      fail(what, ": copying to the host failed");
    op(staging_.data());
    if (cudaMemcpyAsync(d_x, staging_.data(), static_cast<size_t>(n) * 4, cudaMemcpyHostToDevice, st) != cudaSuccess ||
        cudaStreamSynchronize(st) != cudaSuccess)
      fail(what, ": copying back to the device failed");
#else
    (void)d_x;
    (void)n;
    (void)stream;
    (void)op;
    fail(what, ": this build has no CUDA");
#endif
  }

  std::string who(int peer) const {
    return "rank " + std::to_string(env_.rank) + " (tcp, " + env_.master_addr + ":" + std::to_string(env_.master_port) +
           "), peer rank " + std::to_string(peer);
  }

  void send_msg(int peer, Op op, const void* data, size_t bytes) {
    const int fd = peers_[static_cast<size_t>(peer)].fd();
    Header h;
    h.op = static_cast<uint32_t>(op);
    h.bytes = bytes;
    send_all(fd, &h, sizeof h, env_.timeout_s, who(peer));
    if (bytes) send_all(fd, data, bytes, env_.timeout_s, who(peer));
  }
  void recv_msg(int peer, Op op, void* data, size_t bytes) {
    const int fd = peers_[static_cast<size_t>(peer)].fd();
    Header h;
    recv_all(fd, &h, sizeof h, env_.timeout_s, who(peer));
    if (h.magic != Header{}.magic) fail(who(peer), ": not a nibble message (a stray connection on the port?)");
    if (h.op != static_cast<uint32_t>(op) || h.bytes != bytes)
      fail(who(peer), ": collective mismatch: this rank is in ", op_name(static_cast<uint32_t>(op)), " of ", bytes,
           " bytes, the peer sent ", op_name(h.op), " of ", h.bytes, " bytes");
    if (bytes) recv_all(fd, data, bytes, env_.timeout_s, who(peer));
  }

  template <class T>
  void reduce(T* x, int64_t n, Op op) {
    if (env_.world == 1 || n == 0) return;
    const size_t bytes = static_cast<size_t>(n) * sizeof(T);
    if (env_.rank == 0) {
      std::vector<T> in(static_cast<size_t>(n));
      for (int r = 1; r < env_.world; ++r) {
        recv_msg(r, op, in.data(), bytes);
        for (int64_t i = 0; i < n; ++i) x[i] += in[static_cast<size_t>(i)];
      }
      for (int r = 1; r < env_.world; ++r) send_msg(r, op, x, bytes);
    } else {
      send_msg(0, op, x, bytes);
      recv_msg(0, op, x, bytes);
    }
  }

  void listen_and_accept() {
    Socket ls(::socket(AF_INET, SOCK_STREAM, 0));
    if (!ls.valid()) fail("rank 0: socket(): ", std::strerror(errno));
    int one = 1;
    ::setsockopt(ls.fd(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    a.sin_port = htons(static_cast<uint16_t>(env_.master_port));
    if (::bind(ls.fd(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
      fail("rank 0: cannot listen on port ", env_.master_port, " (MASTER_PORT): ", std::strerror(errno));
    if (::listen(ls.fd(), env_.world) != 0) fail("rank 0: listen(): ", std::strerror(errno));
    for (int got = 1; got < env_.world; ++got) {
      wait_fd(ls.fd(), POLLIN, env_.timeout_s,
              "rank 0: waiting for " + std::to_string(env_.world - got) + " more rank(s) to connect to port " +
                  std::to_string(env_.master_port));
      Socket s(::accept(ls.fd(), nullptr, nullptr));
      if (!s.valid()) fail("rank 0: accept(): ", std::strerror(errno));
      no_delay(s.fd());
      int32_t hello[3];
      recv_all(s.fd(), hello, sizeof hello, env_.timeout_s, "rank 0, a connecting rank");
      if (hello[0] != static_cast<int32_t>(Header{}.magic)) fail("rank 0: a stray connection on port ", env_.master_port);
      const int r = hello[1];
      if (hello[2] != env_.world) fail("rank 0: rank ", r, " says the world has ", hello[2], " ranks, rank 0 says ", env_.world);
      if (r < 1 || r >= env_.world || peers_[static_cast<size_t>(r)].valid())
        fail("rank 0: rank ", r, " connected twice or is out of range (world ", env_.world, ")");
      peers_[static_cast<size_t>(r)] = std::move(s);
    }
  }

  void connect_to_root() {
    addrinfo hints{};
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    const std::string port = std::to_string(env_.master_port);
    if (::getaddrinfo(env_.master_addr.c_str(), port.c_str(), &hints, &res) != 0 || !res)
      fail("rank ", env_.rank, ": cannot resolve MASTER_ADDR=", env_.master_addr);
    const auto deadline = Clock::now() + std::chrono::duration<double>(env_.timeout_s);
    Socket s;
    for (;;) {
      s = Socket(::socket(AF_INET, SOCK_STREAM, 0));
      if (s.valid() && ::connect(s.fd(), res->ai_addr, res->ai_addrlen) == 0) break;
      if (Clock::now() > deadline) {
        ::freeaddrinfo(res);
        fail("rank ", env_.rank, ": could not connect to rank 0 at ", env_.master_addr, ":", env_.master_port, " within ",
             env_.timeout_s, " s (is rank 0 running? MASTER_ADDR / MASTER_PORT)");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ::freeaddrinfo(res);
    no_delay(s.fd());
    const int32_t hello[3] = {static_cast<int32_t>(Header{}.magic), env_.rank, env_.world};
    send_all(s.fd(), hello, sizeof hello, env_.timeout_s, who(0));
    peers_[0] = std::move(s);
  }

  DistEnv env_;
  std::vector<Socket> peers_;  // rank 0: a socket per rank; others: peers_[0]
  std::vector<float> staging_;
};

}  // namespace

std::unique_ptr<Communicator> make_tcp_communicator(const DistEnv& env) { return std::make_unique<TcpCommunicator>(env); }

#if defined(NIBBLE_WITH_NCCL)
bool built_with_nccl() { return true; }
#else
bool built_with_nccl() { return false; }
std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<Communicator>, const DistEnv&) {
  fail("this build has no NCCL (configure with CUDA and NCCL; /usr/local/cuda/lib64/libnccl.so)");
}
#endif

}  // namespace nibble
