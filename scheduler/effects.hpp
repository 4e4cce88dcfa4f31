// EffectRunner: carries out the core's Effects against the injected backends (Runner,
// Driver, GpuProbe) and turns what happened into completion events. Each call blocks for
// one backend operation; the Scheduler shell calls it from its worker threads, and tests
// may call it inline with fakes. Thread-safe: the only shared piece is the per-service
// driver table, guarded by its own mutex (drivers are made on first use per preset).
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "scheduler/effect.hpp"
#include "scheduler/scheduler.hpp"

namespace gpumod::scheduler {

class EffectRunner {
 public:
  EffectRunner(const Deps& deps, std::filesystem::path state_dir);

  // start, check_health, activate, sleep, wake, stop, verify. For a stop, `stop_signalled`
  // (may be empty) is called once the runner has sent SIGTERM (Runner::StopSignalled).
  OpDone run(const Effect& e, const backends::Runner::StopSignalled& stop_signalled = {});
  // poll: probe sample, exits and pids of the listed services.
  PollDone poll(const Effect& e);
  // persist: write the state file atomically (temp file + rename).
  Result<void> persist(const std::string& text);
  [[nodiscard]] std::filesystem::path state_file() const { return state_dir_ / "scheduler.json"; }

 private:
  backends::Driver* driver(const Effect& e);
  backends::Runner* runner(const config::Preset& p);
  // For a process-runner service that just answered: why its port is not its own ("" when it
  // is, or when no listener can be seen).
  std::string foreign_listener(const config::Preset& p);

  const Deps& deps_;
  std::filesystem::path state_dir_;
  std::mutex drivers_mu_;  // guards drivers_ only
  std::map<std::string, std::pair<std::shared_ptr<const config::Preset>, std::shared_ptr<backends::Driver>>>
      drivers_;
};

// Reads <state_dir>/scheduler.json ("" when missing or unreadable).
std::string read_state_file(const std::filesystem::path& state_dir);

}  // namespace gpumod::scheduler
