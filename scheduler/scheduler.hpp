// Scheduler: the single thread that owns every piece of mutable state (services, GPUs,
// ledger, queue, leases). Callers on other threads post commands and get futures (and, if they
// must not block a thread on them, a Notify when each is ready); backend
// work (start, health polling, sleep, stop, VRAM release waits) runs on worker threads and
// posts completion events back. Readers get an immutable snapshot published after each change.
// One deliberate exception: a request for a ready model is answered on the caller's thread
// (submit, release_lease), through what scheduler/fast_path.hpp shares and says why.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backends/driver.hpp"
#include "backends/gpu_probe.hpp"
#include "backends/port_owner.hpp"
#include "backends/runner.hpp"
#include "base/clock.hpp"
#include "base/result.hpp"
#include "config/config.hpp"
#include "exporter/metrics.hpp"
#include "policy/planner.hpp"
#include "scheduler/event_log.hpp"

namespace gpumod::scheduler {

// Everything the scheduler drives, injected so tests can use in-memory fakes.
struct Deps {
  const Clock* clock = &SystemClock::instance();
  exporter::Metrics* metrics = nullptr;  // may be null in tests
  backends::GpuProbe* probe = nullptr;
  backends::Runner* process_runner = nullptr;
  backends::Runner* systemd_runner = nullptr;  // null => presets with runner: systemd fail to start
  std::function<std::unique_ptr<backends::Driver>(const config::Preset&)> make_driver;
  // Builds the launch spec (argv, env, log path) for a preset on a GPU.
  std::function<Result<backends::LaunchSpec>(const config::Preset&, int gpu)> make_launch;
  // Re-reads the config from where it came from (for reload); null => reload unsupported.
  std::function<config::LoadResult()> load_config;
  std::size_t worker_threads = 8;
  // Who listens on a TCP port (backends/port_owner.hpp's tcp_listeners in the daemon). Null:
  // no port checks (the tests' fake services bind nothing). With it, a start fails at once when
  // the service's port is already held, and a process-runner service is ready only once the
  // listener on its port is one of its own processes. `look_first`: pids likely to hold it (the
  // service's own), read first so that the common case does not scan every process.
  std::function<std::vector<backends::PortListener>(int port, const std::vector<int>& look_first)>
      port_listeners;
  // Fault injection for tests of the product as it runs (serve installs it from
  // GPUMOD_FAULT_STALL): called on the scheduler thread before each step of the loop, with the
  // step's name ("mode switch", "tick", ...). Null in normal use.
  std::function<void(const char* step)> before_step;
  // Where the services' logs are (backends/service_log.hpp). A failure's event is followed by a
  // service.log_tail event with the last lines of the service's log, read on a worker. Empty:
  // no tails.
  std::filesystem::path log_dir;
};

// Whether the scheduler thread still turns, for /healthz and the systemd watchdog. The loop
// turns at least twice a second even when idle, so a turn older than policy.stall_timeout
// means one step of it is stuck (a blocking call where none belongs, a deadlock): then
// `stalled` is true and `in_flight` names the step.
struct LoopHealth {
  bool running = false;  // start() ran and stop() did not
  bool stalled = false;
  std::chrono::milliseconds since_last_turn{0};
  std::chrono::milliseconds stall_timeout{10000};
  std::string in_flight;  // the step running now, "" while the loop waits for work
  std::chrono::milliseconds in_flight_for{0};
};

enum class RequestStatus { queued, admitted, ready, rejected, timed_out, cancelled };
const char* to_string(RequestStatus s);

// Why the scheduler said no, with the message for a person beside it. The scheduler speaks no
// protocol: api/ maps each kind to an HTTP status (docs/api.md), the CLI to an exit code.
enum class Refusal {
  none,         // not refused
  unknown,      // no such model, service or mode
  conflict,     // the id is in use, the request was cancelled, another operation is in progress,
                // or the service's state does not allow it
  never_fits,   // the model cannot fit on any GPU it may use, whatever is evicted
  queue_full,   // the admission queue is full: retry later
  unavailable,  // not now: a start failed, the VRAM was not released in time, the service was
                // stopped meanwhile, the scheduler is not running
  deadline,     // the request's deadline passed
  failed,       // the backend failed an operation that should not fail (a stop)
};
const char* to_string(Refusal r);

struct RequestSpec {
  std::string model;
  std::optional<int> priority;                       // default: the service's priority
  std::optional<std::chrono::milliseconds> timeout;  // default: policy.default_request_timeout
  std::optional<std::chrono::seconds> keep_alive;    // extends the service's keep-alive
  bool hold_lease = false;                           // proxy: hold a lease from ready until release_lease()
  std::string request_id;                            // set by the caller (HTTP request id) or generated
};

using LeaseId = std::uint64_t;

// A wake-up for a caller that must not block a thread on a future (the HTTP loop answers
// thousands of waiting clients with none). Called once, right after its future became ready, on
// whichever thread made it ready: the scheduler thread, the thread that stops the scheduler, or
// the caller's own inside the call when the answer is immediate. It must be short and must not
// block or call back into the Scheduler: post to your own loop and look at the future there.
using Notify = std::function<void()>;

struct RequestOutcome {
  std::string request_id;
  RequestStatus status = RequestStatus::queued;
  Refusal refusal = Refusal::none;  // why not ready (rejected, timed out, cancelled)
  std::string message;              // for a person
  std::string service;
  std::string endpoint;  // "http://127.0.0.1:PORT"
  int gpu = -1;
  double waited_seconds = 0;
  std::optional<LeaseId> lease;
  int retry_after_seconds = 0;  // for queue_full and unavailable
};

struct RequestTicket {
  std::string request_id;
  std::shared_future<RequestOutcome> outcome;
  // Ready once the scheduler has taken the request in (queued, joined a load, or decided) and
  // published a snapshot that shows it, so request_info() and cancel() know the id. Before
  // that, a caller that answers "queued" would send its client to a 404. Not valid: taken in.
  std::shared_future<void> accepted;
};

struct RequestInfo {
  std::string request_id;
  std::string model;
  std::string service;
  RequestStatus status = RequestStatus::queued;
  int priority = 0;
  double age_seconds = 0;
  std::optional<RequestOutcome> outcome;
};

enum class ServiceAction { start, stop, sleep, wake };
const char* to_string(ServiceAction a);

struct ActionResult {
  bool ok = false;
  Refusal refusal = Refusal::none;
  std::string message;
};

// As the predecessor's ModeResult: what a mode switch did.
struct ModeResult {
  bool ok = false;
  Refusal refusal = Refusal::none;
  std::string mode;
  std::vector<std::string> started, stopped, slept, woken;
  std::vector<std::string> errors;
  double seconds = 0;
};

struct ReloadResult {
  bool ok = false;
  std::string message;  // errors (file:line: key: message) or a summary of what changed
  std::vector<std::string> added, removed, changed;
};

struct ServiceSnapshot {
  std::string id;
  std::string driver;
  std::string runner;
  policy::SvcState state = policy::SvcState::stopped;
  int gpu = -1;
  int port = 0;
  std::int64_t vram_bytes = 0;
  std::optional<std::int64_t> measured_bytes;
  int priority = 0;
  bool pinned = false;
  int leases = 0;
  int pid = 0;
  std::vector<std::string> models;  // model ids and aliases it answers to
  std::string last_error;
  double state_seconds = 0;  // time in the current state
  double cold_start_estimate_s = 0;
  double wake_estimate_s = 0;
};

struct GpuSnapshot {
  int index = 0;
  std::string uuid, name;
  std::int64_t total_bytes = 0, used_bytes = 0, free_bytes = 0, ledger_bytes = 0, effective_free_bytes = 0;
  std::optional<double> utilization_ratio, temperature_celsius, power_watts;
};

struct Snapshot {
  std::vector<GpuSnapshot> gpus;
  std::vector<ServiceSnapshot> services;
  std::vector<RequestInfo> queue;
  std::string current_mode;  // empty while a switch runs or after one failed
  std::string switching_to;  // the mode a switch in progress is heading to
  // The last 256 requests the scheduler thread decided (served, refused, timed out, cancelled),
  // newest last. Answers the shell gave from the snapshot for a ready model are not kept (the
  // caller had the answer at once; keeping them would cost the fast path); a duplicate id's
  // refusal is not kept either (the id belongs to the live request).
  std::shared_ptr<const std::vector<RequestInfo>> recent;
  bool probe_up = true;
  std::string probe_kind;
  std::string config_source;
  std::string reload_error;   // why the last reload was refused ("" after a good one, or none yet)
  std::uint64_t version = 0;  // increments on every publish
};

struct DryRun {
  policy::Plan plan;
  std::string service;
  std::vector<std::string> steps;  // "sleep qwen3-coder on GPU 0 (frees 19.5 GiB)" ...
};

class Scheduler {
 public:
  Scheduler(config::Config config, Deps deps);
  ~Scheduler();  // stops the thread; running services keep running (a restart adopts them)
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  void start();  // adopts running services, then starts the loop
  void stop();

  // Any thread. `on_decided` follows ticket.outcome, `on_accepted` ticket.accepted (see Notify).
  RequestTicket submit(RequestSpec spec, Notify on_decided = {}, Notify on_accepted = {});
  std::optional<RequestInfo> request_info(const std::string& request_id) const;
  // Any thread. Answered after the snapshot that shows the request cancelled is published.
  std::future<Result<void>> cancel(const std::string& request_id, Notify on_done = {});
  void release_lease(LeaseId lease);

  // Any thread; each future is answered once the operation is over (a start: once the service
  // is ready or failed), or at once when the scheduler is not running.
  std::future<ActionResult> service_action(const std::string& service_id, ServiceAction action,
                                           Notify on_done = {});
  std::future<ModeResult> switch_mode(const std::string& mode_id, Notify on_done = {});
  std::future<ReloadResult> reload(Notify on_done = {});
  std::future<Result<DryRun>> dry_run(const std::string& model, Notify on_done = {});

  [[nodiscard]] std::shared_ptr<const Snapshot> snapshot() const;
  // Any thread; a few atomic loads.
  [[nodiscard]] LoopHealth loop_health() const;
  [[nodiscard]] std::shared_ptr<const config::Config> config() const;
  // Any thread: what the scheduler decided and why, for GET /events (event_log.hpp).
  [[nodiscard]] EventLog& events();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace gpumod::scheduler
