// Private to the scheduler core's implementation (the core*.cpp files; nothing else includes it):
// the state the core keeps per service, request and mode switch, and SchedulerCore::Impl, whose
// methods are defined by concern:
//   core.cpp            construction, lease gates, state changes, effects, the ledger and views
//                       for the planner; SchedulerCore's entry points
//   core_requests.cpp   request outcomes, admission (pumping the queue, running plans, evicting),
//                       leases and cancel
//   core_lifecycle.cpp  completions of ops (launch, health, sleep, stop, verify), idle handling,
//                       probe samples, polls, process exits and ticks
//   core_commands.cpp   service actions, mode switches and reload
//   core_views.cpp      adoption, persistence, snapshots and dry runs
// Everything here runs on the one thread that drives the core (see core.hpp); nothing blocks
// or reads a clock.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "base/thread_owner.hpp"
#include "scheduler/core.hpp"

namespace gpumod::scheduler {
namespace core_detail {

using policy::Bytes;
using policy::SvcState;
using Seconds = std::chrono::duration<double>;

inline constexpr Bytes kMiB = Bytes{1024} * 1024;
inline constexpr double kEwmaAlpha = 0.3;
inline constexpr int kQueueFullRetryAfter = 5;
inline constexpr std::size_t kRecentOutcomes = 256;
// Probe polling while something moves but no start waits for memory (loads, sleeps, stops):
// only metrics and crash detection depend on it, so it need not be as fast as a release wait.
inline constexpr auto kBusyPollInterval = std::chrono::milliseconds(50);

// What a service is doing beyond its public state.
enum class Phase {
  idle,         // nothing in flight
  vram_wait,    // admitted: waiting for its evictions to finish and the probe to show the memory free
  launching,    // runner.start in flight
  waking_op,    // driver.wake in flight
  health,       // waiting for health (periodic check_health)
  activating,   // driver.activate in flight
  sleeping_op,  // driver.sleep in flight
  stopping_op,  // runner.stop in flight
  verifying     // adopted at start: verify in flight
};

inline bool bringing_up(Phase p) {
  return p == Phase::vram_wait || p == Phase::launching || p == Phase::waking_op || p == Phase::health ||
         p == Phase::activating || p == Phase::verifying;
}
// Phases in which the service may be allocating memory on its GPU right now.
inline bool loading(Phase p) {
  return p == Phase::launching || p == Phase::waking_op || p == Phase::health || p == Phase::activating ||
         p == Phase::verifying;
}

inline double secs(Clock::Duration d) {
  return std::chrono::duration_cast<Seconds>(d).count();
}

inline std::string fmt_secs(Clock::Duration d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f s", secs(d));
  return buf;
}

struct RequestRec {
  RequestSpec spec;
  std::string service;
  RequestStatus status = RequestStatus::queued;
  int priority = 0;
  TimePoint enqueued{};
  TimePoint deadline{};
};

struct Svc {
  std::shared_ptr<const config::Preset> preset;
  SvcState state = SvcState::stopped;
  Phase phase = Phase::idle;
  int gpu = -1;
  std::uint64_t op = 0;  // the op in flight (0: none)
  TimePoint state_since{};
  // bring-up
  bool wake_path = false;
  std::set<std::string> awaiting;  // evictions this bring-up waits for
  bool had_evictions = false;
  Bytes wait_bytes = 0;
  std::optional<TimePoint> vram_wait_since;
  bool wait_noted = false;  // this bring-up's wait for memory has been reported (note)
  TimePoint bringup_started{};
  TimePoint deadline{};  // health deadline while launching/health/activating
  TimePoint next_health{};
  std::string last_health;
  std::vector<std::string> waiters;  // request ids joined to this bring-up
  // after the op in flight ends
  bool stop_after_op = false;
  std::string stop_reason;
  // usage
  std::size_t gate = 0;  // slot of its lease gate (LeaseGates)
  int leases = 0;        // leases handed out by serve(); gate leases are counted by the gate
  std::int64_t last_used = 0;
  TimePoint keep_alive_until{};
  std::optional<double> cold_est, wake_est;
  std::string last_error;
  std::vector<int> pids;
  std::optional<Bytes> measured;
  // commands waiting on this service
  std::vector<std::uint64_t> tokens_ready, tokens_stopped, tokens_slept;
  // reload
  bool retire = false;
  std::shared_ptr<const config::Preset> restart_with;
  bool start_after_stop = false;
};

struct ModeJob {
  std::uint64_t token = 0;
  std::string mode;
  std::set<std::string> members;
  TimePoint started{};
  TimePoint drain_deadline{};
  TimePoint bringup_deadline{};
  bool bringing_up = false;
  std::set<std::string> attempted;
  std::set<std::string> stop_issued;
  ModeResult result;
};

inline bool same_launch(const config::Preset& a, const config::Preset& b) {
  return static_cast<const config::LaunchSettings&>(a) == static_cast<const config::LaunchSettings&>(b);
}

}  // namespace core_detail
// The core's files share these names; core_detail keeps them out of other translation units.
using namespace core_detail;

struct SchedulerCore::Impl {
  ThreadOwner owner;  // the thread that drives the core (checked in debug builds)
  std::shared_ptr<const config::Config> cfg;
  exporter::Metrics* metrics;
  AdmissionQueue queue;
  std::map<std::string, Svc> svcs;  // ordered: deterministic iteration
  std::map<std::string, RequestRec> requests;
  std::deque<RequestInfo> recent;
  mutable std::shared_ptr<const std::vector<RequestInfo>> recent_cache;
  std::map<LeaseId, std::string> leases;  // the core's own leases (serve); never the gate bit
  LeaseId next_lease = 1;
  // Every Svc holds a slot here (add_svc). Shared with other threads: the shell's fast path
  // takes and gives back leases through it. Never replaced while the core lives.
  std::unique_ptr<LeaseGates> gates = std::make_unique<LeaseGates>();
  std::uint64_t next_op = 1;
  std::uint64_t next_request = 1;
  std::map<std::uint64_t, std::string> op_owner;  // op -> service
  // GPUs as last sampled
  std::map<int, backends::GpuSample> gpus;
  std::vector<backends::ProcessMemory> processes;
  // Which service started a pid, for messages naming who holds VRAM ("pid 1234 (qwen3-coder)"),
  // also after the service stopped while its process still lingers on the GPU. Kept only for
  // pids of a service or seen on a GPU in the last sample (prune_pid_owner), so it cannot grow
  // with restarts.
  std::map<int, std::string> pid_owner;
  std::optional<TimePoint> sample_taken;
  // When memory on a GPU last changed because of gpumod (a load finished, a sleep or stop freed
  // memory, a process exited). A sample taken before that is stale for this GPU: planning on
  // it would see memory as still held (evicting more than needed) or a finished load's memory
  // as still free. Planning and launching wait for a sample taken after it.
  std::map<int, TimePoint> gpu_changed;
  // Start/wake commands that arrived while a GPU's sample was stale; replayed on the next one.
  struct DeferredAdmit {
    std::optional<std::uint64_t> token;  // empty: an internal restart (no one to answer)
    std::string service;
    ServiceAction action = ServiceAction::start;
    TimePoint since{};
  };
  std::vector<DeferredAdmit> deferred_admits;
  std::set<int> registered_gpus;
  bool probe_up = true;
  std::string probe_error;
  std::uint64_t poll_op = 0;
  TimePoint poll_emitted{};
  TimePoint next_poll{};
  bool poll_now = true;
  std::string current_mode;
  std::string reload_error;  // the last reload's refusal, until one succeeds
  std::optional<ModeJob> mode_job;
  bool in_progress_mode = false;
  std::string persisted;
  bool persist_dirty = false;
  CoreOutput out;

  Impl(config::Config c, exporter::Metrics* m);
  Svc& add_svc(const std::string& id);

  // ---------- lease gates ----------
  // Rule: a service's gate is open exactly while the core itself would serve a request for it
  // at once (serves_now). Forced ways out (a crash, an exit, removal by a reload) close it
  // regardless of its count; the ways out that gpumod chooses (eviction, sleep/stop commands,
  // mode drain, deferred stop, restart) first claim() the service.
  LeaseGate& gate_of(const Svc& s) const { return *gates->gate(s.gate); }
  static bool serves_now(const Svc& s);
  // Leases of both kinds, for reports (snapshot, messages).
  int leases_of(const Svc& s) const { return s.leases + static_cast<int>(gate_of(s).count()); }
  // Leases of both kinds for a decision that may wait for them: the gate then reports when its
  // leases end (on_gate_drained), as release_lease does for the core's own.
  int busy_leases(const Svc& s) const { return s.leases + static_cast<int>(gate_of(s).watch()); }
  // gpumod wants `s` out of ready: true (and its gate closed) when no lease of either kind is
  // held. Otherwise the service stays as it is, busy; the end of the last lease calls back
  // (release_lease or on_gate_drained) and the caller's decision is taken again.
  bool claim(Svc& s) { return s.leases == 0 && gate_of(s).try_close(); }
  void close_gate(Svc& s);
  void sync_gates();
  const config::PolicySettings& policy() const { return cfg->daemon.policy; }
  Bytes headroom() const { return policy().headroom_mb * kMiB; }
  // The configured services and modes get their series (at 0 where new; removed where gone).
  void register_services();

  // ---------- events ----------
  // Records one decision or observation for GET /events (event.hpp) and writes its message to
  // the daemon's log at `level`: the one way the core reports what it did and why.
  enum class Log { debug, info, warn };
  void note(Log level, SchedEvent e);
  static SchedEvent event(const char* kind, const std::string& service, std::string message,
                          nlohmann::json detail = nlohmann::json::object());

  // ---------- state ----------
  void set_state(const std::string& id, Svc& s, SvcState st, TimePoint now);
  std::uint64_t new_op(const std::string& id, Svc& s);
  void clear_op(Svc& s);
  Effect effect(Effect::Kind kind, const std::string& id, Svc& s);
  Bytes charge(const Svc& s) const;
  Bytes ledger(int gpu) const;
  bool gpu_allowed(int index) const;
  // Also asks for a sample at once: plans wait for one, and the measured VRAM a user sees
  // right after a load or a release should not be up to idle_poll_interval old.
  void mark_gpu_changed(int gpu, TimePoint now);
  bool sample_fresh(int gpu) const;
  // Every GPU the planner may use has a sample taken after gpumod's last change there.
  bool views_fresh() const;
  std::vector<policy::GpuView> gpu_views() const;
  // The planner's view. Services with something in flight are shown in the state that
  // protects them (a service going to sleep is charged in full and shown as stopping).
  std::vector<policy::ServiceView> service_views(TimePoint now, std::vector<std::string>* ids) const;
  std::string endpoint(const Svc& s) const { return "http://127.0.0.1:" + std::to_string(s.preset->port); }

  // ---------- request outcomes ----------
  // Every decided request is kept for request_info() (the last kRecentOutcomes), also those
  // answered at once: a client that asked with wait:false may have been told 202 before the
  // scheduler thread decided, and follows up with GET /requests/{id}.
  void finish_request(const std::string& rid, RequestOutcome o, TimePoint now);
  void remember(const std::string& rid, const std::string& model, const std::string& service, int priority,
                const RequestOutcome& o);
  // A request now waits for its service's bring-up (joined it, or taken out of the queue for it).
  void note_admitted(const std::string& rid, const RequestRec& r, const char* how);
  void fail_request(const std::string& rid, RequestStatus st, Refusal why, const std::string& msg,
                    TimePoint now, int retry_after = 0);
  // The request is served by the ready service `id`.
  void serve(const std::string& rid, const std::string& id, Svc& s, TimePoint now);
  void touch(Svc& s, std::optional<std::chrono::seconds> keep_alive, TimePoint now);
  void fail_waiters(Svc& s, Refusal why, const std::string& msg, TimePoint now, int retry_after);
  void finish_action(std::vector<std::uint64_t>& tokens, bool ok, Refusal why, const std::string& msg);
  void update_queue_metrics(TimePoint now);

  // ---------- admission ----------
  void submit(RequestSpec spec, TimePoint now);
  // Move every queued request for `id` to its bring-up (or serve them when it is ready).
  void absorb_queued(const std::string& id, Svc& s, TimePoint now);
  void pump(TimePoint now);
  // Start running a plan whose target is `target`. False (nothing done) when a victim took a
  // gate lease after the plan was made: the target waits as for any busy victim, and the end of
  // that lease plans again (the planner may also pick another victim then).
  bool execute(const std::string& target, const policy::Plan& plan, const std::vector<std::string>& ids,
               TimePoint now);
  void begin_sleep(const std::string& id, Svc& s, TimePoint now);
  void begin_stop(const std::string& id, Svc& s, const std::string& reason, TimePoint now);
  // Stop `id` whatever it is doing. Returns true when it is already stopped.
  bool request_stop(const std::string& id, Svc& s, const std::string& reason, TimePoint now);
  // A bring-up that never launched: back to where it was, memory never used.
  void abort_bringup(const std::string& id, Svc& s, const std::string& msg, TimePoint now, Refusal why,
                     int retry_after);
  // A launched bring-up failed: the service is failed and its process group is stopped.
  void fail_bringup(const std::string& id, Svc& s, const std::string& msg, TimePoint now);
  // Drive every admitted bring-up as far as it can go now.
  void advance(TimePoint now);
  void launch(const std::string& id, Svc& s, const backends::GpuSample& g, TimePoint now);
  void prune_pid_owner();
  // "pid 1234 (qwen3-coder) 19.5 GiB, pid 99 (not started by gpumod) 1.1 GiB" for one GPU.
  std::string holders_on(int gpu) const;
  void release_timeout(const std::string& id, Svc& s, TimePoint now);

  // ---------- op completions ----------
  void on_op_done(const OpDone& d, TimePoint now);
  void on_launched(const std::string& id, Svc& s, const OpDone& d, TimePoint now);
  void poll_health(const std::string& id, Svc& s, TimePoint now);
  void on_health(const std::string& id, Svc& s, const OpDone& d, TimePoint now);
  void become_ready(const std::string& id, Svc& s, TimePoint now);
  void on_slept(const std::string& id, Svc& s, const OpDone& d, TimePoint now);
  void on_stopped(const std::string& id, Svc& s, const OpDone& d, TimePoint now);
  void on_verified(const std::string& id, Svc& s, const OpDone& d, TimePoint now);
  // Requests that joined a bring-up which turned out not to bring the service up go back
  // to the queue with their original arrival time and deadline.
  void requeue_waiters(const std::string& id, Svc& s, TimePoint now);
  void eviction_done(const std::string& id);
  // A service became idle (ready or sleeping, no op): deferred stops, retire, restart.
  void after_idle(const std::string& id, Svc& s, TimePoint now);
  // Bring a service up outside the queue (service start, mode switch, restart).
  // Returns an error message when it cannot be admitted now.
  std::optional<std::string> admit_service(const std::string& id, Svc& s, int priority, TimePoint now,
                                           const std::set<std::string>* keep = nullptr,
                                           bool* waiting = nullptr);
  // A start/wake that finds a GPU's sample stale waits for the next one (see gpu_changed).
  bool defer_until_fresh(std::optional<std::uint64_t> token, const std::string& id, ServiceAction action,
                         TimePoint now);
  // Without samples (the probe is failing) deferred commands fail like a release wait would.
  void expire_deferred(TimePoint now);
  void admit_or_defer(std::optional<std::uint64_t> token, const std::string& id, ServiceAction action,
                      TimePoint now);
  void replay_deferred(TimePoint now);
  void on_stop_signalled(std::uint64_t op, TimePoint now);
  // The shell answered a request for the ready service `id` from its snapshot.
  void note_served(const std::string& id, std::optional<std::chrono::seconds> keep_alive, std::uint64_t count,
                   TimePoint answered);

  // ---------- polling ----------
  void on_probe_sample(const backends::ProbeSample& sample, TimePoint taken, TimePoint now);
  void on_poll_done(PollDone d, TimePoint now);
  void on_probe_error(const std::string& message, TimePoint now);
  void on_process_exit(const std::string& id, const backends::ExitInfo& exit, TimePoint now);
  // A start or wake is waiting for the probe to show memory free (or a mode switch for its
  // bring-up): sample at the fast vram_poll_interval.
  bool waiting_for_memory() const;
  bool moving() const;
  void tick(TimePoint now);
  void emit_poll(TimePoint now);

  // ---------- leases, cancel ----------
  void release_lease(LeaseId lease, TimePoint now);
  // The last gate lease of a service ended while something waited for it (watch/try_close).
  void on_gate_drained(std::size_t slot, TimePoint now);
  Result<void> cancel(const std::string& rid, TimePoint now);

  // ---------- service actions ----------
  void service_action(std::uint64_t token, const std::string& id, ServiceAction action, TimePoint now);

  // ---------- modes ----------
  void switch_mode(std::uint64_t token, const std::string& mode_id, TimePoint now);
  // Entered from many places (advance() after every event); a plan it executes re-enters
  // advance(), so nested calls are ignored and the outer pass carries on.
  void progress_mode(TimePoint now);
  void progress_mode_pass(TimePoint now);
  void finish_mode(TimePoint now);

  // ---------- reload ----------
  void reload(std::uint64_t token, const config::LoadResult& loaded, TimePoint now);
  void fail_queued_for(const std::string& id, Refusal why, const std::string& msg, TimePoint now);

  // ---------- adoption and persistence ----------
  void adopt(const std::vector<backends::RunInfo>& running, const std::string& json_text, TimePoint now);
  std::string state_json() const;
  void flush_persist();

  // ---------- read side ----------
  Snapshot snapshot(TimePoint now) const;
  RequestInfo info_of(const std::string& rid, RequestStatus st, TimePoint now) const;
  Result<DryRun> dry_run(const std::string& model, TimePoint now) const;
  TimePoint next_wakeup(TimePoint now) const;
};

}  // namespace gpumod::scheduler
