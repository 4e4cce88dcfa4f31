// DaemonProcess: a child process (here `gpumod serve`) whose stdout+stderr are read line by
// line on a thread, each line stamped with the harness's steady clock the moment it arrives.
// The harness uses the stamps to place the daemon's log lines ("evicting ...", "starting ...")
// on the same time axis as its own NVML samples. The child is SIGTERMed (then SIGKILLed) when
// the object goes away, so a failed run leaves no daemon behind.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "base/result.hpp"

namespace gpumod::gpu_release {

using SteadyTime = std::chrono::steady_clock::time_point;

struct LogLine {
  SteadyTime received;                                  // when the harness read it
  std::chrono::system_clock::time_point received_wall;  // the same moment on the wall clock
  std::string text;
};

class DaemonProcess {
 public:
  // Starts argv[0] (a path) with argv; every line it prints is also appended to `log_copy`.
  static Result<std::unique_ptr<DaemonProcess>> spawn(const std::vector<std::string>& argv,
                                                      const std::filesystem::path& log_copy);
  ~DaemonProcess();
  DaemonProcess(const DaemonProcess&) = delete;
  DaemonProcess& operator=(const DaemonProcess&) = delete;

  [[nodiscard]] int pid() const { return pid_; }
  [[nodiscard]] std::size_t size() const;
  [[nodiscard]] LogLine line(std::size_t index) const;
  // The first line at index >= from that contains `needle`, if any has arrived yet.
  [[nodiscard]] std::optional<std::size_t> find(const std::string& needle, std::size_t from) const;
  // The same, waiting for it until `deadline` (or until the child's output ends).
  std::optional<std::size_t> wait_for(const std::string& needle, std::size_t from, SteadyTime deadline);
  // SIGTERM, wait up to `grace`, then SIGKILL. Returns the exit status (or -signal).
  int terminate(std::chrono::milliseconds grace);

 private:
  DaemonProcess(int pid, int read_fd, const std::filesystem::path& log_copy);
  void read_loop();

  int pid_ = -1;
  int read_fd_ = -1;
  bool exited_ = false;
  int exit_status_ = 0;
  std::ofstream log_copy_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<LogLine> lines_;
  bool eof_ = false;
  std::thread reader_;
};

}  // namespace gpumod::gpu_release
