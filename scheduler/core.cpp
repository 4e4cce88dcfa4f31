// SchedulerCore implementation. See core.hpp for the contract and docs/scheduler.md for the
// rules. Everything here runs on one thread; nothing here blocks or reads a clock.
#include "scheduler/core.hpp"

#include <spdlog/spdlog.h>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>
#include <string_view>

#include "base/thread_owner.hpp"

namespace gpumod::scheduler {

using policy::Bytes;
using policy::SvcState;
using Seconds = std::chrono::duration<double>;

const char* to_string(Effect::Kind k) {
  switch (k) {
    case Effect::Kind::start:
      return "start";
    case Effect::Kind::check_health:
      return "check_health";
    case Effect::Kind::activate:
      return "activate";
    case Effect::Kind::sleep:
      return "sleep";
    case Effect::Kind::wake:
      return "wake";
    case Effect::Kind::stop:
      return "stop";
    case Effect::Kind::poll:
      return "poll";
    case Effect::Kind::verify:
      return "verify";
    case Effect::Kind::persist:
      return "persist";
  }
  return "unknown";
}

namespace {

constexpr Bytes kMiB = Bytes{1024} * 1024;
constexpr double kEwmaAlpha = 0.3;
constexpr int kQueueFullRetryAfter = 5;
constexpr std::size_t kRecentOutcomes = 256;
// Probe polling while something moves but no start waits for memory (loads, sleeps, stops):
// only metrics and crash detection depend on it, so it need not be as fast as a release wait.
constexpr auto kBusyPollInterval = std::chrono::milliseconds(50);

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

bool bringing_up(Phase p) {
  return p == Phase::vram_wait || p == Phase::launching || p == Phase::waking_op || p == Phase::health ||
         p == Phase::activating || p == Phase::verifying;
}
// Phases in which the service may be allocating memory on its GPU right now.
bool loading(Phase p) {
  return p == Phase::launching || p == Phase::waking_op || p == Phase::health || p == Phase::activating ||
         p == Phase::verifying;
}

double secs(Clock::Duration d) {
  return std::chrono::duration_cast<Seconds>(d).count();
}

std::string fmt_secs(Clock::Duration d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f s", secs(d));
  return buf;
}

struct Waiter {
  std::string request_id;
};

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

bool same_launch(const config::Preset& a, const config::Preset& b) {
  return static_cast<const config::LaunchSettings&>(a) == static_cast<const config::LaunchSettings&>(b);
}

}  // namespace

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
  std::optional<ModeJob> mode_job;
  bool in_progress_mode = false;
  std::string persisted;
  bool persist_dirty = false;
  CoreOutput out;

  Impl(config::Config c, exporter::Metrics* m)
      : cfg(std::make_shared<const config::Config>(std::move(c))),
        metrics(m),
        queue(cfg->daemon.policy.queue_max, cfg->daemon.policy.aging_interval) {
    for (const auto& p : cfg->presets) {
      add_svc(p.id).preset = std::make_shared<const config::Preset>(p);
    }
    register_services();
  }

  Svc& add_svc(const std::string& id) {
    Svc& s = svcs[id];
    s.gate = gates->add(id);
    return s;
  }

  // ---------- lease gates ----------
  // Rule: a service's gate is open exactly while the core itself would serve a request for it
  // at once (serves_now). Forced ways out (a crash, an exit, removal by a reload) close it
  // regardless of its count; the ways out that gpumod chooses (eviction, sleep/stop commands,
  // mode drain, deferred stop, restart) first claim() the service.
  LeaseGate& gate_of(const Svc& s) const { return *gates->gate(s.gate); }
  static bool serves_now(const Svc& s) {
    return s.state == SvcState::ready && s.phase == Phase::idle && !s.retire;
  }
  // Leases of both kinds, for reports (snapshot, messages).
  int leases_of(const Svc& s) const { return s.leases + static_cast<int>(gate_of(s).count()); }
  // Leases of both kinds for a decision that may wait for them: the gate then reports when its
  // leases end (on_gate_drained), as release_lease does for the core's own.
  int busy_leases(const Svc& s) const { return s.leases + static_cast<int>(gate_of(s).watch()); }
  // gpumod wants `s` out of ready: true (and its gate closed) when no lease of either kind is
  // held. Otherwise the service stays as it is, busy; the end of the last lease calls back
  // (release_lease or on_gate_drained) and the caller's decision is taken again.
  bool claim(Svc& s) { return s.leases == 0 && gate_of(s).try_close(); }
  void close_gate(Svc& s) {
    LeaseGate& g = gate_of(s);
    if (g.is_open()) g.force_close();
  }
  void sync_gates() {
    for (auto& [id, s] : svcs) {
      LeaseGate& g = gate_of(s);
      if (serves_now(s)) {
        if (!g.is_open()) g.open();
      } else if (g.is_open()) {
        g.force_close();
      }
    }
  }

  const config::PolicySettings& policy() const { return cfg->daemon.policy; }
  Bytes headroom() const { return policy().headroom_mb * kMiB; }

  // The configured services and modes get their series (at 0 where new; removed where gone).
  void register_services() {
    if (metrics == nullptr) return;
    std::vector<std::string> ids;
    for (const auto& [id, s] : svcs) ids.push_back(id);
    metrics->set_services(ids);
    std::vector<std::string> mode_ids;
    mode_ids.reserve(cfg->modes.size());
    for (const auto& m : cfg->modes) mode_ids.push_back(m.id);
    metrics->set_modes(mode_ids);
    for (const auto& [id, s] : svcs) {
      metrics->set_service_state(id, policy::to_string(s.state));
      metrics->set_service_vram(id, s.preset->vram_mb * kMiB, s.measured);
    }
  }

  // ---------- state ----------
  void set_state(const std::string& id, Svc& s, SvcState st, TimePoint now) {
    if (s.state == st) return;
    if (st != SvcState::ready) close_gate(s);
    s.state = st;
    s.state_since = now;
    persist_dirty = true;
    out.changed = true;
    if (metrics != nullptr && cfg->find_preset(id) != nullptr)
      metrics->set_service_state(id, policy::to_string(st));
  }

  std::uint64_t new_op(const std::string& id, Svc& s) {
    if (s.op != 0) op_owner.erase(s.op);
    s.op = next_op++;
    op_owner[s.op] = id;
    return s.op;
  }
  void clear_op(Svc& s) {
    if (s.op != 0) op_owner.erase(s.op);
    s.op = 0;
  }

  Effect effect(Effect::Kind kind, const std::string& id, Svc& s) {
    Effect e;
    e.kind = kind;
    e.op = new_op(id, s);
    e.service = id;
    e.gpu = s.gpu;
    e.preset = s.preset;
    return e;
  }

  Bytes charge(const Svc& s) const {
    const Bytes full = s.preset->vram_mb * kMiB;
    switch (s.state) {
      case SvcState::starting:
      case SvcState::ready:
      case SvcState::waking:
      case SvcState::stopping:
        return full;
      case SvcState::sleeping:
        return s.phase == Phase::sleeping_op ? full : s.preset->sleep_residual_mb() * kMiB;
      case SvcState::stopped:
      case SvcState::failed:
        return 0;
    }
    return 0;
  }

  Bytes ledger(int gpu) const {
    Bytes sum = 0;
    for (const auto& [id, s] : svcs) {
      if (s.gpu == gpu) sum += charge(s);
    }
    return sum;
  }

  bool gpu_allowed(int index) const {
    const auto& allowed = cfg->daemon.gpus;
    return allowed.empty() || std::find(allowed.begin(), allowed.end(), index) != allowed.end();
  }

  // Also asks for a sample at once: plans wait for one, and the measured VRAM a user sees
  // right after a load or a release should not be up to idle_poll_interval old.
  void mark_gpu_changed(int gpu, TimePoint now) {
    if (gpu < 0) return;
    gpu_changed[gpu] = now;
    poll_now = true;
  }
  bool sample_fresh(int gpu) const {
    const auto it = gpu_changed.find(gpu);
    return it == gpu_changed.end() || (sample_taken && *sample_taken >= it->second);
  }
  // Every GPU the planner may use has a sample taken after gpumod's last change there.
  bool views_fresh() const {
    for (const auto& [index, g] : gpus) {
      if (gpu_allowed(index) && !sample_fresh(index)) return false;
    }
    return true;
  }

  std::vector<policy::GpuView> gpu_views() const {
    std::vector<policy::GpuView> v;
    for (const auto& [index, g] : gpus) {
      if (!gpu_allowed(index)) continue;
      v.push_back(policy::GpuView{index, g.total_bytes, g.free_bytes, ledger(index), headroom()});
    }
    return v;
  }

  // The planner's view. Services with something in flight are shown in the state that
  // protects them (a service going to sleep is charged in full and shown as stopping).
  std::vector<policy::ServiceView> service_views(TimePoint now, std::vector<std::string>* ids) const {
    std::vector<policy::ServiceView> v;
    v.reserve(svcs.size());
    for (const auto& [id, s] : svcs) {
      policy::ServiceView sv;
      sv.id = id;
      sv.state = s.phase == Phase::sleeping_op ? SvcState::stopping : s.state;
      if (s.phase == Phase::stopping_op) sv.state = SvcState::stopping;
      sv.gpu = s.gpu;
      sv.vram = s.preset->vram_mb * kMiB;
      sv.sleep_residual = s.preset->sleep_residual_mb() * kMiB;
      sv.can_sleep = s.preset->can_sleep();
      sv.priority = s.preset->priority;
      sv.pinned = s.preset->pinned;
      sv.in_flight = s.phase != Phase::idle;
      sv.retiring = s.retire;
      sv.leases = busy_leases(s);
      sv.keep_alive_active = now < s.keep_alive_until;
      sv.last_used = s.last_used;
      sv.cold_start_s = s.cold_est.value_or(30.0);
      sv.wake_s = s.wake_est.value_or(2.0);
      sv.port = s.preset->port;
      sv.allowed_gpus = s.preset->gpus;
      v.push_back(std::move(sv));
      if (ids != nullptr) ids->push_back(id);
    }
    return v;
  }

  std::string endpoint(const Svc& s) const { return "http://127.0.0.1:" + std::to_string(s.preset->port); }

  // ---------- request outcomes ----------
  // Every decided request is kept for request_info() (the last kRecentOutcomes), also those
  // answered at once: a client that asked with wait:false may have been told 202 before the
  // scheduler thread decided, and follows up with GET /requests/{id}.
  void finish_request(const std::string& rid, RequestOutcome o, TimePoint now) {
    auto it = requests.find(rid);
    if (it == requests.end()) return;
    RequestRec& r = it->second;
    o.request_id = rid;
    if (o.service.empty()) o.service = r.service;
    o.waited_seconds = secs(now - r.enqueued);
    remember(rid, r.spec.model, r.service, r.priority, o);
    out.requests.push_back(Completion{rid, std::move(o)});
    requests.erase(it);
  }

  void remember(const std::string& rid, const std::string& model, const std::string& service, int priority,
                const RequestOutcome& o) {
    recent_cache.reset();
    RequestInfo info;
    info.request_id = rid;
    info.model = model;
    info.service = service;
    info.status = o.status;
    info.priority = priority;
    info.age_seconds = o.waited_seconds;
    info.outcome = o;
    recent.push_back(std::move(info));
    while (recent.size() > kRecentOutcomes) recent.pop_front();
    out.changed = true;
  }

  void fail_request(const std::string& rid, RequestStatus st, Refusal why, const std::string& msg,
                    TimePoint now, int retry_after = 0) {
    RequestOutcome o;
    o.status = st;
    o.refusal = why;
    o.message = msg;
    o.retry_after_seconds = retry_after;
    finish_request(rid, std::move(o), now);
  }

  // The request is served by the ready service `id`.
  void serve(const std::string& rid, const std::string& id, Svc& s, TimePoint now) {
    auto it = requests.find(rid);
    if (it == requests.end()) return;
    const RequestRec& r = it->second;
    RequestOutcome o;
    o.status = RequestStatus::ready;
    o.refusal = Refusal::none;
    o.message = id + " is ready";
    o.service = id;
    o.endpoint = endpoint(s);
    o.gpu = s.gpu;
    if (r.spec.hold_lease) {
      const LeaseId lease = next_lease++;
      leases[lease] = id;
      ++s.leases;
      o.lease = lease;
      out.changed = true;
      if (metrics != nullptr) metrics->add_active_leases(id, 1);
    }
    touch(s, r.spec.keep_alive, now);
    if (metrics != nullptr) metrics->observe_admission_wait(secs(now - r.enqueued));
    finish_request(rid, std::move(o), now);
  }

  void touch(Svc& s, std::optional<std::chrono::seconds> keep_alive, TimePoint now) {
    // max: a batch of fast-path answers (note_served) may carry a time before a use recorded since.
    s.last_used = std::max<std::int64_t>(s.last_used, now.time_since_epoch().count());
    std::chrono::seconds ka = s.preset->keep_alive.value_or(policy().default_keep_alive);
    if (keep_alive && *keep_alive > ka) ka = *keep_alive;
    const TimePoint until = now + ka;
    if (until > s.keep_alive_until) s.keep_alive_until = until;
  }

  void fail_waiters(Svc& s, Refusal why, const std::string& msg, TimePoint now, int retry_after) {
    auto waiters = std::move(s.waiters);
    s.waiters.clear();
    for (const auto& rid : waiters) fail_request(rid, RequestStatus::rejected, why, msg, now, retry_after);
  }

  void finish_action(std::vector<std::uint64_t>& tokens, bool ok, Refusal why, const std::string& msg) {
    for (auto t : tokens) out.actions.push_back({t, ActionResult{ok, why, msg}});
    tokens.clear();
  }

  void update_queue_metrics(TimePoint now) {
    if (metrics != nullptr) metrics->set_queue(queue.size(), secs(queue.oldest_age(now)));
  }

  // ---------- admission ----------
  void submit(RequestSpec spec, TimePoint now) {
    if (spec.request_id.empty()) spec.request_id = "r" + std::to_string(next_request++);
    const std::string rid = spec.request_id;
    // A duplicate id is not remembered: the id belongs to the live request.
    auto reject_now = [&](Refusal why, const std::string& msg, const char* reason, int retry_after = 0) {
      RequestOutcome o;
      o.request_id = rid;
      o.status = RequestStatus::rejected;
      o.refusal = why;
      o.message = msg;
      o.retry_after_seconds = retry_after;
      if (metrics != nullptr) metrics->inc_rejection(reason);
      if (std::string_view(reason) != "duplicate_id") {
        const config::Preset* p = cfg->resolve_model(spec.model);
        remember(rid, spec.model, p != nullptr ? p->id : std::string(),
                 spec.priority.value_or(p != nullptr ? p->priority : 0), o);
      }
      out.requests.push_back(Completion{rid, std::move(o)});
    };
    if (requests.count(rid) != 0) {
      reject_now(Refusal::conflict, "request id '" + rid + "' is already in use", "duplicate_id");
      return;
    }
    const config::Preset* p = cfg->resolve_model(spec.model);
    if (p == nullptr || svcs.count(p->id) == 0) {
      reject_now(
          Refusal::unknown,
          "unknown model '" + spec.model + "': no service, model id, alias or router model has that name",
          "unknown_model");
      return;
    }
    const std::string id = p->id;
    Svc& s = svcs.at(id);
    RequestRec rec;
    rec.service = id;
    rec.priority = spec.priority.value_or(p->priority);
    rec.enqueued = now;
    rec.deadline = now + spec.timeout.value_or(policy().default_request_timeout);
    rec.spec = std::move(spec);
    // A ready model skips the queue.
    if (s.state == SvcState::ready && s.phase == Phase::idle) {
      requests.emplace(rid, std::move(rec));
      serve(rid, id, s, now);
      return;
    }
    // A load under way: join it.
    if (bringing_up(s.phase) && (s.state == SvcState::starting || s.state == SvcState::waking)) {
      rec.status = RequestStatus::admitted;
      requests.emplace(rid, std::move(rec));
      s.waiters.push_back(rid);
      out.changed = true;
      return;
    }
    QueuedRequest q{rid, id, rec.priority, now, rec.deadline, 0};
    switch (queue.push(q)) {
      case AdmissionQueue::PushResult::full:
        reject_now(
            Refusal::queue_full,
            "admission queue is full (" + std::to_string(queue.max_length()) + " waiting); retry later",
            "queue_full", kQueueFullRetryAfter);
        return;
      case AdmissionQueue::PushResult::duplicate_id:
        reject_now(Refusal::conflict, "request id '" + rid + "' is already queued", "duplicate_id");
        return;
      case AdmissionQueue::PushResult::queued:
        break;
    }
    requests.emplace(rid, std::move(rec));
    out.changed = true;
    update_queue_metrics(now);
    pump(now);
  }

  // Move every queued request for `id` to its bring-up (or serve them when it is ready).
  void absorb_queued(const std::string& id, Svc& s, TimePoint now) {
    auto taken = queue.take_service(id, now);
    if (taken.empty()) return;
    for (const auto& q : taken) {
      auto it = requests.find(q.id);
      if (it == requests.end()) continue;
      if (s.state == SvcState::ready && s.phase == Phase::idle) {
        serve(q.id, id, s, now);
      } else {
        it->second.status = RequestStatus::admitted;
        s.waiters.push_back(q.id);
      }
    }
    out.changed = true;
    update_queue_metrics(now);
  }

  struct Blocked {
    std::size_t index;  // into the views
    int priority;
  };

  // Memory a blocked request could still claim on gpu `g` once today's protections end:
  // free now plus everything there it would be allowed to evict by priority and pinning.
  Bytes reachable(const std::vector<policy::GpuView>& gv, const std::vector<policy::ServiceView>& sv,
                  const policy::GpuView& g, const Blocked& b) const {
    Bytes sum = std::min(g.live_free, g.total - g.ledger) - g.headroom;
    for (std::size_t i = 0; i < sv.size(); ++i) {
      const auto& s = sv[i];
      if (i == b.index || s.gpu != g.index) continue;
      const Svc& real = svcs.at(s.id);
      if (real.preset->pinned || s.priority > b.priority) continue;
      sum += charge(real);
    }
    (void)gv;
    return sum;
  }

  bool gpu_usable_by(const policy::GpuView& g, const policy::ServiceView& t) const {
    if (!t.allowed_gpus.empty() &&
        std::find(t.allowed_gpus.begin(), t.allowed_gpus.end(), g.index) == t.allowed_gpus.end()) {
      return false;
    }
    if (t.state == SvcState::sleeping && t.gpu >= 0) return t.gpu == g.index;
    return g.total - g.headroom >= t.vram;
  }

  // A plan for a lower request may run ahead of blocked ones only if it touches no GPU they
  // could use, or only takes free memory there that they could never need.
  bool backfill_safe(const policy::Plan& plan, const std::vector<policy::GpuView>& gv,
                     const std::vector<policy::ServiceView>& sv, const std::vector<Blocked>& blocked) const {
    for (const auto& a : plan.actions) {
      if (a.kind == policy::ActionKind::wait_free) continue;
      const int g = (a.kind == policy::ActionKind::sleep || a.kind == policy::ActionKind::stop)
                        ? sv[a.service].gpu
                        : a.gpu;
      const auto git =
          std::find_if(gv.begin(), gv.end(), [&](const policy::GpuView& x) { return x.index == g; });
      if (git == gv.end()) continue;
      for (const auto& b : blocked) {
        const auto& head = sv[b.index];
        if (!gpu_usable_by(*git, head)) continue;
        const Bytes need_h = head.state == SvcState::sleeping ? head.vram - head.sleep_residual : head.vram;
        const Bytes reach = reachable(gv, sv, *git, b);
        if (reach < need_h) continue;  // it could not get enough here anyway
        if (a.kind == policy::ActionKind::sleep || a.kind == policy::ActionKind::stop) return false;
        const auto& cand = sv[a.service];
        const Bytes need_c = a.kind == policy::ActionKind::wake ? cand.vram - cand.sleep_residual : cand.vram;
        if (reach - need_c < need_h) return false;
      }
    }
    return true;
  }

  void pump(TimePoint now) {
    if (gpus.empty() || queue.empty()) return;
    if (!views_fresh()) {  // on_probe_sample pumps again
      poll_now = true;
      return;
    }
    std::vector<std::string> ids;
    auto sv = service_views(now, &ids);
    auto gv = gpu_views();
    std::map<std::string, std::size_t> index_of;
    for (std::size_t i = 0; i < ids.size(); ++i) index_of[ids[i]] = i;
    std::vector<Blocked> blocked;
    std::set<std::string> seen;
    // Copy the order first: admitting changes the queue.
    std::vector<std::pair<std::string, int>> order;
    for (const QueuedRequest* q : queue.ordered(now)) {
      if (seen.insert(q->service).second) order.emplace_back(q->service, queue.effective_priority(*q, now));
    }
    for (const auto& [id, prio] : order) {
      auto sit = svcs.find(id);
      if (sit == svcs.end()) continue;
      Svc& s = sit->second;
      const std::size_t idx = index_of.at(id);
      if (s.state == SvcState::ready && s.phase == Phase::idle) {
        absorb_queued(id, s, now);
        continue;
      }
      if (bringing_up(s.phase)) {
        absorb_queued(id, s, now);
        continue;
      }
      if (s.phase != Phase::idle || s.retire) {  // going to sleep or stopping: plan again after
        blocked.push_back({idx, prio});
        continue;
      }
      const policy::Plan plan = policy::plan(gv, sv, policy::PlanRequest{idx, prio});
      switch (plan.outcome) {
        case policy::Outcome::already_ready:
        case policy::Outcome::in_progress:
          absorb_queued(id, s, now);
          break;
        case policy::Outcome::never_fits: {
          for (const auto& q : queue.take_service(id, now)) {
            if (metrics != nullptr) metrics->inc_rejection("never_fits");
            fail_request(q.id, RequestStatus::rejected, Refusal::never_fits,
                         id + " never fits: " + plan.reason, now);
          }
          update_queue_metrics(now);
          break;
        }
        case policy::Outcome::wait:
          blocked.push_back({idx, prio});
          break;
        case policy::Outcome::plan:
          if (!blocked.empty() && !backfill_safe(plan, gv, sv, blocked)) break;
          if (!execute(id, plan, ids, now)) {
            blocked.push_back({idx, prio});
            break;
          }
          absorb_queued(id, s, now);
          sv = service_views(now, nullptr);
          gv = gpu_views();
          break;
      }
    }
  }

  // Start running a plan whose target is `target`. False (nothing done) when a victim took a
  // gate lease after the plan was made: the target waits as for any busy victim, and the end of
  // that lease plans again (the planner may also pick another victim then).
  bool execute(const std::string& target, const policy::Plan& plan, const std::vector<std::string>& ids,
               TimePoint now) {
    Svc& t = svcs.at(target);
    std::vector<Svc*> claimed;
    for (const auto& a : plan.actions) {
      if (a.kind != policy::ActionKind::sleep && a.kind != policy::ActionKind::stop) continue;
      Svc& v = svcs.at(ids.at(a.service));
      if (!claim(v)) {
        spdlog::info("not evicting {} for {}: it holds {} lease(s)", ids.at(a.service), target, leases_of(v));
        for (Svc* c : claimed) {
          if (serves_now(*c)) gate_of(*c).open();  // untouched: open again
        }
        return false;
      }
      claimed.push_back(&v);
    }
    std::set<std::string> evicted;
    for (const auto& a : plan.actions) {
      switch (a.kind) {
        case policy::ActionKind::sleep:
        case policy::ActionKind::stop: {
          const std::string& vid = ids.at(a.service);
          Svc& v = svcs.at(vid);
          const bool sleep = a.kind == policy::ActionKind::sleep;
          if (metrics != nullptr) metrics->inc_eviction(vid, sleep ? "sleep" : "stop");
          spdlog::info("evicting {} ({}) on GPU {} for {}", vid, sleep ? "sleep" : "stop", v.gpu, target);
          if (sleep) {
            begin_sleep(vid, v, now);
          } else {
            begin_stop(vid, v, "evicted for " + target, now);
          }
          evicted.insert(vid);
          break;
        }
        case policy::ActionKind::wait_free:
          t.wait_bytes = a.bytes;
          break;
        case policy::ActionKind::start:
        case policy::ActionKind::wake:
          t.wake_path = a.kind == policy::ActionKind::wake;
          t.gpu = a.gpu;
          break;
      }
    }
    const Bytes need =
        (t.wake_path ? t.preset->vram_mb - t.preset->sleep_residual_mb() : t.preset->vram_mb) * kMiB;
    t.wait_bytes = std::max(t.wait_bytes, need + headroom());
    t.awaiting = std::move(evicted);
    t.had_evictions = !t.awaiting.empty();
    t.vram_wait_since.reset();
    t.bringup_started = now;
    t.phase = Phase::vram_wait;
    t.last_error.clear();
    set_state(target, t, t.wake_path ? SvcState::waking : SvcState::starting, now);
    spdlog::info("admitting {}: {}", target, plan.reason);
    advance(now);
    return true;
  }

  void begin_sleep(const std::string& id, Svc& s, TimePoint now) {
    close_gate(s);  // claimed by the caller: already closed and empty
    s.phase = Phase::sleeping_op;
    set_state(id, s, SvcState::sleeping, now);
    out.effects.push_back(effect(Effect::Kind::sleep, id, s));
  }

  void begin_stop(const std::string& id, Svc& s, const std::string& reason, TimePoint now) {
    close_gate(s);  // claimed by the caller, or forced (crash, exit, removal)
    s.phase = Phase::stopping_op;
    s.stop_reason = reason;
    if (s.state != SvcState::failed) set_state(id, s, SvcState::stopping, now);
    Effect e = effect(Effect::Kind::stop, id, s);
    e.timeout = policy().stop_grace;
    out.effects.push_back(std::move(e));
  }

  // Stop `id` whatever it is doing. Returns true when it is already stopped.
  bool request_stop(const std::string& id, Svc& s, const std::string& reason, TimePoint now) {
    switch (s.phase) {
      case Phase::stopping_op:
        return false;
      case Phase::launching:
      case Phase::sleeping_op:
        s.stop_after_op = true;
        s.stop_reason = reason;
        if (s.phase == Phase::launching)
          fail_waiters(s, Refusal::unavailable, id + " was stopped: " + reason, now, 0);
        return false;
      case Phase::vram_wait: {
        abort_bringup(id, s, id + " was stopped before it started: " + reason, now, Refusal::unavailable, 0);
        if (s.state == SvcState::sleeping) {
          begin_stop(id, s, reason, now);
          return false;
        }
        return true;
      }
      case Phase::waking_op:
      case Phase::health:
      case Phase::activating:
      case Phase::verifying:
        fail_waiters(s, Refusal::unavailable, id + " was stopped: " + reason, now, 0);
        finish_action(s.tokens_ready, false, Refusal::conflict, id + " was stopped: " + reason);
        begin_stop(id, s, reason, now);
        return false;
      case Phase::idle:
        break;
    }
    if (s.state == SvcState::stopped) return true;
    if (s.state == SvcState::failed && s.gpu < 0) {
      set_state(id, s, SvcState::stopped, now);
      return true;
    }
    begin_stop(id, s, reason, now);
    return false;
  }

  // A bring-up that never launched: back to where it was, memory never used.
  void abort_bringup(const std::string& id, Svc& s, const std::string& msg, TimePoint now, Refusal why,
                     int retry_after) {
    s.phase = Phase::idle;
    s.awaiting.clear();
    s.vram_wait_since.reset();
    s.last_error = msg;
    if (s.wake_path) {
      set_state(id, s, SvcState::sleeping, now);
    } else {
      set_state(id, s, SvcState::stopped, now);
      s.gpu = -1;
    }
    fail_waiters(s, why, msg, now, retry_after);
    finish_action(s.tokens_ready, false, why, msg);
  }

  // A launched bring-up failed: the service is failed and its process group is stopped.
  void fail_bringup(const std::string& id, Svc& s, const std::string& msg, TimePoint now) {
    spdlog::warn("{}", msg);
    mark_gpu_changed(s.gpu, now);
    s.last_error = msg;
    if (s.state == SvcState::starting && metrics != nullptr) metrics->inc_service_start_failure(id);
    fail_waiters(s, Refusal::unavailable, msg, now, 0);
    finish_action(s.tokens_ready, false, Refusal::unavailable, msg);
    set_state(id, s, SvcState::failed, now);
    if (s.phase == Phase::launching) {
      s.stop_after_op = true;
      s.stop_reason = "failed";
      return;
    }
    begin_stop(id, s, "failed", now);
  }

  // Drive every admitted bring-up as far as it can go now.
  void advance(TimePoint now) {
    for (auto& [id, s] : svcs) {
      if (s.phase != Phase::vram_wait || !s.awaiting.empty()) continue;
      bool gpu_busy = false;
      for (const auto& [oid, o] : svcs) {
        if (&o != &s && o.gpu == s.gpu && loading(o.phase)) gpu_busy = true;
      }
      if (gpu_busy) {  // one load per GPU at a time: the next one needs a sample taken after it
        s.vram_wait_since.reset();
        continue;
      }
      if (!s.vram_wait_since) {
        s.vram_wait_since = now;
        poll_now = true;
      }
      const auto g = gpus.find(s.gpu);
      // After evictions the sample must postdate the wait's start (the memory was freed, or
      // began to be, then); without them, one taken after gpumod's last change on this GPU
      // will do, so a start on an idle GPU does not wait for a poll.
      const bool fresh =
          s.had_evictions ? sample_taken && *sample_taken >= *s.vram_wait_since : sample_fresh(s.gpu);
      if (!fresh) poll_now = true;
      if (fresh && g != gpus.end() && g->second.free_bytes >= s.wait_bytes) {
        if (s.had_evictions && metrics != nullptr) {
          metrics->observe_vram_release_wait(s.gpu, secs(now - *s.vram_wait_since));
        }
        launch(id, s, g->second, now);
        continue;
      }
      if (now - *s.vram_wait_since >= policy().vram_release_timeout) release_timeout(id, s, now);
    }
    if (mode_job) progress_mode(now);
  }

  void launch(const std::string& id, Svc& s, const backends::GpuSample& g, TimePoint now) {
    s.vram_wait_since.reset();
    s.deadline = now + s.preset->startup_timeout;
    s.bringup_started = now;  // start/wake durations count from here
    if (s.wake_path) {
      s.phase = Phase::waking_op;
      out.effects.push_back(effect(Effect::Kind::wake, id, s));
      spdlog::info("waking {} on GPU {}", id, s.gpu);
      return;
    }
    s.phase = Phase::launching;
    if (metrics != nullptr) metrics->inc_service_start(id);
    Effect e = effect(Effect::Kind::start, id, s);
    e.gpu_free_bytes = g.free_bytes;
    e.gpu_total_bytes = g.total_bytes;
    out.effects.push_back(std::move(e));
    spdlog::info("starting {} on GPU {}", id, s.gpu);
  }

  void prune_pid_owner() {
    std::set<int> live;
    for (const auto& pm : processes) live.insert(pm.pid);
    for (const auto& [id, s] : svcs) live.insert(s.pids.begin(), s.pids.end());
    std::erase_if(pid_owner, [&](const auto& entry) { return live.count(entry.first) == 0; });
  }

  // "pid 1234 (qwen3-coder) 19.5 GiB, pid 99 (not started by gpumod) 1.1 GiB" for one GPU.
  std::string holders_on(int gpu) const {
    std::string holders;
    for (const auto& pm : processes) {
      if (pm.gpu != gpu || pm.used_bytes <= 0) continue;
      const auto owner = pid_owner.find(pm.pid);
      holders += holders.empty() ? "" : ", ";
      holders += "pid " + std::to_string(pm.pid) + " (" +
                 (owner == pid_owner.end() ? std::string("not started by gpumod") : owner->second) + ") " +
                 policy::format_bytes(pm.used_bytes);
    }
    if (holders.empty()) holders = "no process reported by the probe";
    return holders;
  }

  void release_timeout(const std::string& id, Svc& s, TimePoint now) {
    const auto g = gpus.find(s.gpu);
    const Bytes free = g == gpus.end() ? 0 : g->second.free_bytes;
    const std::string holders = holders_on(s.gpu);
    const std::string msg = "VRAM on GPU " + std::to_string(s.gpu) + " was not released within " +
                            fmt_secs(policy().vram_release_timeout) + " for " + id + ": needed " +
                            policy::format_bytes(s.wait_bytes) + " free, the probe shows " +
                            policy::format_bytes(free) + " free; still held by " + holders;
    spdlog::warn("{}", msg);
    if (metrics != nullptr) metrics->inc_vram_release_timeout(s.gpu);
    const int retry = static_cast<int>(std::max<std::int64_t>(
        1, std::chrono::duration_cast<std::chrono::seconds>(policy().vram_release_timeout).count() / 4));
    abort_bringup(id, s, msg, now, Refusal::unavailable, retry);
  }

  // ---------- op completions ----------
  void on_op_done(const OpDone& d, TimePoint now) {
    const auto owner = op_owner.find(d.op);
    if (owner == op_owner.end()) return;  // stale: the service moved on
    const std::string id = owner->second;
    Svc& s = svcs.at(id);
    if (s.op != d.op) return;
    clear_op(s);
    out.changed = true;
    switch (s.phase) {
      case Phase::launching:
        on_launched(id, s, d, now);
        break;
      case Phase::waking_op:
        if (!d.ok) {
          fail_bringup(id, s, id + " failed to wake: " + d.message, now);
        } else {
          s.phase = Phase::health;
          s.next_health = now;
          poll_health(id, s, now);
        }
        break;
      case Phase::health:
        on_health(id, s, d, now);
        break;
      case Phase::activating:
        if (!d.ok) {
          fail_bringup(id, s, id + " failed to activate its model: " + d.message, now);
        } else {
          become_ready(id, s, now);
        }
        break;
      case Phase::sleeping_op:
        on_slept(id, s, d, now);
        break;
      case Phase::stopping_op:
        on_stopped(id, s, d, now);
        break;
      case Phase::verifying:
        on_verified(id, s, d, now);
        break;
      case Phase::idle:
      case Phase::vram_wait:
        break;
    }
    advance(now);
    pump(now);
  }

  void on_launched(const std::string& id, Svc& s, const OpDone& d, TimePoint now) {
    if (d.ok) {
      s.pids = d.run.pid > 0 ? std::vector<int>{d.run.pid} : std::vector<int>{};
      if (d.run.pid > 0) pid_owner[d.run.pid] = id;
    }
    if (s.stop_after_op) {
      s.stop_after_op = false;
      if (s.state != SvcState::failed) {
        fail_waiters(s, Refusal::unavailable, id + " was stopped: " + s.stop_reason, now, 0);
        finish_action(s.tokens_ready, false, Refusal::conflict, id + " was stopped: " + s.stop_reason);
      }
      begin_stop(id, s, s.stop_reason, now);
      return;
    }
    if (!d.ok) {
      // Nothing runs: no stop needed.
      s.last_error = id + " failed to start: " + d.message;
      if (metrics != nullptr) metrics->inc_service_start_failure(id);
      fail_waiters(s, Refusal::unavailable, s.last_error, now, 0);
      finish_action(s.tokens_ready, false, Refusal::unavailable, s.last_error);
      s.phase = Phase::idle;
      s.gpu = -1;
      set_state(id, s, SvcState::failed, now);
      return;
    }
    s.phase = Phase::health;
    s.next_health = now;
    poll_health(id, s, now);
  }

  void poll_health(const std::string& id, Svc& s, TimePoint now) {
    if (s.phase != Phase::health || s.op != 0 || now < s.next_health) return;
    out.effects.push_back(effect(Effect::Kind::check_health, id, s));
  }

  void on_health(const std::string& id, Svc& s, const OpDone& d, TimePoint now) {
    if (!d.ok) {  // not a "not yet": something that waiting will not fix (a stranger on its port)
      fail_bringup(id, s, id + " cannot become ready: " + d.message, now);
      return;
    }
    if (d.health == backends::Health::ready) {
      s.phase = Phase::activating;
      Effect e = effect(Effect::Kind::activate, id, s);
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(s.deadline - now);
      e.timeout = std::max(left, std::chrono::milliseconds(1000));
      out.effects.push_back(std::move(e));
      return;
    }
    s.last_health =
        std::string(backends::to_string(d.health)) + (d.health_detail.empty() ? "" : ": ") + d.health_detail;
    s.next_health = now + policy().health_poll_interval;
  }

  void become_ready(const std::string& id, Svc& s, TimePoint now) {
    const double took = secs(now - s.bringup_started);
    s.phase = Phase::idle;
    s.last_error.clear();
    if (s.wake_path) {
      s.wake_est = s.wake_est ? *s.wake_est + kEwmaAlpha * (took - *s.wake_est) : took;
      if (metrics != nullptr) {
        metrics->observe_wake_seconds(id, took);
        metrics->inc_wake(id);
      }
    } else {
      s.cold_est = s.cold_est ? *s.cold_est + kEwmaAlpha * (took - *s.cold_est) : took;
      if (metrics != nullptr) metrics->observe_start_seconds(id, took);
    }
    s.wake_path = false;
    set_state(id, s, SvcState::ready, now);
    mark_gpu_changed(s.gpu, now);
    spdlog::info("{} is ready on GPU {} after {:.2f} s", id, s.gpu, took);
    s.last_used = now.time_since_epoch().count();
    auto waiters = std::move(s.waiters);
    s.waiters.clear();
    for (const auto& rid : waiters) serve(rid, id, s, now);
    absorb_queued(id, s, now);
    finish_action(s.tokens_ready, true, Refusal::none, id + " is ready");
    after_idle(id, s, now);
  }

  void on_slept(const std::string& id, Svc& s, const OpDone& d, TimePoint now) {
    s.phase = Phase::idle;
    mark_gpu_changed(s.gpu, now);
    if (!d.ok) {
      // Memory not freed: stop it instead so whoever waits for it gets the memory.
      s.last_error = id + " failed to sleep (" + d.message + "); stopping it instead";
      spdlog::warn("{}", s.last_error);
      set_state(id, s, SvcState::ready, now);
      begin_stop(id, s, "sleep failed", now);
      return;
    }
    set_state(id, s, SvcState::sleeping, now);
    if (metrics != nullptr) metrics->inc_sleep(id);
    finish_action(s.tokens_slept, true, Refusal::none, id + " is sleeping");
    eviction_done(id);
    if (s.stop_after_op) {
      s.stop_after_op = false;
      begin_stop(id, s, s.stop_reason, now);
      return;
    }
    after_idle(id, s, now);
  }

  void on_stopped(const std::string& id, Svc& s, const OpDone& d, TimePoint now) {
    s.phase = Phase::idle;
    mark_gpu_changed(s.gpu, now);
    s.gpu = -1;
    s.measured.reset();
    s.wake_path = false;
    if (!d.ok) {
      s.last_error = id + " did not stop cleanly: " + d.message;
      spdlog::warn("{}", s.last_error);
      set_state(id, s, SvcState::failed, now);
    } else if (s.state != SvcState::failed) {
      set_state(id, s, SvcState::stopped, now);
    }
    finish_action(s.tokens_stopped, d.ok, d.ok ? Refusal::none : Refusal::failed,
                  d.ok ? id + " is stopped" : s.last_error);
    finish_action(s.tokens_slept, false, Refusal::conflict, id + " was stopped instead of sleeping");
    eviction_done(id);
    if (s.retire) {
      spdlog::info("{} removed from the config: stopped and forgotten", id);
      svcs.erase(id);
      return;
    }
    if (s.restart_with) {
      s.preset = std::move(s.restart_with);
      s.restart_with.reset();
    }
    if (s.start_after_stop) {
      s.start_after_stop = false;
      admit_or_defer(std::nullopt, id, ServiceAction::start, now);
    }
  }

  void on_verified(const std::string& id, Svc& s, const OpDone& d, TimePoint now) {
    mark_gpu_changed(s.gpu, now);
    if (d.ok && d.health == backends::Health::ready) {
      s.phase = Phase::idle;
      set_state(id, s, d.sleeping ? SvcState::sleeping : SvcState::ready, now);
      spdlog::info("adopted {} ({}) on GPU {}", id, policy::to_string(s.state), s.gpu);
      if (s.state == SvcState::ready) {
        auto waiters = std::move(s.waiters);
        s.waiters.clear();
        for (const auto& rid : waiters) serve(rid, id, s, now);
        finish_action(s.tokens_ready, true, Refusal::none, id + " is ready");
      } else {
        requeue_waiters(id, s, now);  // asleep: they wait for a wake like any request
      }
      return;
    }
    if (d.ok && d.health == backends::Health::loading) {
      s.phase = Phase::health;
      s.deadline = now + s.preset->startup_timeout;
      s.bringup_started = now;
      s.next_health = now + policy().health_poll_interval;
      return;
    }
    s.last_error = id + " was running at daemon start but is not healthy (" +
                   std::string(backends::to_string(d.health)) + (d.message.empty() ? "" : ": " + d.message) +
                   "); stopped";
    spdlog::warn("{}", s.last_error);
    fail_waiters(s, Refusal::unavailable, s.last_error, now, 0);
    finish_action(s.tokens_ready, false, Refusal::unavailable, s.last_error);
    begin_stop(id, s, "adopted but unhealthy", now);
  }

  // Requests that joined a bring-up which turned out not to bring the service up go back
  // to the queue with their original arrival time and deadline.
  void requeue_waiters(const std::string& id, Svc& s, TimePoint now) {
    auto waiters = std::move(s.waiters);
    s.waiters.clear();
    for (const auto& rid : waiters) {
      auto it = requests.find(rid);
      if (it == requests.end()) continue;
      RequestRec& r = it->second;
      r.status = RequestStatus::queued;
      // The queue may be full; these were admitted before, so they are kept regardless.
      const std::size_t limit = queue.max_length();
      queue.set_limits(std::max(limit, queue.size() + 1), queue.aging_interval());
      (void)queue.push(QueuedRequest{rid, id, r.priority, r.enqueued, r.deadline, 0});
      queue.set_limits(limit, queue.aging_interval());
    }
    update_queue_metrics(now);
  }

  void eviction_done(const std::string& id) {
    for (auto& [tid, t] : svcs) t.awaiting.erase(id);
  }

  // A service became idle (ready or sleeping, no op): deferred stops, retire, restart.
  void after_idle(const std::string& id, Svc& s, TimePoint now) {
    if (s.phase != Phase::idle) return;
    const bool restart = s.restart_with && (s.state == SvcState::ready || s.state == SvcState::sleeping);
    if (!s.stop_after_op && !s.retire && !restart) return;  // nothing waits: leave the gate alone
    if (!claim(s)) return;                                  // busy: the last lease's end comes back here
    if (s.stop_after_op) {
      s.stop_after_op = false;
      begin_stop(id, s, s.stop_reason, now);
      return;
    }
    if (s.retire) {
      begin_stop(id, s, "removed from the config", now);
      return;
    }
    if (restart) {
      s.start_after_stop = s.state == SvcState::ready;
      begin_stop(id, s, "config changed: restarting", now);
    }
  }

  // Bring a service up outside the queue (service start, mode switch, restart).
  // Returns an error message when it cannot be admitted now.
  std::optional<std::string> admit_service(const std::string& id, Svc& s, int priority, TimePoint now,
                                           const std::set<std::string>* keep = nullptr,
                                           bool* waiting = nullptr) {
    if (gpus.empty()) return id + ": no GPU has been sampled yet";
    if (!views_fresh()) {  // mode switches retry on the next sample
      poll_now = true;
      if (waiting != nullptr) *waiting = true;
      return id + " waits for a GPU sample taken after the last release";
    }
    std::vector<std::string> ids;
    auto sv = service_views(now, &ids);
    const auto idx = static_cast<std::size_t>(std::find(ids.begin(), ids.end(), id) - ids.begin());
    const policy::Plan plan = policy::plan(gpu_views(), sv, policy::PlanRequest{idx, priority});
    switch (plan.outcome) {
      case policy::Outcome::already_ready:
      case policy::Outcome::in_progress:
        return std::nullopt;
      case policy::Outcome::never_fits:
        return id + " never fits: " + plan.reason;
      case policy::Outcome::wait:
        if (waiting != nullptr) *waiting = true;
        return id + " cannot start now: " + plan.reason;
      case policy::Outcome::plan:
        break;
    }
    if (keep != nullptr) {
      for (const auto& a : plan.actions) {
        if ((a.kind == policy::ActionKind::sleep || a.kind == policy::ActionKind::stop) &&
            keep->count(ids[a.service]) != 0) {
          return id + " does not fit next to " + ids[a.service] +
                 " (the plan would evict it): " + plan.reason;
        }
      }
    }
    if (!execute(id, plan, ids, now)) {
      if (waiting != nullptr) *waiting = true;
      return id + " cannot start now: a service it would evict holds a lease";
    }
    absorb_queued(id, s, now);
    return std::nullopt;
  }

  // A start/wake that finds a GPU's sample stale waits for the next one (see gpu_changed).
  bool defer_until_fresh(std::optional<std::uint64_t> token, const std::string& id, ServiceAction action,
                         TimePoint now) {
    if (views_fresh()) return false;
    deferred_admits.push_back(DeferredAdmit{token, id, action, now});
    poll_now = true;
    return true;
  }

  // Without samples (the probe is failing) deferred commands fail like a release wait would.
  void expire_deferred(TimePoint now) {
    auto expired = [&](const DeferredAdmit& d) { return now - d.since >= policy().vram_release_timeout; };
    for (const auto& d : deferred_admits) {
      if (!expired(d)) continue;
      const std::string msg = d.service + " was not started: no GPU sample arrived within " +
                              fmt_secs(policy().vram_release_timeout) +
                              (probe_up ? std::string() : " (the GPU probe is failing: " + probe_error + ")");
      spdlog::warn("{}", msg);
      if (d.token) out.actions.push_back({*d.token, ActionResult{false, Refusal::unavailable, msg}});
    }
    deferred_admits.erase(std::remove_if(deferred_admits.begin(), deferred_admits.end(), expired),
                          deferred_admits.end());
  }

  void admit_or_defer(std::optional<std::uint64_t> token, const std::string& id, ServiceAction action,
                      TimePoint now) {
    if (defer_until_fresh(token, id, action, now)) return;
    auto it = svcs.find(id);
    if (it == svcs.end()) return;
    if (auto err = admit_service(id, it->second, it->second.preset->priority, now)) {
      spdlog::warn("{}", *err);
      it->second.last_error = *err;
      out.changed = true;
    }
  }

  void replay_deferred(TimePoint now) {
    if (deferred_admits.empty() || !views_fresh()) return;
    auto pending = std::move(deferred_admits);
    deferred_admits.clear();
    for (auto& d : pending) {
      if (d.token) {
        service_action(*d.token, d.service, d.action, now);
      } else {
        admit_or_defer(std::nullopt, d.service, d.action, now);
      }
    }
  }

  void on_stop_signalled(std::uint64_t op, TimePoint now) {
    const auto owner = op_owner.find(op);
    if (owner == op_owner.end()) return;
    const std::string id = owner->second;
    Svc& s = svcs.at(id);
    if (s.op != op || s.phase != Phase::stopping_op) return;
    mark_gpu_changed(s.gpu, now);
    for (auto& [tid, t] : svcs) {
      // A service on the same port cannot bind until this one is gone.
      if (t.awaiting.count(id) != 0 && t.preset->port != s.preset->port) t.awaiting.erase(id);
    }
    advance(now);
  }

  // The shell answered a request for the ready service `id` from its snapshot.
  void note_served(const std::string& id, std::optional<std::chrono::seconds> keep_alive, std::uint64_t count,
                   TimePoint answered) {
    if (metrics != nullptr) {
      for (std::uint64_t i = 0; i < count; ++i) metrics->observe_admission_wait(0.0);
    }
    auto it = svcs.find(id);
    if (it == svcs.end() || it->second.state != SvcState::ready) return;
    touch(it->second, keep_alive, answered);
  }

  // ---------- polling ----------
  void on_probe_sample(const backends::ProbeSample& sample, TimePoint taken, TimePoint now) {
    gpus.clear();
    for (const auto& g : sample.gpus) {
      gpus[g.index] = g;
      if (metrics != nullptr) {
        if (registered_gpus.insert(g.index).second) metrics->register_gpu(g.index, g.uuid, g.name);
        metrics->set_gpu_memory(g.index, g.total_bytes, g.used_bytes, g.free_bytes, ledger(g.index));
        metrics->set_gpu_telemetry(g.index, g.utilization_ratio, g.temperature_celsius, g.power_watts);
      }
    }
    processes = sample.processes;
    prune_pid_owner();
    for (auto& [id, s] : svcs) {
      if (s.pids.empty()) continue;
      Bytes used = 0;
      bool seen = false;
      for (const auto& pm : processes) {
        if (std::find(s.pids.begin(), s.pids.end(), pm.pid) != s.pids.end()) {
          used += pm.used_bytes;
          seen = true;
        }
      }
      std::optional<Bytes> measured = seen ? std::optional<Bytes>(used) : std::nullopt;
      if (measured != s.measured) {
        s.measured = measured;
        if (metrics != nullptr) metrics->set_service_vram(id, s.preset->vram_mb * kMiB, s.measured);
      }
    }
    if (!sample_taken || taken > *sample_taken) sample_taken = taken;
    if (!probe_up && metrics != nullptr) metrics->set_probe_up(true);
    probe_up = true;
    out.changed = true;
    replay_deferred(now);
    advance(now);
    pump(now);
  }

  void on_poll_done(PollDone d, TimePoint now) {
    if (d.op != 0 && d.op != poll_op) return;
    const TimePoint taken = poll_emitted;
    poll_op = 0;
    for (auto& [id, pids] : d.pids) {
      auto it = svcs.find(id);
      if (it == svcs.end()) continue;
      for (int pid : pids) pid_owner[pid] = id;
      it->second.pids = std::move(pids);
    }
    for (const auto& [id, exit] : d.exits) on_process_exit(id, exit, now);
    if (d.sample.ok()) {
      on_probe_sample(*d.sample, taken, now);
    } else {
      on_probe_error(d.sample.error(), now);
    }
  }

  void on_probe_error(const std::string& message, TimePoint now) {
    if (metrics != nullptr) {
      metrics->inc_probe_errors();
      metrics->set_probe_up(false);
    }
    if (probe_up) spdlog::warn("GPU probe failed: {}", message);
    probe_up = false;
    probe_error = message;
    out.changed = true;
    advance(now);
  }

  void on_process_exit(const std::string& id, const backends::ExitInfo& exit, TimePoint now) {
    auto it = svcs.find(id);
    if (it == svcs.end()) return;
    Svc& s = it->second;
    if (s.phase == Phase::stopping_op || s.state == SvcState::stopped) return;
    const std::string msg = id + " exited unexpectedly" + (exit.message.empty() ? "" : ": " + exit.message);
    if (s.phase != Phase::vram_wait) mark_gpu_changed(s.gpu, now);
    if (s.state == SvcState::starting || s.state == SvcState::waking) {
      if (s.phase == Phase::vram_wait) return;  // not launched yet: not ours
      fail_bringup(id, s, msg, now);
      return;
    }
    if (s.state == SvcState::ready || s.state == SvcState::sleeping) {
      spdlog::warn("{}", msg);
      s.last_error = msg;
      set_state(id, s, SvcState::failed, now);
      // Clean up what may be left of its process group; memory comes back via the release wait.
      if (s.phase == Phase::idle) begin_stop(id, s, "exited", now);
    }
  }

  // A start or wake is waiting for the probe to show memory free (or a mode switch for its
  // bring-up): sample at the fast vram_poll_interval.
  bool waiting_for_memory() const {
    for (const auto& [id, s] : svcs) {
      if (s.phase == Phase::vram_wait && s.awaiting.empty()) return true;
    }
    return mode_job && mode_job->bringing_up;
  }

  bool moving() const {
    for (const auto& [id, s] : svcs) {
      if (s.phase != Phase::idle) return true;
    }
    return mode_job.has_value() || !deferred_admits.empty();
  }

  void tick(TimePoint now) {
    // Deadlines of queued requests and of requests joined to a load.
    for (const auto& q : queue.expire(now)) {
      if (metrics != nullptr) metrics->inc_request_timeout();
      fail_request(
          q.id, RequestStatus::timed_out, Refusal::deadline,
          "deadline passed after " + fmt_secs(now - q.enqueued) + " in the queue waiting for " + q.service,
          now);
      update_queue_metrics(now);
    }
    for (auto& [id, s] : svcs) {
      std::vector<std::string> keep;
      for (const auto& rid : s.waiters) {
        const auto r = requests.find(rid);
        if (r != requests.end() && r->second.deadline <= now) {
          if (metrics != nullptr) metrics->inc_request_timeout();
          fail_request(rid, RequestStatus::timed_out, Refusal::deadline,
                       "deadline passed after " + fmt_secs(now - r->second.enqueued) + " waiting for " + id +
                           " to become ready",
                       now);
        } else {
          keep.push_back(rid);
        }
      }
      s.waiters = std::move(keep);
      // Start timeout: preset.startup_timeout from the launch.
      if ((s.phase == Phase::health || s.phase == Phase::activating) && now >= s.deadline) {
        fail_bringup(id, s,
                     id + " did not become healthy within " + fmt_secs(s.preset->startup_timeout) +
                         (s.last_health.empty() ? "" : " (last health: " + s.last_health + ")"),
                     now);
        continue;
      }
      poll_health(id, s, now);
    }
    expire_deferred(now);
    // Probe and exit polling: fast while something moves, slow otherwise.
    if (poll_op == 0 && (poll_now || now >= next_poll)) emit_poll(now);
    update_queue_metrics(now);
    advance(now);
    pump(now);
  }

  void emit_poll(TimePoint now) {
    Effect e;
    e.kind = Effect::Kind::poll;
    e.op = next_op++;
    for (const auto& [id, s] : svcs) {
      if (s.state != SvcState::stopped || s.phase != Phase::idle) e.services.push_back(s.preset);
    }
    poll_op = e.op;
    poll_emitted = now;
    poll_now = false;
    next_poll = now + (waiting_for_memory() ? policy().vram_poll_interval
                       : moving() ? std::max<Clock::Duration>(policy().vram_poll_interval, kBusyPollInterval)
                                  : policy().idle_poll_interval);
    out.effects.push_back(std::move(e));
  }

  // ---------- leases, cancel ----------
  void release_lease(LeaseId lease, TimePoint now) {
    auto it = leases.find(lease);
    if (it == leases.end()) return;
    const std::string id = it->second;
    leases.erase(it);
    auto sit = svcs.find(id);
    if (sit == svcs.end()) return;
    Svc& s = sit->second;
    if (s.leases > 0) {
      --s.leases;
      if (metrics != nullptr) metrics->add_active_leases(id, -1);
    }
    s.last_used = now.time_since_epoch().count();
    out.changed = true;
    after_idle(id, s, now);
    if (mode_job) progress_mode(now);
    pump(now);
  }

  // The last gate lease of a service ended while something waited for it (watch/try_close).
  void on_gate_drained(std::size_t slot, TimePoint now) {
    out.changed = true;  // the lease count in the snapshot
    const auto it = svcs.find(gates->name(slot));
    if (it != svcs.end()) after_idle(it->first, it->second, now);
    if (mode_job) progress_mode(now);
    pump(now);
  }

  Result<void> cancel(const std::string& rid, TimePoint now) {
    auto it = requests.find(rid);
    if (it == requests.end()) return make_error("no queued or loading request with id '" + rid + "'");
    if (queue.cancel(rid)) update_queue_metrics(now);
    for (auto& [id, s] : svcs)
      s.waiters.erase(std::remove(s.waiters.begin(), s.waiters.end(), rid), s.waiters.end());
    fail_request(rid, RequestStatus::cancelled, Refusal::conflict, "request " + rid + " was cancelled", now);
    pump(now);
    return {};
  }

  // ---------- service actions ----------
  void service_action(std::uint64_t token, const std::string& id, ServiceAction action, TimePoint now) {
    auto reply = [&](bool ok, Refusal why, const std::string& msg) {
      out.actions.push_back({token, ActionResult{ok, why, msg}});
    };
    auto it = svcs.find(id);
    if (it == svcs.end() || it->second.retire) {
      reply(false, Refusal::unknown, "unknown service '" + id + "'");
      return;
    }
    Svc& s = it->second;
    switch (action) {
      case ServiceAction::start: {
        if (s.state == SvcState::ready && s.phase == Phase::idle)
          return reply(true, Refusal::none, id + " is already ready");
        if (bringing_up(s.phase)) {
          s.tokens_ready.push_back(token);
          return;
        }
        if (s.phase != Phase::idle)
          return reply(false, Refusal::conflict, id + " is busy (" + policy::to_string(s.state) + ")");
        if (defer_until_fresh(token, id, action, now)) return;
        if (auto err = admit_service(id, s, s.preset->priority, now)) {
          return reply(false,
                       err->find("never fits") != std::string::npos ? Refusal::never_fits : Refusal::conflict,
                       *err);
        }
        s.tokens_ready.push_back(token);
        return;
      }
      case ServiceAction::wake: {
        if (s.state == SvcState::ready && s.phase == Phase::idle)
          return reply(true, Refusal::none, id + " is already awake");
        if (s.state != SvcState::sleeping || s.phase != Phase::idle) {
          if (bringing_up(s.phase)) {
            s.tokens_ready.push_back(token);
            return;
          }
          return reply(false, Refusal::conflict, id + " is " + policy::to_string(s.state) + ", not sleeping");
        }
        if (defer_until_fresh(token, id, action, now)) return;
        if (auto err = admit_service(id, s, s.preset->priority, now))
          return reply(false, Refusal::conflict, *err);
        s.tokens_ready.push_back(token);
        return;
      }
      case ServiceAction::sleep: {
        if (!s.preset->can_sleep())
          return reply(false, Refusal::conflict, id + " cannot sleep (supports_sleep/sleep_mode)");
        if (s.state == SvcState::sleeping && s.phase == Phase::idle)
          return reply(true, Refusal::none, id + " is already sleeping");
        if (s.state != SvcState::ready || s.phase != Phase::idle) {
          return reply(false, Refusal::conflict,
                       id + " is " + policy::to_string(s.state) + "; only a ready service can sleep");
        }
        if (!claim(s))
          return reply(false, Refusal::conflict,
                       id + " is busy: " + std::to_string(leases_of(s)) + " active lease(s)");
        s.tokens_slept.push_back(token);
        begin_sleep(id, s, now);
        return;
      }
      case ServiceAction::stop: {
        if (!claim(s))
          return reply(false, Refusal::conflict,
                       id + " is busy: " + std::to_string(leases_of(s)) + " active lease(s)");
        if (request_stop(id, s, "stopped by request", now))
          return reply(true, Refusal::none, id + " is stopped");
        s.tokens_stopped.push_back(token);
        advance(now);
        return;
      }
    }
  }

  // ---------- modes ----------
  void switch_mode(std::uint64_t token, const std::string& mode_id, TimePoint now) {
    const config::Mode* m = cfg->find_mode(mode_id);
    auto fail_now = [&](Refusal why, const std::string& msg) {
      ModeResult r;
      r.mode = mode_id;
      r.ok = false;
      r.refusal = why;
      r.errors.push_back(msg);
      out.modes.push_back({token, std::move(r)});
    };
    if (m == nullptr) return fail_now(Refusal::unknown, "unknown mode '" + mode_id + "'");
    if (mode_job)
      return fail_now(Refusal::conflict, "a switch to mode '" + mode_job->mode + "' is in progress");
    if (metrics != nullptr) metrics->inc_mode_switch(mode_id);
    ModeJob job;
    job.token = token;
    job.mode = mode_id;
    job.members = std::set<std::string>(m->services.begin(), m->services.end());
    job.started = now;
    job.drain_deadline = now + policy().vram_release_timeout;
    job.result.mode = mode_id;
    for (const auto& member : job.members) {
      if (svcs.count(member) == 0) job.result.errors.push_back("mode lists unknown service '" + member + "'");
    }
    spdlog::info("switching to mode {}", mode_id);
    mode_job = std::move(job);
    progress_mode(now);
  }

  // Entered from many places (advance() after every event); a plan it executes re-enters
  // advance(), so nested calls are ignored and the outer pass carries on.
  void progress_mode(TimePoint now) {
    if (in_progress_mode || !mode_job) return;
    in_progress_mode = true;
    progress_mode_pass(now);
    in_progress_mode = false;
  }

  void progress_mode_pass(TimePoint now) {
    ModeJob& job = *mode_job;
    if (!job.bringing_up) {
      bool drained = true;
      for (auto& [id, s] : svcs) {
        if (job.members.count(id) != 0 || s.preset->pinned) continue;
        // A failed service outside the mode has nothing left running: the switch acknowledges
        // the failure (last_error stays readable) so the mode ends in a clean, known state.
        if (s.phase == Phase::idle && s.state == SvcState::failed) set_state(id, s, SvcState::stopped, now);
        if (s.phase == Phase::idle && s.state == SvcState::stopped) continue;
        drained = false;
        if (s.phase == Phase::stopping_op) continue;
        if (!claim(s)) {
          if (now >= job.drain_deadline) {
            job.result.errors.push_back(id + " is still busy with " + std::to_string(leases_of(s)) +
                                        " active lease(s) after " + fmt_secs(now - job.started) +
                                        "; not stopped");
            return finish_mode(now);
          }
          continue;
        }
        if (job.stop_issued.insert(id).second) job.result.stopped.push_back(id);
        request_stop(id, s, "not part of mode " + job.mode, now);
      }
      if (!drained) return;
      job.bringing_up = true;
      job.bringup_deadline = now + policy().vram_release_timeout;
    }
    bool settled = true;
    for (const auto& member : job.members) {
      auto it = svcs.find(member);
      if (it == svcs.end()) continue;
      Svc& s = it->second;
      if (s.state == SvcState::ready && s.phase == Phase::idle) continue;
      if (s.phase != Phase::idle) {
        settled = false;
        continue;
      }
      if (job.attempted.count(member) != 0) {
        job.result.errors.push_back(member + ": " +
                                    (s.last_error.empty() ? "did not come up" : s.last_error));
        job.attempted.erase(member);
        job.members.erase(member);
        return progress_mode_pass(now);
      }
      const bool wake = s.state == SvcState::sleeping;
      bool waiting = false;
      if (auto err =
              admit_service(member, s, std::max(s.preset->priority, 100), now, &job.members, &waiting)) {
        // Memory of what was just stopped may not show free yet: retry on the next samples
        // until the release timeout, then fail naming what still holds it.
        if (waiting && now < job.bringup_deadline) {
          settled = false;
          continue;
        }
        std::string msg = *err;
        if (waiting) {
          msg = member + ": VRAM not released within " + fmt_secs(policy().vram_release_timeout) + " (" +
                *err + ")";
          for (const auto& [index, g] : gpus) {
            msg += "; GPU " + std::to_string(index) + " held by " + holders_on(index);
            if (metrics != nullptr) metrics->inc_vram_release_timeout(index);
          }
        }
        job.result.errors.push_back(msg);
        job.members.erase(member);
        return progress_mode_pass(now);
      }
      job.attempted.insert(member);
      (wake ? job.result.woken : job.result.started).push_back(member);
      settled = false;
      if (!mode_job) return;  // execute() may have re-entered and finished it
    }
    if (settled) finish_mode(now);
  }

  void finish_mode(TimePoint now) {
    ModeJob job = std::move(*mode_job);
    mode_job.reset();
    job.result.ok = job.result.errors.empty();
    job.result.refusal = job.result.ok ? Refusal::none : Refusal::unavailable;
    job.result.seconds = secs(now - job.started);
    if (job.result.ok) {
      current_mode = job.mode;
    } else {
      current_mode.clear();
      if (metrics != nullptr) metrics->inc_mode_switch_failure(job.mode);
    }
    spdlog::info("mode {} switch {} in {:.2f} s", job.mode, job.result.ok ? "done" : "failed",
                 job.result.seconds);
    out.modes.push_back({job.token, std::move(job.result)});
    out.changed = true;
  }

  // ---------- reload ----------
  void reload(std::uint64_t token, const config::LoadResult& loaded, TimePoint now) {
    ReloadResult r;
    if (!loaded.ok()) {
      r.ok = false;
      r.message = "config reload failed; the running config is kept:\n" + loaded.error_text();
      if (metrics != nullptr) metrics->inc_config_reload(false);
      spdlog::warn("{}", r.message);
      out.reloads.push_back({token, std::move(r)});
      return;
    }
    auto next = std::make_shared<const config::Config>(*loaded.config);
    for (const auto& p : next->presets) {
      auto it = svcs.find(p.id);
      if (it == svcs.end()) {
        add_svc(p.id).preset = std::make_shared<const config::Preset>(p);
        r.added.push_back(p.id);
        continue;
      }
      Svc& s = it->second;
      s.retire = false;
      if (same_launch(*s.preset, p)) {
        s.preset = std::make_shared<const config::Preset>(p);  // priority, pinning, aliases... at once
        // A change that was waiting for the service to go idle and is now reverted: the process
        // runs with what the file says again, so it must not be restarted with the old change.
        s.restart_with.reset();
        continue;
      }
      r.changed.push_back(p.id);
      if (s.state == SvcState::stopped || (s.state == SvcState::failed && s.phase == Phase::idle)) {
        s.preset = std::make_shared<const config::Preset>(p);
      } else {
        s.restart_with = std::make_shared<const config::Preset>(p);
      }
    }
    for (auto& [id, s] : svcs) {
      if (next->find_preset(id) != nullptr) continue;
      r.removed.push_back(id);
      s.retire = true;
      fail_queued_for(id, Refusal::unknown, id + " was removed from the config", now);
    }
    cfg = std::move(next);
    queue.set_limits(policy().queue_max, policy().aging_interval);
    // Forget services that are removed and already stopped; the rest are stopped once idle.
    for (auto it = svcs.begin(); it != svcs.end();) {
      if (it->second.retire && it->second.state == SvcState::stopped && it->second.phase == Phase::idle) {
        it = svcs.erase(it);
      } else {
        ++it;
      }
    }
    register_services();
    for (auto& [id, s] : svcs) after_idle(id, s, now);
    r.ok = true;
    r.message = "reloaded " + cfg->source + ": " + std::to_string(r.added.size()) + " added, " +
                std::to_string(r.removed.size()) + " removed, " + std::to_string(r.changed.size()) +
                " changed";
    if (metrics != nullptr) metrics->inc_config_reload(true);
    spdlog::info("{}", r.message);
    out.reloads.push_back({token, std::move(r)});
    out.changed = true;
    pump(now);
  }

  void fail_queued_for(const std::string& id, Refusal why, const std::string& msg, TimePoint now) {
    for (const auto& q : queue.take_service(id, now))
      fail_request(q.id, RequestStatus::rejected, why, msg, now);
    update_queue_metrics(now);
  }

  // ---------- adoption and persistence ----------
  void adopt(const std::vector<backends::RunInfo>& running, const std::string& json_text, TimePoint now) {
    std::map<std::string, std::pair<int, std::string>> file;
    if (!json_text.empty()) {
      try {
        const auto j = nlohmann::json::parse(json_text);
        for (const auto& [id, v] : j.at("services").items()) {
          file[id] = {v.value("gpu", -1), v.value("state", std::string())};
        }
      } catch (const std::exception& e) {
        spdlog::warn("ignoring unreadable scheduler state file: {}", e.what());
      }
    }
    for (const auto& run : running) {
      auto it = svcs.find(run.service_id);
      if (it == svcs.end()) {
        // Running but no longer configured: stop it (nothing gpumod started is left behind).
        auto& s = add_svc(run.service_id);
        auto p = std::make_shared<config::Preset>();
        p->id = run.service_id;
        s.preset = std::move(p);
        s.retire = true;
        s.state = SvcState::ready;
        begin_stop(run.service_id, s, "running at daemon start but not in the config", now);
        continue;
      }
      Svc& s = it->second;
      if (s.phase != Phase::idle) continue;  // adopted twice: nothing starts twice
      const auto f = file.find(run.service_id);
      s.gpu = f != file.end() && f->second.first >= 0 ? f->second.first
                                                      : (s.preset->gpus.empty() ? 0 : s.preset->gpus.front());
      if (run.pid > 0) {
        s.pids = {run.pid};
        pid_owner[run.pid] = run.service_id;
      }
      s.phase = Phase::verifying;
      set_state(run.service_id, s, SvcState::starting, now);
      out.effects.push_back(effect(Effect::Kind::verify, run.service_id, s));
    }
  }

  std::string state_json() const {
    nlohmann::json services = nlohmann::json::object();
    for (const auto& [id, s] : svcs) {
      if (s.gpu < 0 || (s.state != SvcState::ready && s.state != SvcState::sleeping)) continue;
      services[id] = {{"gpu", s.gpu}, {"state", policy::to_string(s.state)}};
    }
    return nlohmann::json{{"version", 1}, {"services", services}}.dump(2) + "\n";
  }

  void flush_persist() {
    if (!persist_dirty) return;
    persist_dirty = false;
    std::string text = state_json();
    if (text == persisted) return;
    persisted = text;
    Effect e;
    e.kind = Effect::Kind::persist;
    e.text = std::move(text);
    out.effects.push_back(std::move(e));
  }

  // ---------- read side ----------
  Snapshot snapshot(TimePoint now) const {
    Snapshot snap;
    for (const auto& [index, g] : gpus) {
      if (!gpu_allowed(index)) continue;
      GpuSnapshot gs;
      gs.index = index;
      gs.uuid = g.uuid;
      gs.name = g.name;
      gs.total_bytes = g.total_bytes;
      gs.used_bytes = g.used_bytes;
      gs.free_bytes = g.free_bytes;
      gs.ledger_bytes = ledger(index);
      gs.effective_free_bytes =
          policy::GpuView{index, g.total_bytes, g.free_bytes, gs.ledger_bytes, headroom()}.effective_free();
      gs.utilization_ratio = g.utilization_ratio;
      gs.temperature_celsius = g.temperature_celsius;
      gs.power_watts = g.power_watts;
      snap.gpus.push_back(std::move(gs));
    }
    for (const auto& [id, s] : svcs) {
      ServiceSnapshot ss;
      ss.id = id;
      ss.driver = config::to_string(s.preset->driver);
      ss.runner = config::to_string(s.preset->runner);
      ss.state = s.state;
      ss.gpu = s.gpu;
      ss.port = s.preset->port;
      ss.vram_bytes = s.preset->vram_mb * kMiB;
      ss.measured_bytes = s.measured;
      ss.priority = s.preset->priority;
      ss.pinned = s.preset->pinned;
      ss.leases = leases_of(s);
      ss.pid = s.pids.empty() ? 0 : s.pids.front();
      if (!s.preset->model_id.empty()) ss.models.push_back(s.preset->model_id);
      for (const auto& a : s.preset->aliases) ss.models.push_back(a);
      for (const auto& m : s.preset->models) ss.models.push_back(m);
      ss.last_error = s.last_error;
      ss.state_seconds = s.state_since == TimePoint{} ? 0 : secs(now - s.state_since);
      ss.cold_start_estimate_s = s.cold_est.value_or(0);
      ss.wake_estimate_s = s.wake_est.value_or(0);
      snap.services.push_back(std::move(ss));
    }
    for (const QueuedRequest* q : queue.ordered(now)) {
      snap.queue.push_back(info_of(q->id, RequestStatus::queued, now));
    }
    for (const auto& [id, s] : svcs) {
      for (const auto& rid : s.waiters) snap.queue.push_back(info_of(rid, RequestStatus::admitted, now));
    }
    if (!recent_cache) {
      recent_cache = std::make_shared<const std::vector<RequestInfo>>(recent.begin(), recent.end());
    }
    snap.recent = recent_cache;
    snap.current_mode = mode_job ? "" : current_mode;
    snap.switching_to = mode_job ? mode_job->mode : "";
    snap.probe_up = probe_up;
    snap.config_source = cfg->source;
    return snap;
  }

  RequestInfo info_of(const std::string& rid, RequestStatus st, TimePoint now) const {
    RequestInfo info;
    info.request_id = rid;
    info.status = st;
    const auto it = requests.find(rid);
    if (it != requests.end()) {
      info.model = it->second.spec.model;
      info.service = it->second.service;
      info.priority = it->second.priority;
      info.age_seconds = secs(now - it->second.enqueued);
    }
    return info;
  }

  Result<DryRun> dry_run(const std::string& model, TimePoint now) const {
    const config::Preset* p = cfg->resolve_model(model);
    if (p == nullptr) return make_error("unknown model '" + model + "'");
    if (gpus.empty()) return make_error("no GPU has been sampled yet");
    std::vector<std::string> ids;
    auto sv = service_views(now, &ids);
    const auto idx = static_cast<std::size_t>(std::find(ids.begin(), ids.end(), p->id) - ids.begin());
    DryRun dr;
    dr.service = p->id;
    dr.plan = policy::plan(gpu_views(), sv, policy::PlanRequest{idx, p->priority});
    for (const auto& a : dr.plan.actions) {
      const std::string who = a.kind == policy::ActionKind::wait_free ? "" : ids.at(a.service);
      switch (a.kind) {
        case policy::ActionKind::sleep:
          dr.steps.push_back("sleep " + who + " on GPU " + std::to_string(sv[a.service].gpu) + " (frees " +
                             policy::format_bytes(sv[a.service].vram - sv[a.service].sleep_residual) + ")");
          break;
        case policy::ActionKind::stop:
          dr.steps.push_back("stop " + who + " on GPU " + std::to_string(sv[a.service].gpu) + " (frees " +
                             policy::format_bytes(policy::charge_of(sv[a.service])) + ")");
          break;
        case policy::ActionKind::wait_free:
          dr.steps.push_back("wait until GPU " + std::to_string(a.gpu) + " shows " +
                             policy::format_bytes(a.bytes) + " free");
          break;
        case policy::ActionKind::start:
          dr.steps.push_back("start " + who + " on GPU " + std::to_string(a.gpu));
          break;
        case policy::ActionKind::wake:
          dr.steps.push_back("wake " + who + " on GPU " + std::to_string(a.gpu));
          break;
      }
    }
    if (dr.steps.empty())
      dr.steps.push_back(std::string(policy::to_string(dr.plan.outcome)) + ": " + dr.plan.reason);
    return dr;
  }

  TimePoint next_wakeup(TimePoint now) const {
    // A release wait that just began needs a fresh sample: take it now rather than one poll
    // interval later (that interval was most of the delay between the driver freeing memory
    // and gpumod noticing; docs/gpu-release.md). No busy loop: emit_poll clears poll_now, and
    // while a poll is in flight its completion is what wakes the loop.
    if (poll_now && poll_op == 0) return now;
    if (moving() || poll_now) {
      return now + std::min(policy().vram_poll_interval, policy().health_poll_interval);
    }
    TimePoint t = std::max(next_poll, now + std::chrono::milliseconds(5));  // never a busy loop
    if (!queue.empty()) {
      t = std::min(t, now + std::min<Clock::Duration>(policy().aging_interval, std::chrono::seconds(1)));
      if (auto d = queue.next_deadline()) t = std::min(t, *d);
    }
    return std::max(t, now + std::chrono::milliseconds(5));  // never a busy loop
  }
};

SchedulerCore::SchedulerCore(config::Config config, exporter::Metrics* metrics)
    : impl_(std::make_unique<Impl>(std::move(config), metrics)) {}
SchedulerCore::~SchedulerCore() = default;

void SchedulerCore::adopt(const std::vector<backends::RunInfo>& running, const std::string& state_file_json,
                          TimePoint now) {
  impl_->owner.assert_owner("SchedulerCore::adopt");
  impl_->adopt(running, state_file_json, now);
}
void SchedulerCore::on_probe_sample(const backends::ProbeSample& sample, TimePoint taken, TimePoint now) {
  impl_->owner.assert_owner("SchedulerCore::on_probe_sample");
  impl_->on_probe_sample(sample, taken, now);
}
void SchedulerCore::on_probe_error(const std::string& message, TimePoint now) {
  impl_->owner.assert_owner("SchedulerCore::on_probe_error");
  impl_->on_probe_error(message, now);
}
void SchedulerCore::on_poll_done(PollDone done, TimePoint now) {
  impl_->owner.assert_owner("SchedulerCore::on_poll_done");
  impl_->on_poll_done(std::move(done), now);
}
void SchedulerCore::on_op_done(const OpDone& done, TimePoint now) {
  impl_->owner.assert_owner("SchedulerCore::on_op_done");
  impl_->on_op_done(done, now);
}
void SchedulerCore::on_process_exit(const std::string& service, const backends::ExitInfo& exit,
                                    TimePoint now) {
  impl_->owner.assert_owner("SchedulerCore::on_process_exit");
  impl_->on_process_exit(service, exit, now);
  impl_->advance(now);
  impl_->pump(now);
}
void SchedulerCore::tick(TimePoint now) {
  impl_->owner.assert_owner("SchedulerCore::tick");
  impl_->tick(now);
}
void SchedulerCore::submit(RequestSpec spec, TimePoint now) {
  impl_->owner.assert_owner("SchedulerCore::submit");
  impl_->submit(std::move(spec), now);
}
void SchedulerCore::note_served(const std::string& service, std::optional<std::chrono::seconds> keep_alive,
                                std::uint64_t count, TimePoint answered) {
  impl_->owner.assert_owner("SchedulerCore::note_served");
  impl_->note_served(service, keep_alive, count, answered);
}
void SchedulerCore::on_stop_signalled(std::uint64_t op, TimePoint now) {
  impl_->owner.assert_owner("SchedulerCore::on_stop_signalled");
  impl_->on_stop_signalled(op, now);
}
Result<void> SchedulerCore::cancel(const std::string& request_id, TimePoint now) {
  impl_->owner.assert_owner("SchedulerCore::cancel");
  return impl_->cancel(request_id, now);
}
void SchedulerCore::release_lease(LeaseId lease, TimePoint now) {
  impl_->owner.assert_owner("SchedulerCore::release_lease");
  impl_->release_lease(lease, now);
}
void SchedulerCore::on_gate_drained(std::size_t slot, TimePoint now) {
  impl_->owner.assert_owner("SchedulerCore::on_gate_drained");
  impl_->on_gate_drained(slot, now);
}
LeaseGates& SchedulerCore::gates() {
  return *impl_->gates;
}
void SchedulerCore::service_action(std::uint64_t token, const std::string& service, ServiceAction action,
                                   TimePoint now) {
  impl_->owner.assert_owner("SchedulerCore::service_action");
  impl_->service_action(token, service, action, now);
}
void SchedulerCore::switch_mode(std::uint64_t token, const std::string& mode, TimePoint now) {
  impl_->owner.assert_owner("SchedulerCore::switch_mode");
  impl_->switch_mode(token, mode, now);
}
void SchedulerCore::reload(std::uint64_t token, const config::LoadResult& loaded, TimePoint now) {
  impl_->owner.assert_owner("SchedulerCore::reload");
  impl_->reload(token, loaded, now);
}
Result<DryRun> SchedulerCore::dry_run(const std::string& model, TimePoint now) const {
  impl_->owner.assert_owner("SchedulerCore::dry_run");
  return impl_->dry_run(model, now);
}
CoreOutput SchedulerCore::take_output() {
  impl_->owner.assert_owner("SchedulerCore::take_output");
  impl_->sync_gates();
  impl_->flush_persist();
  CoreOutput o = std::move(impl_->out);
  impl_->out = CoreOutput{};
  return o;
}
Snapshot SchedulerCore::snapshot(TimePoint now) const {
  impl_->owner.assert_owner("SchedulerCore::snapshot");
  return impl_->snapshot(now);
}
const config::Config& SchedulerCore::config() const {
  return *impl_->cfg;
}
std::shared_ptr<const config::Config> SchedulerCore::shared_config() const {
  return impl_->cfg;
}
TimePoint SchedulerCore::next_wakeup(TimePoint now) const {
  impl_->owner.assert_owner("SchedulerCore::next_wakeup");
  return impl_->next_wakeup(now);
}
policy::SvcState SchedulerCore::state_of(const std::string& service) const {
  impl_->owner.assert_owner("SchedulerCore::state_of");
  const auto it = impl_->svcs.find(service);
  return it == impl_->svcs.end() ? SvcState::stopped : it->second.state;
}
std::string SchedulerCore::last_error_of(const std::string& service) const {
  impl_->owner.assert_owner("SchedulerCore::last_error_of");
  const auto it = impl_->svcs.find(service);
  return it == impl_->svcs.end() ? std::string() : it->second.last_error;
}
std::size_t SchedulerCore::queue_length() const {
  impl_->owner.assert_owner("SchedulerCore::queue_length");
  return impl_->queue.size();
}
std::string SchedulerCore::persisted_state_json() const {
  impl_->owner.assert_owner("SchedulerCore::persisted_state_json");
  return impl_->state_json();
}

void SchedulerCore::bind_to_current_thread() {
  impl_->owner.bind();
}

}  // namespace gpumod::scheduler
