// The simulated GPU: capacity from config, usage from charge files that the processes
// gpumod runs (the bundled test engine) keep in the sim directory. A charge whose process
// has died keeps counting for the release lag, measured with the injected clock from when
// the probe first saw the process dead, like a real driver's delayed release.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <system_error>

#include "backends/gpu_probe.hpp"

namespace gpumod::backends {

namespace fs = std::filesystem;

namespace {

constexpr const char* kChargeSuffix = ".charge";

fs::path charge_path(const fs::path& sim_dir, int pid) {
  return sim_dir / (std::to_string(pid) + kChargeSuffix);
}

// Dead, or a zombie nobody has reaped yet (its memory is gone either way).
bool process_gone(int pid) {
  if (pid <= 0) return true;
  if (::kill(pid, 0) == -1 && errno == ESRCH) return true;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  if (!stat) return !fs::exists("/proc/" + std::to_string(pid));
  std::string line;
  std::getline(stat, line);
  const auto close = line.rfind(')');
  if (close != std::string::npos && close + 2 < line.size()) {
    const char state = line[close + 2];
    return state == 'Z' || state == 'X';
  }
  return false;
}

struct Charge {
  int pid = 0;
  int gpu = 0;
  std::int64_t bytes = 0;
  fs::path path;
};

std::vector<Charge> read_charges(const fs::path& sim_dir) {
  std::vector<Charge> out;
  std::error_code ec;
  fs::directory_iterator it(sim_dir, ec);
  if (ec) return out;  // no sim dir yet: nothing charged
  for (const auto& entry : it) {
    const auto name = entry.path().filename().string();
    if (name.size() <= std::string(kChargeSuffix).size() || entry.path().extension() != kChargeSuffix)
      continue;
    Charge c;
    try {
      c.pid = std::stoi(entry.path().stem().string());
    } catch (const std::exception&) {
      continue;
    }
    std::ifstream in(entry.path());
    if (!(in >> c.gpu >> c.bytes)) continue;  // being replaced right now, or garbage
    c.path = entry.path();
    out.push_back(std::move(c));
  }
  return out;
}

class SimProbe final : public GpuProbe {
 public:
  SimProbe(std::vector<config::SimGpu> gpus, fs::path sim_dir, std::chrono::milliseconds lag,
           const Clock& clock)
      : gpus_(std::move(gpus)), sim_dir_(std::move(sim_dir)), lag_(lag), clock_(clock) {}

  const char* kind() const override { return "sim"; }

  Result<ProbeSample> sample() override {
    std::lock_guard lock(mu_);
    const auto now = clock_.now();
    ProbeSample out;
    std::vector<std::int64_t> used(gpus_.size(), 0);
    std::map<int, Clock::TimePoint> still_dead;
    for (const auto& c : read_charges(sim_dir_)) {
      if (process_gone(c.pid)) {
        const auto seen = dead_since_.find(c.pid);
        const auto since = seen == dead_since_.end() ? now : seen->second;
        if (now - since >= lag_) {
          std::error_code ec;
          fs::remove(c.path, ec);
          continue;
        }
        still_dead[c.pid] = since;
      }
      if (c.gpu < 0 || static_cast<std::size_t>(c.gpu) >= gpus_.size()) continue;
      used[static_cast<std::size_t>(c.gpu)] += c.bytes;
      out.processes.push_back(ProcessMemory{c.gpu, c.pid, c.bytes});
    }
    dead_since_ = std::move(still_dead);

    for (std::size_t i = 0; i < gpus_.size(); ++i) {
      GpuSample g;
      g.index = static_cast<int>(i);
      g.uuid = "GPU-sim-" + std::to_string(i);
      g.name = gpus_[i].name;
      g.total_bytes = gpus_[i].memory_mb * 1024 * 1024;
      g.used_bytes = used[i];
      g.free_bytes = std::max<std::int64_t>(0, g.total_bytes - g.used_bytes);
      // Plausible readings that follow the load: an idle card is cool and quiet.
      const double load =
          g.total_bytes > 0 ? std::min(1.0, static_cast<double>(used[i]) / static_cast<double>(g.total_bytes))
                            : 0.0;
      g.utilization_ratio = used[i] > 0 ? 0.05 + 0.5 * load : 0.0;
      g.temperature_celsius = 30.0 + 40.0 * load;
      g.power_watts = 20.0 + 250.0 * load;
      out.gpus.push_back(std::move(g));
    }
    return out;
  }

 private:
  std::mutex mu_;
  std::vector<config::SimGpu> gpus_;
  fs::path sim_dir_;
  std::chrono::milliseconds lag_;
  const Clock& clock_;
  std::map<int, Clock::TimePoint> dead_since_;  // pid -> when first seen dead
};

}  // namespace

std::unique_ptr<GpuProbe> make_sim_probe(std::vector<config::SimGpu> gpus, std::filesystem::path sim_dir,
                                         std::chrono::milliseconds release_lag, const Clock& clock) {
  return std::make_unique<SimProbe>(std::move(gpus), std::move(sim_dir), release_lag, clock);
}

Result<void> write_sim_charge(const std::filesystem::path& sim_dir, int pid, int gpu, std::int64_t bytes) {
  std::error_code ec;
  fs::create_directories(sim_dir, ec);
  if (ec) return make_error("cannot create sim dir " + sim_dir.string() + ": " + ec.message());
  // Write a private temp file and rename it over the charge, so a reader never sees half a line.
  const fs::path tmp = sim_dir / ("." + std::to_string(pid) + ".charge.tmp");
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!out) return make_error("cannot write " + tmp.string());
    out << gpu << ' ' << bytes << '\n';
    out.flush();
    if (!out) return make_error("cannot write " + tmp.string());
  }
  fs::rename(tmp, charge_path(sim_dir, pid), ec);
  if (ec) return make_error("cannot rename " + tmp.string() + ": " + ec.message());
  return {};
}

void remove_sim_charge(const std::filesystem::path& sim_dir, int pid) {
  std::error_code ec;
  fs::remove(charge_path(sim_dir, pid), ec);
}

}  // namespace gpumod::backends
