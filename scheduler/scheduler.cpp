// The Scheduler shell: one loop thread that owns the SchedulerCore, a mailbox that other
// threads post into (a mutex + condvar guarding only the queue of posted tasks), a small
// worker pool that runs the core's Effects against the backends, and an immutable snapshot
// published after every change. No scheduling state is touched outside the loop thread.
#include "scheduler/scheduler.hpp"

#include <spdlog/spdlog.h>
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <utility>

#include "backends/service_log.hpp"
#include "scheduler/core.hpp"
#include "scheduler/effects.hpp"
#include "scheduler/fast_path.hpp"

namespace gpumod::scheduler {

const char* to_string(RequestStatus s) {
  switch (s) {
    case RequestStatus::queued:
      return "queued";
    case RequestStatus::admitted:
      return "admitted";
    case RequestStatus::ready:
      return "ready";
    case RequestStatus::rejected:
      return "rejected";
    case RequestStatus::timed_out:
      return "timed_out";
    case RequestStatus::cancelled:
      return "cancelled";
  }
  return "unknown";
}

const char* to_string(Refusal r) {
  switch (r) {
    case Refusal::none:
      return "none";
    case Refusal::unknown:
      return "unknown";
    case Refusal::conflict:
      return "conflict";
    case Refusal::never_fits:
      return "never_fits";
    case Refusal::queue_full:
      return "queue_full";
    case Refusal::unavailable:
      return "unavailable";
    case Refusal::deadline:
      return "deadline";
    case Refusal::failed:
      return "failed";
  }
  return "unknown";
}

const char* to_string(ServiceAction a) {
  switch (a) {
    case ServiceAction::start:
      return "start";
    case ServiceAction::stop:
      return "stop";
    case ServiceAction::sleep:
      return "sleep";
    case ServiceAction::wake:
      return "wake";
  }
  return "unknown";
}

namespace {

// A fixed pool of threads running blocking backend calls. Its job queue has its own lock;
// jobs only call backends and post their result back to the mailbox.
class WorkerPool {
 public:
  explicit WorkerPool(std::size_t n) {
    for (std::size_t i = 0; i < std::max<std::size_t>(n, 1); ++i) threads_.emplace_back([this] { run(); });
  }
  ~WorkerPool() { stop(); }
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  void post(std::function<void()> job) {
    {
      std::lock_guard<std::mutex> l(mu_);
      jobs_.push_back(std::move(job));
    }
    cv_.notify_one();
  }
  void stop() {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (stopped_) return;
      stopped_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }

 private:
  void run() {
    for (;;) {
      std::function<void()> job;
      {
        std::unique_lock<std::mutex> l(mu_);
        cv_.wait(l, [&] { return stopped_ || !jobs_.empty(); });
        if (jobs_.empty()) return;  // stopped and drained
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
      job();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool stopped_ = false;
  std::vector<std::thread> threads_;
};

RequestOutcome not_running(const std::string& id) {
  RequestOutcome o;
  o.request_id = id;
  o.status = RequestStatus::rejected;
  o.refusal = Refusal::unavailable;
  o.message = "the scheduler is not running";
  o.retry_after_seconds = 5;
  return o;
}

// A promise and the caller's Notify: set() makes the future ready, then wakes the caller.
// Shared by the calling thread (which may answer at once) and the scheduler thread.
template <typename T>
class Answer {
 public:
  explicit Answer(Notify notify) : notify_(std::move(notify)) {}
  std::future<T> future() { return promise_.get_future(); }
  template <typename... Value>  // none for Answer<void>
  void set(Value&&... value) {
    promise_.set_value(std::forward<Value>(value)...);
    if (notify_) std::exchange(notify_, nullptr)();
  }

 private:
  std::promise<T> promise_;
  Notify notify_;
};

template <typename T>
using AnswerPtr = std::shared_ptr<Answer<T>>;

}  // namespace

constexpr auto kHeartbeatPeriod = std::chrono::milliseconds(500);
constexpr int kLogTailLines = 20;  // of a failed service's log, in its service.log_tail event

struct Scheduler::Impl {
  using Task = std::function<void(TimePoint)>;
  // A posted task and what it is, for the heartbeat's "in flight" and the stall hook. `what` is
  // a string literal.
  struct Posted {
    const char* what;
    Task task;
  };

  Deps deps;
  std::filesystem::path state_dir;
  SchedulerCore core;  // loop thread only (and start() before the loop exists)
  EffectRunner exec;

  // --- the mailbox: the one lock around posted tasks ---
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Posted> inbox;
  bool running = false;
  bool quit = false;

  std::thread loop;
  std::unique_ptr<WorkerPool> pool;
  std::atomic<std::uint64_t> next_token{1};
  std::atomic<std::uint64_t> next_request{1};

  // --- loop thread only ---
  std::unordered_map<std::string, AnswerPtr<RequestOutcome>> request_promises;
  std::map<std::uint64_t, AnswerPtr<ActionResult>> action_promises;
  std::map<std::uint64_t, AnswerPtr<ModeResult>> mode_promises;
  std::map<std::uint64_t, AnswerPtr<ReloadResult>> reload_promises;
  std::uint64_t version = 0;
  // Answers to hand out once the current round's snapshot is published (scheduler thread).
  std::vector<std::function<void()>> after_publish;

  // --- shared with callers' threads: the published state, lease gates, answers to record ---
  FastPath fast;
  EventLog events;  // appended by the loop thread (and workers), read by any (event_log.hpp)

  Impl(config::Config c, Deps d)
      : deps(std::move(d)),
        state_dir(c.daemon.state_dir),
        core(std::move(c), deps.metrics),
        exec(deps, state_dir),
        fast(
            *deps.clock, deps.metrics, core.gates(),
            [this](const char* what, Task task) { return post(what, std::move(task)); },
            [this](std::size_t slot, TimePoint at) { core.on_gate_drained(slot, at); }) {
    publish(deps.clock->now());
  }

  TimePoint now() const { return deps.clock->now(); }

  // Post a task to the loop; false when the loop is not running. `what` (a string literal)
  // names it in the heartbeat while it runs.
  bool post(const char* what, Task t) {
    {
      std::lock_guard<std::mutex> l(mu);
      if (!running) return false;
      inbox.push_back(Posted{what, std::move(t)});
    }
    cv.notify_one();
    return true;
  }

  // --- the heartbeat (written by the loop thread, read by any; see LoopHealth) ---
  // Real time, not deps.clock: it is about whether this thread turns, which a manual test clock
  // cannot say.
  static std::int64_t steady_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  std::atomic<std::int64_t> last_turn_ns{0};
  std::atomic<const char*> doing{nullptr};  // a string literal while a step runs, else null
  std::atomic<std::int64_t> doing_since_ns{0};

  // The loop: step `what` begins (what == nullptr: the round is over, the loop turned).
  void beat(const char* what) {
    const std::int64_t t = steady_ns();
    if (what == nullptr) last_turn_ns.store(t, std::memory_order_relaxed);
    doing_since_ns.store(t, std::memory_order_relaxed);
    doing.store(what, std::memory_order_release);
    if (what != nullptr && deps.before_step) deps.before_step(what);
  }

  void publish(TimePoint t) {
    auto s = std::make_shared<Snapshot>(core.snapshot(t));
    s->version = ++version;
    s->probe_kind = deps.probe != nullptr ? deps.probe->kind() : "none";
    fast.publish(std::move(s), core.shared_config());
  }

  void run_loop() {
    core.bind_to_current_thread();
    TimePoint tick_due = now();  // the core's next wake-up
    for (;;) {
      beat(nullptr);
      std::deque<Posted> batch;
      {
        std::unique_lock<std::mutex> l(mu);
        const auto drain_at = fast.next_drain();
        const TimePoint wake = drain_at ? std::min(tick_due, *drain_at) : tick_due;
        // Even with nothing to do the loop turns once per kHeartbeatPeriod, so a heartbeat older
        // than that means a step is stuck, not that the daemon is idle.
        const auto wait = std::min<Clock::Duration>(wake - now(), kHeartbeatPeriod);
        if (wait > Clock::Duration::zero()) {
          cv.wait_for(l, wait, [&] { return quit || !inbox.empty(); });
        }
        if (quit) return;
        batch.swap(inbox);
      }
      beat(nullptr);
      TimePoint t = now();
      beat("record fast-path answers");
      fast.drain(
          t, [this](const std::string& id, std::optional<std::chrono::seconds> keep_alive,
                    std::uint64_t count, TimePoint last) { core.note_served(id, keep_alive, count, last); });
      for (auto& posted : batch) {
        beat(posted.what);
        posted.task(t);
      }
      if (t >= tick_due) {
        beat("tick");
        core.tick(t);
      }
      beat("dispatch");
      dispatch(t);
      tick_due = core.next_wakeup(t);
    }
  }

  // Run the core's output: effects to the workers, outcomes to their promises.
  // The snapshot is published first, so a caller whose future completes sees its effect.
  void dispatch(TimePoint t) {
    CoreOutput out = core.take_output();
    if (out.changed) publish(t);
    // The failure's own event goes in before its log tail is asked for: the worker appends the
    // tail as soon as it has read it, and a reader must see the failure first.
    std::vector<std::string> failed = failures_wanting_log_tails(out.events);
    events.append(std::move(out.events));
    post_log_tails(std::move(failed));
    for (auto& e : out.effects) {
      switch (e.kind) {
        case Effect::Kind::persist:
          if (auto r = exec.persist(e.text); !r) spdlog::warn("scheduler state file: {}", r.error());
          break;
        case Effect::Kind::poll:
          pool->post([this, e = std::move(e)] {
            PollDone d = exec.poll(e);
            post("poll result",
                 [this, d = std::move(d)](TimePoint at) mutable { core.on_poll_done(std::move(d), at); });
          });
          break;
        default:
          pool->post([this, e = std::move(e)] {
            const std::uint64_t op = e.op;
            OpDone d = exec.run(e, [this, op] {
              post("stop signalled", [this, op](TimePoint at) { core.on_stop_signalled(op, at); });
            });
            post("backend operation done",
                 [this, d = std::move(d)](TimePoint at) { core.on_op_done(d, at); });
          });
          break;
      }
    }
    answer(out);
  }

  // A failure's event says why; the last lines of the service's own log usually say more. They
  // are read on a worker (a file read has no place on this thread) and follow as an event of
  // their own. Failures whose message carries the lines already (a process that exited) are
  // left as they are.
  std::vector<std::string> failures_wanting_log_tails(const std::vector<SchedEvent>& evs) const {
    std::vector<std::string> ids;
    if (deps.log_dir.empty() || !pool) return ids;
    for (const auto& e : evs)
      if (e.kind == "service.failed" && e.message.find("last log lines") == std::string::npos)
        ids.push_back(e.service);
    return ids;
  }

  void post_log_tails(std::vector<std::string> ids) {
    for (auto& service : ids) {
      pool->post([this, id = std::move(service)] {
        const std::string tail =
            backends::tail_lines(backends::service_log_path(deps.log_dir, id), kLogTailLines);
        if (tail.empty()) return;
        nlohmann::json lines = nlohmann::json::array();
        std::size_t begin = 0;
        while (begin <= tail.size()) {
          const std::size_t nl = std::min(tail.find('\n', begin), tail.size());
          lines.push_back(tail.substr(begin, nl - begin));
          begin = nl + 1;
        }
        SchedEvent tail_event;
        tail_event.kind = "service.log_tail";
        tail_event.service = id;
        tail_event.message = "the last lines of " + id + "'s log:\n" + tail;
        tail_event.detail = {{"lines", std::move(lines)}};
        events.append({std::move(tail_event)});
      });
    }
  }

  // Hands the core's finished requests and commands to the callers waiting on them.
  void answer(CoreOutput& out) {
    for (auto& c : out.requests) {
      auto it = request_promises.find(c.request_id);
      if (it == request_promises.end()) continue;
      const AnswerPtr<RequestOutcome> a = std::move(it->second);
      request_promises.erase(it);
      a->set(std::move(c.outcome));
    }
    for (auto& a : out.actions) fulfil(action_promises, a.token, std::move(a.result));
    for (auto& m : out.modes) fulfil(mode_promises, m.token, std::move(m.result));
    for (auto& r : out.reloads) fulfil(reload_promises, r.token, std::move(r.result));
    for (auto& f : after_publish) f();
    after_publish.clear();
  }

  template <typename Map, typename T>
  static void fulfil(Map& m, std::uint64_t token, T value) {
    auto it = m.find(token);
    if (it == m.end()) return;
    auto a = std::move(it->second);
    m.erase(it);
    a->set(std::move(value));
  }

  void start() {
    {
      std::lock_guard<std::mutex> l(mu);
      if (running) return;
    }
    const TimePoint t = now();
    // Learn the GPUs before anything is placed.
    if (deps.probe != nullptr) {
      auto s = deps.probe->sample();
      if (s) {
        core.on_probe_sample(*s, t, t);
      } else {
        core.on_probe_error(s.error(), t);
      }
    }
    // Re-adopt what still runs; nothing is started twice.
    std::vector<backends::RunInfo> runs;
    for (backends::Runner* r : {deps.process_runner, deps.systemd_runner}) {
      if (r == nullptr) continue;
      try {
        auto adopted = r->adopt();
        runs.insert(runs.end(), adopted.begin(), adopted.end());
      } catch (const std::exception& e) {
        spdlog::warn("{} runner: adopt failed: {}", r->kind(), e.what());
      }
    }
    core.adopt(runs, read_state_file(state_dir), t);
    pool = std::make_unique<WorkerPool>(deps.worker_threads);
    {
      std::lock_guard<std::mutex> l(mu);
      running = true;
      quit = false;
    }
    fast.set_live(true);
    dispatch(t);
    publish(t);
    loop = std::thread([this] { run_loop(); });
  }

  void stop() {
    {
      std::lock_guard<std::mutex> l(mu);
      if (!running) return;
      running = false;  // no new posts
      quit = true;
    }
    fast.set_live(false);
    cv.notify_all();
    if (loop.joinable()) loop.join();
    pool->stop();  // in-flight backend calls finish; their results are dropped
    core.bind_to_current_thread();
    // Tasks posted before the stop still hold their callers' promises: run them (the loop
    // is gone, so this thread owns the core now) and answer what completes; no new effects.
    std::deque<Posted> rest;
    {
      std::lock_guard<std::mutex> l(mu);
      rest.swap(inbox);
    }
    const TimePoint t = now();
    for (auto& posted : rest) posted.task(t);
    CoreOutput out = core.take_output();
    events.append(std::move(out.events));
    answer(out);
    // Nobody waits forever: answer what is still pending.
    for (auto& [id, a] : std::exchange(request_promises, {})) a->set(not_running(id));
    for (auto& [t, a] : std::exchange(action_promises, {}))
      a->set(ActionResult{false, Refusal::unavailable, "the scheduler stopped"});
    for (auto& [t, a] : std::exchange(mode_promises, {})) {
      ModeResult r;
      r.refusal = Refusal::unavailable;
      r.errors.push_back("the scheduler stopped");
      a->set(std::move(r));
    }
    for (auto& [t, a] : std::exchange(reload_promises, {}))
      a->set(ReloadResult{false, "the scheduler stopped", {}, {}, {}});
  }
};

Scheduler::Scheduler(config::Config config, Deps deps)
    : impl_(std::make_unique<Impl>(std::move(config), std::move(deps))) {}

Scheduler::~Scheduler() {
  stop();
}

void Scheduler::start() {
  impl_->start();
}
void Scheduler::stop() {
  if (impl_) impl_->stop();
}

RequestTicket Scheduler::submit(RequestSpec spec, Notify on_decided, Notify on_accepted) {
  if (spec.request_id.empty()) spec.request_id = "req-" + std::to_string(impl_->next_request.fetch_add(1));
  auto promise = std::make_shared<Answer<RequestOutcome>>(std::move(on_decided));
  RequestTicket ticket{spec.request_id, promise->future().share(), {}};
  Impl* impl = impl_.get();
  // Fast path: a model that is ready in the published snapshot is answered here, without a
  // round trip through the scheduler thread (bench/README.md "HTTP"); the use is recorded
  // there afterwards. The snapshot can be a few microseconds old: a service evicted in that
  // window is no different from one evicted just after the answer. A lease is taken through
  // the service's lease gate, which the scheduler closes before it lets the service go.
  if (auto answered = impl->fast.answer(spec)) {
    promise->set(std::move(*answered));
    if (on_accepted) on_accepted();
    return ticket;  // decided: `accepted` stays invalid, which means taken in
  }
  auto accepted = std::make_shared<Answer<void>>(std::move(on_accepted));
  ticket.accepted = accepted->future().share();
  const bool posted =
      impl->post("request", [impl, promise, accepted, spec = std::move(spec)](TimePoint t) mutable {
        impl->after_publish.push_back([accepted] { accepted->set(); });
        if (impl->request_promises.count(spec.request_id) != 0) {  // a live request has this id
          RequestOutcome o;
          o.request_id = spec.request_id;
          o.status = RequestStatus::rejected;
          o.refusal = Refusal::conflict;
          o.message = "request id '" + spec.request_id + "' is already in use";
          promise->set(std::move(o));
          return;
        }
        impl->request_promises.emplace(spec.request_id, promise);
        impl->core.submit(std::move(spec), t);
      });
  if (!posted) {
    promise->set(not_running(ticket.request_id));
    accepted->set();
  }
  return ticket;
}

std::optional<RequestInfo> Scheduler::request_info(const std::string& request_id) const {
  auto s = snapshot();
  if (!s) return std::nullopt;
  for (const auto& r : s->queue) {
    if (r.request_id == request_id) return r;
  }
  if (s->recent) {
    for (auto it = s->recent->rbegin(); it != s->recent->rend(); ++it) {
      if (it->request_id == request_id) return *it;
    }
  }
  return std::nullopt;
}

EventLog& Scheduler::events() {
  return impl_->events;
}

std::future<Result<void>> Scheduler::cancel(const std::string& request_id, Notify on_done) {
  auto promise = std::make_shared<Answer<Result<void>>>(std::move(on_done));
  auto future = promise->future();
  Impl* impl = impl_.get();
  if (!impl->post("cancel", [impl, promise, request_id](TimePoint t) {
        // Answered after this round's snapshot is out, so a GET right after sees "cancelled".
        impl->after_publish.push_back(
            [promise, r = impl->core.cancel(request_id, t)]() mutable { promise->set(std::move(r)); });
      })) {
    promise->set(make_error("the scheduler is not running"));
  }
  return future;
}

void Scheduler::release_lease(LeaseId lease) {
  Impl* impl = impl_.get();
  if (LeaseGates::is_gate_lease(lease)) {
    impl->fast.give_back(lease, /*counted=*/true);
    return;
  }
  impl->post("lease release", [impl, lease](TimePoint t) { impl->core.release_lease(lease, t); });
}

std::future<ActionResult> Scheduler::service_action(const std::string& service_id, ServiceAction action,
                                                    Notify on_done) {
  auto promise = std::make_shared<Answer<ActionResult>>(std::move(on_done));
  auto future = promise->future();
  Impl* impl = impl_.get();
  const std::uint64_t token = impl->next_token.fetch_add(1);
  if (!impl->post("service action", [impl, promise, token, service_id, action](TimePoint t) {
        impl->action_promises.emplace(token, promise);
        impl->core.service_action(token, service_id, action, t);
      })) {
    promise->set(ActionResult{false, Refusal::unavailable, "the scheduler is not running"});
  }
  return future;
}

std::future<ModeResult> Scheduler::switch_mode(const std::string& mode_id, Notify on_done) {
  auto promise = std::make_shared<Answer<ModeResult>>(std::move(on_done));
  auto future = promise->future();
  Impl* impl = impl_.get();
  const std::uint64_t token = impl->next_token.fetch_add(1);
  if (!impl->post("mode switch", [impl, promise, token, mode_id](TimePoint t) {
        impl->mode_promises.emplace(token, promise);
        impl->core.switch_mode(token, mode_id, t);
      })) {
    ModeResult r;
    r.mode = mode_id;
    r.refusal = Refusal::unavailable;
    r.errors.push_back("the scheduler is not running");
    promise->set(std::move(r));
  }
  return future;
}

std::future<ReloadResult> Scheduler::reload(Notify on_done) {
  auto promise = std::make_shared<Answer<ReloadResult>>(std::move(on_done));
  auto future = promise->future();
  Impl* impl = impl_.get();
  if (!impl->deps.load_config) {
    promise->set(
        ReloadResult{false, "reload is not supported: the config has no source to re-read", {}, {}, {}});
    return future;
  }
  const std::uint64_t token = impl->next_token.fetch_add(1);
  // Reading and validating files happens off the loop; only the swap happens on it.
  const bool posted = impl->post("reload", [impl, promise, token](TimePoint) {
    impl->reload_promises.emplace(token, promise);
    impl->pool->post([impl, token] {
      auto loaded = std::make_shared<config::LoadResult>();
      try {
        *loaded = impl->deps.load_config();
      } catch (const std::exception& e) {
        config::Diagnostic d;
        d.message = std::string("reading the config failed: ") + e.what();
        loaded->diagnostics.push_back(d);
      }
      impl->post("reload apply",
                 [impl, token, loaded](TimePoint t) { impl->core.reload(token, *loaded, t); });
    });
  });
  if (!posted) promise->set(ReloadResult{false, "the scheduler is not running", {}, {}, {}});
  return future;
}

std::future<Result<DryRun>> Scheduler::dry_run(const std::string& model, Notify on_done) {
  auto promise = std::make_shared<Answer<Result<DryRun>>>(std::move(on_done));
  auto future = promise->future();
  Impl* impl = impl_.get();
  if (!impl->post("plan",
                  [impl, promise, model](TimePoint t) { promise->set(impl->core.dry_run(model, t)); })) {
    promise->set(make_error("the scheduler is not running"));
  }
  return future;
}

LoopHealth Scheduler::loop_health() const {
  LoopHealth h;
  const Impl& impl = *impl_;
  h.running = impl.fast.live();
  const std::int64_t now_ns = Impl::steady_ns();
  const auto ms = [now_ns](std::int64_t then) {
    return std::chrono::milliseconds(then == 0 ? 0 : std::max<std::int64_t>(0, (now_ns - then) / 1000000));
  };
  h.since_last_turn = ms(impl.last_turn_ns.load(std::memory_order_relaxed));
  if (const char* what = impl.doing.load(std::memory_order_acquire); what != nullptr) {
    h.in_flight = what;
    h.in_flight_for = ms(impl.doing_since_ns.load(std::memory_order_relaxed));
  }
  const auto c = impl.fast.config();
  h.stall_timeout = c ? c->daemon.policy.stall_timeout : h.stall_timeout;
  h.stalled = h.running && h.since_last_turn > h.stall_timeout;
  return h;
}

std::shared_ptr<const Snapshot> Scheduler::snapshot() const {
  return impl_->fast.snapshot();
}
std::shared_ptr<const config::Config> Scheduler::config() const {
  return impl_->fast.config();
}

}  // namespace gpumod::scheduler
