// SchedulerCore: the deterministic, single-threaded state machine behind the Scheduler.
// It owns all scheduling state (services and their lifecycle, GPUs as last sampled, the
// ledger, the admission queue, leases, keep-alive, cost estimates, the current mode) and
// never calls a backend, a clock or a thread. Inputs are method calls carrying the time
// (`now`); outputs are Effects for the shell to run (start S on G, check health, activate,
// sleep, wake, stop, poll the probe and the runners, verify an adopted service, persist the
// state file) plus the outcomes of requests and commands. Every effect that does work has an
// `op` id; its completion comes back through on_op_done() with the same id, and a completion
// whose id is no longer current (the service moved on) is ignored.
//
// The full rules (state machine, release wait, queue, reload, adoption) are in
// docs/scheduler.md.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "backends/driver.hpp"
#include "backends/gpu_probe.hpp"
#include "backends/runner.hpp"
#include "base/clock.hpp"
#include "base/result.hpp"
#include "config/config.hpp"
#include "exporter/metrics.hpp"
#include "policy/planner.hpp"
#include "scheduler/admission_queue.hpp"
#include "scheduler/effect.hpp"
#include "scheduler/event.hpp"
#include "scheduler/lease_gate.hpp"
#include "scheduler/scheduler.hpp"

namespace gpumod::scheduler {

struct Completion {
  std::string request_id;
  RequestOutcome outcome;
};
template <typename T>
struct CommandDone {
  std::uint64_t token = 0;
  T result;
};

struct CoreOutput {
  std::vector<Effect> effects;
  std::vector<Completion> requests;
  std::vector<CommandDone<ActionResult>> actions;
  std::vector<CommandDone<ModeResult>> modes;
  std::vector<CommandDone<ReloadResult>> reloads;
  std::vector<SchedEvent> events;  // what was decided and why, in order (event.hpp)
  bool changed = false;  // the snapshot would differ
};

class SchedulerCore {
 public:
  // metrics may be null.
  SchedulerCore(config::Config config, exporter::Metrics* metrics);
  ~SchedulerCore();
  SchedulerCore(const SchedulerCore&) = delete;
  SchedulerCore& operator=(const SchedulerCore&) = delete;

  // --- inputs ---
  // Daemon start: what the runners re-adopted plus the persisted state file (may be empty).
  void adopt(const std::vector<backends::RunInfo>& running, const std::string& state_file_json,
             TimePoint now);
  // A probe sample taken at or after `taken` (tests feed samples directly this way).
  void on_probe_sample(const backends::ProbeSample& sample, TimePoint taken, TimePoint now);
  void on_probe_error(const std::string& message, TimePoint now);
  void on_poll_done(PollDone done, TimePoint now);
  void on_op_done(const OpDone& done, TimePoint now);
  // A stop effect's SIGTERM went out (Runner::StopSignalled). Bring-ups waiting for that
  // service's memory start watching the GPU now instead of after the process is gone; ones
  // that need its port still wait for the stop to finish.
  void on_stop_signalled(std::uint64_t op, TimePoint now);
  void on_process_exit(const std::string& service, const backends::ExitInfo& exit, TimePoint now);
  void tick(TimePoint now);

  // A ready model answers at once (in the output); otherwise the request joins a load under
  // way or waits in the queue.
  void submit(RequestSpec spec, TimePoint now);
  // `count` requests for a ready model that the shell answered from the published snapshot
  // without a round trip (Scheduler::submit), the last of them at `answered` (the shell records
  // them in batches, so it may be a little in the past): record the use (LRU, keep-alive,
  // admission wait 0).
  void note_served(const std::string& service, std::optional<std::chrono::seconds> keep_alive,
                   std::uint64_t count, TimePoint answered);
  Result<void> cancel(const std::string& request_id, TimePoint now);
  // A lease the core handed out (serve with hold_lease). Gate leases are given back to gates().
  void release_lease(LeaseId lease, TimePoint now);
  // The gate of the service in `slot` emptied while the core waited for it (LeaseGates::release
  // said notify): go on with what waited (deferred stop, eviction, mode drain).
  void on_gate_drained(std::size_t slot, TimePoint now);
  void service_action(std::uint64_t token, const std::string& service, ServiceAction action, TimePoint now);
  void switch_mode(std::uint64_t token, const std::string& mode, TimePoint now);
  void reload(std::uint64_t token, const config::LoadResult& loaded, TimePoint now);
  [[nodiscard]] Result<DryRun> dry_run(const std::string& model, TimePoint now) const;

  // The lease gates of the services (docs/scheduler.md "Leases and keep-alive"). The core opens
  // and closes them; any thread may take and give back leases through them. The object lives
  // as long as the core.
  [[nodiscard]] LeaseGates& gates();

  // --- outputs ---
  // Also opens the gate of every service that is ready, idle and not retiring and closes the
  // others, so a gate opens only once the input that made the service ready is done.
  CoreOutput take_output();
  [[nodiscard]] Snapshot snapshot(TimePoint now) const;
  [[nodiscard]] const config::Config& config() const;
  [[nodiscard]] std::shared_ptr<const config::Config> shared_config() const;
  // When the shell should call tick() next at the latest.
  [[nodiscard]] TimePoint next_wakeup(TimePoint now) const;

  // Single-threaded: every method but gates() is for one thread at a time, the first that calls
  // one (checked in debug builds, base/thread_owner.hpp). The shell hands the core over with
  // this when its loop starts and when a stop drains what is left.
  void bind_to_current_thread();

  // --- for tests and the shell ---
  [[nodiscard]] policy::SvcState state_of(const std::string& service) const;
  [[nodiscard]] std::string last_error_of(const std::string& service) const;
  [[nodiscard]] std::size_t queue_length() const;
  [[nodiscard]] std::string persisted_state_json() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace gpumod::scheduler
