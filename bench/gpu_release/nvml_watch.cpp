#include "bench/gpu_release/nvml_watch.hpp"

#include <algorithm>

namespace gpumod::gpu_release {

std::optional<std::int64_t> WatchSample::used_by(int pid) const {
  for (const auto& [p, used] : processes) {
    if (p == pid) return used;
  }
  return std::nullopt;
}

NvmlWatch::NvmlWatch(std::unique_ptr<backends::GpuProbe> probe, int gpu, std::chrono::microseconds interval)
    : probe_(std::move(probe)), gpu_(gpu), interval_(interval) {
  samples_.reserve(1U << 17U);
  thread_ = std::thread([this] { loop(); });
}

NvmlWatch::~NvmlWatch() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void NvmlWatch::loop() {
  auto next = std::chrono::steady_clock::now();
  while (!stop_) {
    WatchSample s;
    s.begin = std::chrono::steady_clock::now();
    auto sample = probe_->sample();
    s.end = std::chrono::steady_clock::now();
    if (!sample) {
      ++errors_;
    } else {
      for (const auto& g : sample->gpus) {
        if (g.index != gpu_) continue;
        s.free_bytes = g.free_bytes;
        s.used_bytes = g.used_bytes;
      }
      for (const auto& p : sample->processes) {
        if (p.gpu == gpu_) s.processes.emplace_back(p.pid, p.used_bytes);
      }
      std::lock_guard lock(mu_);
      samples_.push_back(std::move(s));
    }
    // A fixed cadence; when a sample takes longer than the interval the next one starts at once.
    next += interval_;
    const auto now = std::chrono::steady_clock::now();
    if (next < now) next = now;
    std::this_thread::sleep_until(next);
  }
}

std::vector<WatchSample> NvmlWatch::between(SteadyTime from, SteadyTime to) const {
  std::lock_guard lock(mu_);
  auto first = std::lower_bound(samples_.begin(), samples_.end(), from,
                                [](const WatchSample& s, SteadyTime t) { return s.begin < t; });
  std::vector<WatchSample> out;
  for (auto it = first; it != samples_.end() && it->begin <= to; ++it) out.push_back(*it);
  return out;
}

std::size_t NvmlWatch::count() const {
  std::lock_guard lock(mu_);
  return samples_.size();
}

std::vector<double> NvmlWatch::sample_costs_us() const {
  std::lock_guard lock(mu_);
  std::vector<double> out;
  out.reserve(samples_.size());
  for (const auto& s : samples_) {
    out.push_back(std::chrono::duration<double, std::micro>(s.end - s.begin).count());
  }
  return out;
}

}  // namespace gpumod::gpu_release
