// nibble launch: start N ranks of a command on this machine with torchrun's environment
// (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), watch them, and
// stop them all when one fails — so a killed or crashed rank never leaves the others hanging.
// With --nnodes/--node-rank the same command on every node forms one run (rank 0 of node 0
// listens on MASTER_ADDR:MASTER_PORT); Slurm users can skip the launcher (SLURM_* is read too).
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "args.hpp"
#include "commands.hpp"
#include "nibble/error.hpp"

namespace nibble::cli {
namespace {

volatile sig_atomic_t g_stop_signal = 0;
void on_signal(int sig) { g_stop_signal = sig; }

std::string self_exe() {
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return "nibble";
  buf[n] = '\0';
  return buf;
}

// Sends sig to every rank's process group still running (a rank and whatever it started);
// after `grace` seconds, SIGKILL.
void stop_all(std::vector<pid_t>& pids, std::vector<bool>& done, int sig, double grace) {
  for (size_t i = 0; i < pids.size(); ++i)
    if (!done[i]) ::kill(-pids[i], sig);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(grace);
  for (;;) {
    bool any = false;
    for (size_t i = 0; i < pids.size(); ++i) {
      if (done[i]) continue;
      int st = 0;
      if (::waitpid(pids[i], &st, WNOHANG) == pids[i]) done[i] = true;
      else any = true;
    }
    if (!any) return;
    if (std::chrono::steady_clock::now() > deadline) {
      for (size_t i = 0; i < pids.size(); ++i)
        if (!done[i]) ::kill(-pids[i], SIGKILL);
      for (size_t i = 0; i < pids.size(); ++i)
        if (!done[i]) ::waitpid(pids[i], nullptr, 0), done[i] = true;
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

std::string describe_status(int st) {
  if (WIFEXITED(st)) return "exited with status " + std::to_string(WEXITSTATUS(st));
  if (WIFSIGNALED(st)) return std::string("was killed by signal ") + std::to_string(WTERMSIG(st)) + " (" + strsignal(WTERMSIG(st)) + ")";
  return "stopped";
}

}  // namespace

int run_launch(const std::vector<std::string>& argv) {
  // Everything after "--" is the command (a leading "nibble" means this binary).
  std::vector<std::string> own, cmd;
  bool rest = false;
  for (const std::string& a : argv) {
    if (!rest && a == "--") {
      rest = true;
      continue;
    }
    (rest ? cmd : own).push_back(a);
  }
  Args a("launch", "nibble launch --nproc N [options] -- COMMAND [ARGS...]",
         "Runs N copies of COMMAND on this machine as the ranks of one data-parallel run (one per GPU\n"
         "with --device cuda: rank r uses GPU LOCAL_RANK), with torchrun's environment variables.\n"
         "If a rank fails, the others are stopped (SIGTERM, then SIGKILL after --grace seconds) and\n"
         "nibble launch exits with that rank's status. Example:\n"
         "  nibble launch --nproc 2 -- nibble train --model 124m --device cuda --batch 32 --out runs/dp2");
  a.option("nproc", "N", "ranks on this node", "1");
  a.option("nnodes", "M", "nodes in the run", "1");
  a.option("node-rank", "R", "this node's index (0 on the node at --master-addr)", "0");
  a.option("master-addr", "HOST", "rank 0's address", "127.0.0.1");
  a.option("master-port", "PORT", "rank 0's port", "29500");
  a.option("grace", "S", "seconds between SIGTERM and SIGKILL when stopping the ranks", "10");
  if (!a.parse(own)) return 0;
  const int64_t nproc = a.integer("nproc"), nnodes = a.integer("nnodes"), node = a.integer("node-rank");
  const int64_t port = a.integer("master-port");
  if (nproc < 1 || nproc > 1024) fail("--nproc ", nproc, " must be in [1, 1024]");
  if (nnodes < 1 || node < 0 || node >= nnodes) fail("--node-rank ", node, " must be in [0, --nnodes ", nnodes, ")");
  if (port < 1 || port > 65535) fail("--master-port ", port, " is not a TCP port");
  const double grace = a.number("grace");
  if (cmd.empty()) fail("nibble launch: give the command after --, e.g. nibble launch --nproc 2 -- nibble train ...");
  if (cmd[0] == "nibble") cmd[0] = self_exe();

  struct sigaction sa{};
  sa.sa_handler = on_signal;
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGHUP, &sa, nullptr);
  const pid_t launcher = ::getpid();

  const int64_t world = nproc * nnodes;
  std::vector<pid_t> pids;
  std::vector<bool> done;
  for (int64_t local = 0; local < nproc; ++local) {
    const pid_t pid = ::fork();
    if (pid < 0) {
      const std::string why = std::strerror(errno);
      stop_all(pids, done, SIGTERM, grace);  // the ranks already started
      fail("nibble launch: fork failed: ", why);
    }
    if (pid == 0) {
      ::setpgid(0, 0);  // its own process group: stopping a rank stops its children too
      // a launcher that dies (SIGKILL, OOM) takes its ranks with it
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (::getppid() != launcher) ::_exit(1);
      ::setenv("RANK", std::to_string(node * nproc + local).c_str(), 1);
      ::setenv("WORLD_SIZE", std::to_string(world).c_str(), 1);
      ::setenv("LOCAL_RANK", std::to_string(local).c_str(), 1);
      ::setenv("LOCAL_WORLD_SIZE", std::to_string(nproc).c_str(), 1);
      ::setenv("MASTER_ADDR", a.str("master-addr").c_str(), 1);
      ::setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
      // CPU ranks share the cores: without this every rank's OpenMP team would use all of them
      // (and spin), which makes N ranks on one CPU dozens of times slower (as torchrun does).
      if (!std::getenv("OMP_NUM_THREADS")) {
        const unsigned hw = std::thread::hardware_concurrency();
        ::setenv("OMP_NUM_THREADS", std::to_string(std::max<int64_t>(1, static_cast<int64_t>(hw) / nproc)).c_str(), 1);
      }
      std::vector<char*> cargv;
      for (std::string& s : cmd) cargv.push_back(s.data());
      cargv.push_back(nullptr);
      ::execvp(cargv[0], cargv.data());
      std::fprintf(stderr, "nibble launch: cannot run %s: %s\n", cmd[0].c_str(), std::strerror(errno));
      ::_exit(127);
    }
    ::setpgid(pid, pid);  // also from the parent: no window in which a stop misses the group
    pids.push_back(pid);
    done.push_back(false);
  }
  int code = 0;
  size_t left = pids.size();
  while (left > 0) {
    if (g_stop_signal) {
      std::fprintf(stderr, "nibble launch: signal %d: stopping all ranks\n", static_cast<int>(g_stop_signal));
      stop_all(pids, done, SIGTERM, grace);
      return 128 + static_cast<int>(g_stop_signal);
    }
    int st = 0;
    const pid_t pid = ::waitpid(-1, &st, WNOHANG);
    if (pid <= 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      continue;
    }
    size_t i = 0;
    while (i < pids.size() && pids[i] != pid) ++i;
    if (i == pids.size()) continue;
    done[i] = true;
    --left;
    const bool ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
    if (!ok) {
      std::fprintf(stderr, "nibble launch: rank %lld %s; stopping the other ranks\n",
                   static_cast<long long>(node * nproc + static_cast<int64_t>(i)), describe_status(st).c_str());
      ::kill(-pid, SIGKILL);  // anything the failed rank left behind
      stop_all(pids, done, SIGTERM, grace);
      code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      break;
    }
  }
  return code;
}

}  // namespace nibble::cli
