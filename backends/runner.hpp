// Runner: how a service's process lives (started, watched, stopped, re-adopted).
// Two implementations: the embedded process runner (fork/exec into its own process group)
// and the systemd runner (units over sd-bus). Calls may block (stop waits for exit) and are
// made from the scheduler's worker threads, never from the scheduler thread itself.
// Implementations are safe to call concurrently for different services.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/result.hpp"

namespace gpumod::backends {

struct LaunchSpec {
  std::string service_id;
  std::vector<std::string> argv;           // argv[0] is a path or a name looked up in PATH
  std::map<std::string, std::string> env;  // added to (and overriding) gpumod's environment
  std::filesystem::path log_path;          // process runner: stdout+stderr go here (size-capped)
  std::string unit;                        // systemd: a named unit to start; empty => transient
  std::filesystem::path working_dir;       // empty => state dir
};

// What a runner remembers about a live service; persisted so a restarted daemon adopts it.
struct RunInfo {
  std::string service_id;
  int pid = 0;                   // main pid (process runner) or MainPID (systemd)
  int pgid = 0;                  // process group (process runner)
  std::uint64_t start_time = 0;  // /proc/<pid>/stat starttime: guards against pid reuse
  std::string argv_hash;         // hash of the argv it was started with: a changed preset restarts
  std::string unit;              // systemd unit name
};

struct ExitInfo {
  int exit_code = -1;  // -1 when killed by a signal
  int signal = 0;
  std::string message;  // e.g. "exited with status 1; last log lines: ..."
};

class Runner {
 public:
  virtual ~Runner() = default;
  virtual const char* kind() const = 0;

  virtual Result<RunInfo> start(const LaunchSpec& spec) = 0;
  // Called (on the stopping thread) once the stop request has gone out: SIGTERM sent to the
  // group, or the unit's stop job queued. The scheduler starts watching GPU memory from here,
  // because a model server frees its VRAM well before its process is gone (docs/gpu-release.md).
  using StopSignalled = std::function<void()>;

  // SIGTERM the whole group (or stop the unit), SIGKILL after `grace`; returns once nothing
  // of the service is left running. `signalled` may be empty; it is called at most once, and
  // not at all when nothing was running.
  virtual Result<void> stop(const std::string& service_id, std::chrono::milliseconds grace,
                            const StopSignalled& signalled) = 0;
  Result<void> stop(const std::string& service_id, std::chrono::milliseconds grace) {
    return stop(service_id, grace, StopSignalled{});
  }
  // Non-blocking. Returns the exit once when a service's process has ended on its own.
  virtual std::optional<ExitInfo> poll_exit(const std::string& service_id) = 0;
  virtual bool running(const std::string& service_id) = 0;
  // Every pid that belongs to the service (its process group or cgroup), for GPU attribution.
  virtual std::vector<int> pids(const std::string& service_id) = 0;
  // Read the persisted state: re-adopt what still runs (same pid and start time), forget
  // and clean up what does not. Called once at daemon start.
  virtual std::vector<RunInfo> adopt() = 0;
};

// state_dir holds runner state (written atomically) and is created if missing.
std::unique_ptr<Runner> make_process_runner(const std::filesystem::path& state_dir);
// user_bus: sd_bus_open_user (default) or the system bus.
Result<std::unique_ptr<Runner>> make_systemd_runner(const std::filesystem::path& state_dir, bool user_bus);

// systemd's daemon-reload (Manager.Reload over sd-bus): after a unit file was installed or
// changed, so that a named unit can be started with it.
Result<void> systemd_daemon_reload(bool user_bus);

// A stable hash of an argv (and env), used to notice a changed preset.
std::string hash_argv(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env);

}  // namespace gpumod::backends
