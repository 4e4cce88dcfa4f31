// What the scheduler core asks the shell to do (Effect) and what comes back when it is done
// (OpDone for one backend operation, PollDone for a poll). The core emits Effects and consumes
// the completions (core.hpp); EffectRunner carries them out (effects.hpp). Plain values: they
// are made on the core's thread, run on a worker, and the completion is handed back.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "backends/driver.hpp"
#include "backends/gpu_probe.hpp"
#include "backends/runner.hpp"
#include "base/result.hpp"
#include "config/config.hpp"

namespace gpumod::scheduler {

struct Effect {
  enum class Kind {
    start,         // driver.preflight(gpu_free, gpu_total), make_launch(preset, gpu), runner.start
    check_health,  // one driver.health() call
    activate,      // driver.activate(timeout)
    sleep,         // driver.sleep()
    wake,          // driver.wake()
    stop,          // runner.stop(service, grace)
    poll,          // probe.sample(), runner.poll_exit() and runner.pids() for `services`
    verify,        // adopted service: driver.health() and driver.is_sleeping()
    persist        // write `text` to <state_dir>/scheduler.json atomically
  };
  Kind kind = Kind::poll;
  std::uint64_t op = 0;
  std::string service;
  int gpu = -1;
  std::shared_ptr<const config::Preset> preset;                 // for the driver and runner of `service`
  std::chrono::milliseconds timeout{0};                         // activate: timeout; stop: grace
  std::int64_t gpu_free_bytes = 0, gpu_total_bytes = 0;         // start: for driver preflight
  std::vector<std::shared_ptr<const config::Preset>> services;  // poll: running services
  std::string text;                                             // persist
};
const char* to_string(Effect::Kind k);

// The completion of one effect.
struct OpDone {
  std::uint64_t op = 0;
  bool ok = true;
  std::string message;                               // error text when !ok
  backends::RunInfo run;                             // start
  backends::Health health = backends::Health::down;  // check_health, verify
  std::string health_detail;
  bool sleeping = false;  // verify
};

// What a poll found.
struct PollDone {
  std::uint64_t op = 0;
  Result<backends::ProbeSample> sample = Error{"not sampled"};
  std::vector<std::pair<std::string, backends::ExitInfo>> exits;  // services whose process ended
  std::map<std::string, std::vector<int>> pids;                   // service -> its pids
};

}  // namespace gpumod::scheduler
