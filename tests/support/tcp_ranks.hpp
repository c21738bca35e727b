#pragma once
// The TCP communicator's ranks as threads of one test process (the communicator and ZeRO-1
// tests).
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <exception>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "nibble/dist/comm.hpp"

namespace nibble::testing {

// A port that was free a moment ago (the kernel's choice for port 0).
inline int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

// Runs body(rank, comm) on `world` threads; returns each rank's error message ("" = none).
inline std::vector<std::string> run_ranks(int world, double timeout_s,
                                          const std::function<void(int, Communicator&)>& body) {
  const int port = free_port();
  std::vector<std::string> errors(static_cast<size_t>(world));
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r)
    threads.emplace_back([&, r] {
      try {
        DistEnv e;
        e.rank = r;
        e.world = world;
        e.master_port = port;
        e.timeout_s = timeout_s;
        auto comm = make_tcp_communicator(e);
        body(r, *comm);
      } catch (const std::exception& ex) {
        errors[static_cast<size_t>(r)] = ex.what();
      }
    });
  for (auto& t : threads) t.join();
  return errors;
}

}  // namespace nibble::testing
