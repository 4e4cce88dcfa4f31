// Test helpers for the drivers/probe/engine tests: a temp dir, a free port, and the built
// gpumod-test-engine run as a real child process (fork/exec, killed at scope exit).
#pragma once

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
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

namespace gpumod::testing {

inline const char* const kEnginePath = GPUMOD_BINARY_DIR "/tools/test-engine/gpumod-test-engine";

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "gpumod-drivers-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  [[nodiscard]] const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// A port nothing listens on right now (the kernel's pick for an ephemeral bind).
inline int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(fd);
    throw std::runtime_error("cannot find a free port");
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

// Polls `pred` every 10 ms until it holds or `deadline` passes (generous: CI may be slow).
template <typename Pred>
bool eventually(Pred pred, std::chrono::milliseconds deadline = std::chrono::seconds(20)) {
  const auto end = std::chrono::steady_clock::now() + deadline;
  while (true) {
    if (pred()) return true;
    if (std::chrono::steady_clock::now() >= end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

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
