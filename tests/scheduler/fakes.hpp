// In-memory fakes of the backends, sharing one FakeWorld: GPUs whose memory is charged by
// the fake processes, with the failure modes the real thing has (slow VRAM release, crash
// while loading, health that never turns green, a stop that leaves memory held, sleep/wake
// that fails). Thread-safe (one mutex) so the threaded shell's workers can use them too.
// Time comes from the injected ManualClock; nothing sleeps.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "backends/driver.hpp"
#include "backends/gpu_probe.hpp"
#include "backends/runner.hpp"
#include "base/clock.hpp"
#include "config/config.hpp"

namespace gpumod::scheduler::testing {

constexpr std::int64_t kMiB = 1024 * 1024;
constexpr std::int64_t kGiB = 1024 * kMiB;

// How one fake service behaves.
struct Behavior {
  std::int64_t bytes = 0;             // memory its process uses when loaded
  std::int64_t sleep_bytes = 0;       // while asleep
  bool fail_start = false;            // runner.start returns an error
  bool crash_while_loading = false;   // the process exits before it turns healthy
  bool never_healthy = false;         // health stays `loading`
  int health_checks_until_ready = 1;  // number of loading answers before ready
  bool fail_sleep = false;
  bool fail_wake = false;
  bool hold_memory_after_stop = false;  // the driver never frees it (zombie context)
  int release_after_samples = 0;        // memory still shows used for this many probe samples after stop
};

struct FakeProcess {
  std::string service;
  int pid = 0;
  int gpu = 0;
  std::int64_t bytes = 0;
  bool alive = true;
  bool asleep = false;
  int lingering_samples = 0;  // after exit: samples for which memory still shows used
  bool forever = false;
  int health_checks = 0;
  bool exit_reported = false;
};

class FakeWorld {
 public:
  explicit FakeWorld(std::vector<std::int64_t> gpu_totals) : totals_(std::move(gpu_totals)) {}

  void set_behavior(const std::string& svc, Behavior b) {
    std::lock_guard<std::mutex> l(mu_);
    behaviors_[svc] = b;
  }
  Behavior behavior(const std::string& svc) {
    std::lock_guard<std::mutex> l(mu_);
    return behaviors_[svc];
  }
  // Memory used by something outside gpumod.
  void set_outside_usage(int gpu, std::int64_t bytes) {
    std::lock_guard<std::mutex> l(mu_);
    outside_[gpu] = bytes;
  }
  // A process started "before the daemon restarted".
  int add_running(const std::string& svc, int gpu, std::int64_t bytes, bool asleep = false) {
    std::lock_guard<std::mutex> l(mu_);
    FakeProcess p;
    p.service = svc;
    p.pid = next_pid_++;
    p.gpu = gpu;
    p.bytes = bytes;
    p.asleep = asleep;
    p.health_checks = 1 << 20;  // long since loaded
    procs_.push_back(p);
    return p.pid;
  }
  int starts(const std::string& svc) {
    std::lock_guard<std::mutex> l(mu_);
    return starts_[svc];
  }
  // Free bytes on its GPU at the moment the service's last start happened.
  std::int64_t free_at_start(const std::string& svc) {
    std::lock_guard<std::mutex> l(mu_);
    return free_at_start_[svc];
  }
  int stops(const std::string& svc) {
    std::lock_guard<std::mutex> l(mu_);
    return stops_[svc];
  }
  bool running(const std::string& svc) {
    std::lock_guard<std::mutex> l(mu_);
    return live(svc) != nullptr;
  }
  std::int64_t used(int gpu) {
    std::lock_guard<std::mutex> l(mu_);
    return used_locked(gpu);
  }
  // Kill a service's process from outside (crash).
  void crash(const std::string& svc) {
    std::lock_guard<std::mutex> l(mu_);
    if (auto* p = live(svc)) p->alive = false;
  }

  // --- used by the fakes ---
  Result<backends::RunInfo> start(const backends::LaunchSpec& spec) {
    std::lock_guard<std::mutex> l(mu_);
    ++starts_[spec.service_id];
    const Behavior b = behaviors_[spec.service_id];
    if (b.fail_start) return make_error("fake: exec failed for " + spec.service_id);
    if (live(spec.service_id) != nullptr)
      return make_error("fake: " + spec.service_id + " is already running");
    int gpu = 0;
    if (auto it = spec.env.find("GPUMOD_TEST_GPU"); it != spec.env.end()) gpu = std::stoi(it->second);
    if (auto it = spec.env.find("CUDA_VISIBLE_DEVICES"); it != spec.env.end()) gpu = std::stoi(it->second);
    FakeProcess p;
    p.service = spec.service_id;
    p.pid = next_pid_++;
    p.gpu = gpu;
    p.bytes = b.bytes;
    free_at_start_[spec.service_id] = totals_.at(static_cast<std::size_t>(gpu)) - used_locked(gpu);
    procs_.push_back(p);
    backends::RunInfo info;
    info.service_id = spec.service_id;
    info.pid = p.pid;
    info.pgid = p.pid;
    info.start_time = 1;
    return info;
  }
  Result<void> stop(const std::string& svc) {
    if (before_release) before_release(svc);
    std::lock_guard<std::mutex> l(mu_);
    ++stops_[svc];
    const Behavior b = behaviors_[svc];
    for (auto& p : procs_) {
      if (p.service != svc || !p.alive) continue;
      p.alive = false;
      p.exit_reported = true;
      p.lingering_samples = b.release_after_samples;
      p.forever = b.hold_memory_after_stop;
    }
    return {};
  }
  std::optional<backends::ExitInfo> poll_exit(const std::string& svc) {
    std::lock_guard<std::mutex> l(mu_);
    for (auto& p : procs_) {
      if (p.service == svc && !p.alive && !p.exit_reported) {
        p.exit_reported = true;
        backends::ExitInfo e;
        e.signal = 9;
        e.message = "fake: killed";
        return e;
      }
    }
    return std::nullopt;
  }
  std::vector<int> pids(const std::string& svc) {
    std::lock_guard<std::mutex> l(mu_);
    if (auto* p = live(svc)) return {p->pid};
    return {};
  }
  backends::HealthResult health(const std::string& svc) {
    std::lock_guard<std::mutex> l(mu_);
    const Behavior b = behaviors_[svc];
    FakeProcess* p = live(svc);
    if (p == nullptr) return {backends::Health::down, "connection refused"};
    if (b.crash_while_loading) {
      p->alive = false;
      return {backends::Health::down, "connection refused"};
    }
    if (b.never_healthy) return {backends::Health::loading, "503 loading model"};
    if (p->health_checks++ < b.health_checks_until_ready)
      return {backends::Health::loading, "503 loading model"};
    return {backends::Health::ready, ""};
  }
  Result<void> set_asleep(const std::string& svc, bool asleep) {
    if (asleep && before_release) before_release(svc);
    std::lock_guard<std::mutex> l(mu_);
    const Behavior b = behaviors_[svc];
    if (asleep ? b.fail_sleep : b.fail_wake)
      return make_error(std::string("fake: ") + (asleep ? "sleep" : "wake") + " failed");
    FakeProcess* p = live(svc);
    if (p == nullptr) return make_error("fake: not running");
    p->asleep = asleep;
    p->bytes = asleep ? b.sleep_bytes : b.bytes;
    if (!asleep) p->health_checks = 0;  // reloading weights takes health checks again
    return {};
  }
  Result<bool> is_sleeping(const std::string& svc) {
    std::lock_guard<std::mutex> l(mu_);
    FakeProcess* p = live(svc);
    if (p == nullptr) return make_error("fake: not running");
    return p->asleep;
  }
  // Called (on the caller's thread) at the start of every stop and sleep of a service: the
  // moment its clients lose it. Set before the world is used from several threads.
  std::function<void(const std::string& svc)> before_release;

  backends::ProbeSample sample() {
    std::lock_guard<std::mutex> l(mu_);
    backends::ProbeSample s;
    for (std::size_t i = 0; i < totals_.size(); ++i) {
      const int gpu = static_cast<int>(i);
      const std::int64_t used = used_locked(gpu);
      backends::GpuSample g;
      g.index = gpu;
      g.uuid = "GPU-fake-" + std::to_string(i);
      g.name = "Fake GPU";
      g.total_bytes = totals_[i];
      g.used_bytes = used;
      g.free_bytes = totals_[i] - used;
      s.gpus.push_back(g);
    }
    for (auto& p : procs_) {
      if (p.alive || p.forever || p.lingering_samples > 0) s.processes.push_back({p.gpu, p.pid, p.bytes});
    }
    // Lingering memory goes away one sample at a time.
    for (auto& p : procs_) {
      if (!p.alive && !p.forever && p.lingering_samples > 0) --p.lingering_samples;
    }
    return s;
  }

 private:
  FakeProcess* live(const std::string& svc) {
    for (auto& p : procs_) {
      if (p.service == svc && p.alive) return &p;
    }
    return nullptr;
  }
  std::int64_t used_locked(int gpu) {
    std::int64_t u = outside_[gpu];
    for (const auto& p : procs_) {
      if (p.gpu == gpu && (p.alive || p.forever || p.lingering_samples > 0)) u += p.bytes;
    }
    return u;
  }

  std::mutex mu_;
  std::vector<std::int64_t> totals_;
  std::map<int, std::int64_t> outside_;
  std::map<std::string, Behavior> behaviors_;
  std::vector<FakeProcess> procs_;
  std::map<std::string, int> starts_, stops_;
  std::map<std::string, std::int64_t> free_at_start_;
  int next_pid_ = 1000;
};

class FakeRunner final : public backends::Runner {
 public:
  explicit FakeRunner(FakeWorld& w) : w_(w) {}
  const char* kind() const override { return "fake"; }
  Result<backends::RunInfo> start(const backends::LaunchSpec& spec) override { return w_.start(spec); }
  Result<void> stop(const std::string& id, std::chrono::milliseconds,
                    const StopSignalled& signalled) override {
    if (signalled && running(id)) signalled();
    return w_.stop(id);
  }
  std::optional<backends::ExitInfo> poll_exit(const std::string& id) override { return w_.poll_exit(id); }
  bool running(const std::string& id) override { return w_.running(id); }
  std::vector<int> pids(const std::string& id) override { return w_.pids(id); }
  std::vector<backends::RunInfo> adopt() override { return adopted; }
  std::vector<backends::RunInfo> adopted;

 private:
  FakeWorld& w_;
};

class FakeDriver final : public backends::Driver {
 public:
  FakeDriver(FakeWorld& w, std::string svc) : w_(w), svc_(std::move(svc)) {}
  const char* kind() const override { return "fake"; }
  Result<void> preflight(std::int64_t, std::int64_t) override { return {}; }
  backends::HealthResult health() override { return w_.health(svc_); }
  Result<void> activate(std::chrono::milliseconds) override { return {}; }
  Result<void> sleep() override { return w_.set_asleep(svc_, true); }
  Result<void> wake() override { return w_.set_asleep(svc_, false); }
  Result<bool> is_sleeping() override { return w_.is_sleeping(svc_); }
  Result<std::vector<backends::RouterModel>> list_models() override {
    return make_error("fake: not a router");
  }
  Result<void> load_model(const std::string&) override { return make_error("fake: not a router"); }
  Result<void> unload_model(const std::string&) override { return make_error("fake: not a router"); }

 private:
  FakeWorld& w_;
  std::string svc_;
};

class FakeProbe final : public backends::GpuProbe {
 public:
  explicit FakeProbe(FakeWorld& w) : w_(w) {}
  const char* kind() const override { return "fake"; }
  Result<backends::ProbeSample> sample() override {
    if (failing) return make_error("fake: probe unavailable");
    return w_.sample();
  }
  std::atomic<bool> failing{false};

 private:
  FakeWorld& w_;
};

}  // namespace gpumod::scheduler::testing
