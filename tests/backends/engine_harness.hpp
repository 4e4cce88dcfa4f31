// Test helpers for the drivers/probe/engine tests: the built gpumod-test-engine run as a real
// child process (fork/exec, killed at scope exit) and the charge it keeps. Temp dirs, free
// ports and eventually() come from tests/support.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/eventually.hpp"
#include "tests/support/net.hpp"
#include "tests/support/temp_dir.hpp"

namespace gpumod::testing {

inline const char* const kEnginePath = GPUMOD_BINARY_DIR "/tools/test-engine/gpumod-test-engine";

// The charge the engine with `pid` reports in the sim dir, if any.
inline std::optional<std::int64_t> read_charge(const std::filesystem::path& sim_dir, int pid) {
  std::ifstream in(sim_dir / (std::to_string(pid) + ".charge"));
  int gpu = 0;
  std::int64_t bytes = 0;
  if (!(in >> gpu >> bytes)) return std::nullopt;
  return bytes;
}

inline constexpr std::int64_t kMiB = 1024LL * 1024;

class EngineProcess {
 public:
  // Runs the engine with `args` (after argv[0]); GPUMOD_SIM_DIR=sim_dir; output to log_path.
  EngineProcess(const std::vector<std::string>& args, const std::filesystem::path& sim_dir,
                const std::filesystem::path& log_path)
      : log_path_(log_path) {
    std::vector<std::string> argv_s{kEnginePath};
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    std::vector<std::string> env_s;
    for (char** e = environ; *e != nullptr; ++e) {
      const std::string kv = *e;
      if (kv.rfind("GPUMOD_SIM_DIR=", 0) != 0 && kv.rfind("CUDA_VISIBLE_DEVICES=", 0) != 0)
        env_s.push_back(kv);
    }
    env_s.push_back("GPUMOD_SIM_DIR=" + sim_dir.string());
    env_s.push_back("CUDA_VISIBLE_DEVICES=0");
    std::vector<char*> argv;
    for (auto& s : argv_s) argv.push_back(s.data());
    argv.push_back(nullptr);
    std::vector<char*> envp;
    for (auto& s : env_s) envp.push_back(s.data());
    envp.push_back(nullptr);
    const std::string log = log_path.string();

    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      ::execve(argv[0], argv.data(), envp.data());
      ::_exit(127);
    }
  }
  ~EngineProcess() {
    if (!exited_) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      ::waitpid(pid_, &status, 0);
    }
  }
  EngineProcess(const EngineProcess&) = delete;
  EngineProcess& operator=(const EngineProcess&) = delete;

  [[nodiscard]] int pid() const { return pid_; }
  void signal(int sig) const { ::kill(pid_, sig); }

  // The exit: the status code, or -signal when killed; nullopt if still running at the deadline.
  std::optional<int> wait_exit(std::chrono::milliseconds deadline = std::chrono::seconds(20)) {
    if (exited_) return exit_;
    std::optional<int> result;
    eventually(
        [&] {
          int status = 0;
          const pid_t r = ::waitpid(pid_, &status, WNOHANG);
          if (r == pid_) {
            result = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
            return true;
          }
          return false;
        },
        deadline);
    if (result) {
      exited_ = true;
      exit_ = *result;
    }
    return result;
  }

  [[nodiscard]] std::string log() const {
    std::ifstream in(log_path_);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

 private:
  std::filesystem::path log_path_;
  pid_t pid_ = -1;
  bool exited_ = false;
  int exit_ = 0;
};

}  // namespace gpumod::testing
