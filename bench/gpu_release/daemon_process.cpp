#include "bench/gpu_release/daemon_process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace gpumod::gpu_release {

Result<std::unique_ptr<DaemonProcess>> DaemonProcess::spawn(const std::vector<std::string>& argv,
                                                            const std::filesystem::path& log_copy) {
  if (argv.empty()) return make_error("no command to start");
  int fds[2] = {-1, -1};
  if (::pipe2(fds, O_CLOEXEC) != 0) return make_error(std::string("pipe2: ") + std::strerror(errno));
  std::vector<char*> cargv;
  cargv.reserve(argv.size() + 1);
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));  // NOLINT: execv's signature
  cargv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    return make_error(std::string("fork: ") + std::strerror(errno));
  }
  if (pid == 0) {
    ::dup2(fds[1], STDOUT_FILENO);
    ::dup2(fds[1], STDERR_FILENO);
    ::execv(cargv[0], cargv.data());
    const char msg[] = "gpumod-gpu-release: exec of the daemon failed\n";
    (void)!::write(STDERR_FILENO, msg, sizeof msg - 1);
    ::_exit(127);
  }
  ::close(fds[1]);
  return std::unique_ptr<DaemonProcess>(new DaemonProcess(pid, fds[0], log_copy));
}

DaemonProcess::DaemonProcess(int pid, int read_fd, const std::filesystem::path& log_copy)
    : pid_(pid), read_fd_(read_fd), log_copy_(log_copy) {
  reader_ = std::thread([this] { read_loop(); });
}

DaemonProcess::~DaemonProcess() {
  terminate(std::chrono::seconds(20));
  if (reader_.joinable()) reader_.join();
  if (read_fd_ >= 0) ::close(read_fd_);
}

void DaemonProcess::read_loop() {
  std::string pending;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(read_fd_, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    const auto now = std::chrono::steady_clock::now();
    const auto wall = std::chrono::system_clock::now();
    pending.append(buf, static_cast<std::size_t>(n));
    std::size_t start = 0;
    std::lock_guard lock(mu_);
    for (std::size_t nl = pending.find('\n'); nl != std::string::npos; nl = pending.find('\n', start)) {
      lines_.push_back({now, wall, pending.substr(start, nl - start)});
      log_copy_ << lines_.back().text << '\n';
      start = nl + 1;
    }
    pending.erase(0, start);
    log_copy_.flush();
    cv_.notify_all();
  }
  std::lock_guard lock(mu_);
  if (!pending.empty())
    lines_.push_back({std::chrono::steady_clock::now(), std::chrono::system_clock::now(), pending});
  eof_ = true;
  cv_.notify_all();
}

std::size_t DaemonProcess::size() const {
  std::lock_guard lock(mu_);
  return lines_.size();
}

LogLine DaemonProcess::line(std::size_t index) const {
  std::lock_guard lock(mu_);
  return lines_.at(index);
}

std::optional<std::size_t> DaemonProcess::find(const std::string& needle, std::size_t from) const {
  std::lock_guard lock(mu_);
  for (std::size_t i = from; i < lines_.size(); ++i) {
    if (lines_[i].text.find(needle) != std::string::npos) return i;
  }
  return std::nullopt;
}

std::optional<std::size_t> DaemonProcess::wait_for(const std::string& needle, std::size_t from,
                                                   SteadyTime deadline) {
  std::unique_lock lock(mu_);
  std::size_t checked = from;
  for (;;) {
    for (; checked < lines_.size(); ++checked) {
      if (lines_[checked].text.find(needle) != std::string::npos) return checked;
    }
    if (eof_) return std::nullopt;
    if (cv_.wait_until(lock, deadline) == std::cv_status::timeout && checked == lines_.size())
      return std::nullopt;
  }
}

int DaemonProcess::terminate(std::chrono::milliseconds grace) {
  if (exited_) return exit_status_;
  int status = 0;
  auto reaped = [&] {
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    return r == pid_ || (r < 0 && errno == ECHILD);
  };
  if (!reaped()) {
    ::kill(pid_, SIGTERM);
    const auto deadline = std::chrono::steady_clock::now() + grace;
    bool gone = false;
    while (!(gone = reaped()) && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (!gone) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
    }
  }
  exited_ = true;
  exit_status_ = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
  return exit_status_;
}

}  // namespace gpumod::gpu_release
