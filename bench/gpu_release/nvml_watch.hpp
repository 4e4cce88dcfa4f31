// NvmlWatch: a thread that samples one GPU through the project's own probe
// (backends::make_nvml_probe) as fast as asked (every 1 ms by default) and keeps every sample
// with the steady-clock time the sample began and ended. It answers "when did NVML first show
// this much free memory" and "when did this pid disappear from NVML's process list".
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "backends/gpu_probe.hpp"

namespace gpumod::gpu_release {

using SteadyTime = std::chrono::steady_clock::time_point;

struct WatchSample {
  SteadyTime begin;  // the memory figure is read first, so it reflects about this moment
  SteadyTime end;
  std::int64_t free_bytes = 0;
  std::int64_t used_bytes = 0;
  std::vector<std::pair<int, std::int64_t>> processes;  // pid, used bytes on the watched GPU

  [[nodiscard]] std::optional<std::int64_t> used_by(int pid) const;
};

class NvmlWatch {
 public:
  NvmlWatch(std::unique_ptr<backends::GpuProbe> probe, int gpu, std::chrono::microseconds interval);
  ~NvmlWatch();
  NvmlWatch(const NvmlWatch&) = delete;
  NvmlWatch& operator=(const NvmlWatch&) = delete;

  // Samples whose begin lies in [from, to], in order.
  [[nodiscard]] std::vector<WatchSample> between(SteadyTime from, SteadyTime to) const;
  [[nodiscard]] std::size_t errors() const { return errors_.load(); }
  [[nodiscard]] std::size_t count() const;
  // Durations of every sample() call so far, in microseconds (for the report).
  [[nodiscard]] std::vector<double> sample_costs_us() const;

 private:
  void loop();

  std::unique_ptr<backends::GpuProbe> probe_;
  int gpu_;
  std::chrono::microseconds interval_;
  std::atomic<bool> stop_{false};
  std::atomic<std::size_t> errors_{0};
  mutable std::mutex mu_;
  std::vector<WatchSample> samples_;
  std::thread thread_;
};

}  // namespace gpumod::gpu_release
