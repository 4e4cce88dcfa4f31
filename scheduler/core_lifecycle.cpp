// SchedulerCore, part of its implementation (core_impl.hpp lists the parts): completions of the ops
// it started (launch, health, activate, sleep, stop, verify), what happens once a service is idle,
// probe samples, polls, process exits, ticks.
#include "scheduler/core_impl.hpp"

#include <spdlog/spdlog.h>
#include <algorithm>

namespace gpumod::scheduler {

// ---------- op completions ----------
void SchedulerCore::Impl::on_op_done(const OpDone& d, TimePoint now) {
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

void SchedulerCore::Impl::on_launched(const std::string& id, Svc& s, const OpDone& d, TimePoint now) {
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
    note(Log::warn, event("service.failed", id, s.last_error, {{"during", "starting"}}));
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

void SchedulerCore::Impl::poll_health(const std::string& id, Svc& s, TimePoint now) {
  if (s.phase != Phase::health || s.op != 0 || now < s.next_health) return;
  out.effects.push_back(effect(Effect::Kind::check_health, id, s));
}

void SchedulerCore::Impl::on_health(const std::string& id, Svc& s, const OpDone& d, TimePoint now) {
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

void SchedulerCore::Impl::become_ready(const std::string& id, Svc& s, TimePoint now) {
  const double took = secs(now - s.bringup_started);
  const bool woke = s.wake_path;
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
  {
    char took_text[32];
    std::snprintf(took_text, sizeof took_text, "%.2f s", took);
    SchedEvent e = event(
        "service.ready", id,
        id + " is ready on GPU " + std::to_string(s.gpu) + " after " + took_text + (woke ? " (woken)" : ""),
        {{"seconds", took}, {"wake", woke}});
    e.gpu = s.gpu;
    note(Log::info, std::move(e));
  }
  s.last_used = now.time_since_epoch().count();
  auto waiters = std::move(s.waiters);
  s.waiters.clear();
  for (const auto& rid : waiters) serve(rid, id, s, now);
  absorb_queued(id, s, now);
  finish_action(s.tokens_ready, true, Refusal::none, id + " is ready");
  after_idle(id, s, now);
}

void SchedulerCore::Impl::on_slept(const std::string& id, Svc& s, const OpDone& d, TimePoint now) {
  s.phase = Phase::idle;
  mark_gpu_changed(s.gpu, now);
  if (!d.ok) {
    // Memory not freed: stop it instead so whoever waits for it gets the memory.
    s.last_error = id + " failed to sleep (" + d.message + "); stopping it instead";
    note(Log::warn, event("service.error", id, s.last_error, {{"during", "sleeping"}}));
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

void SchedulerCore::Impl::on_stopped(const std::string& id, Svc& s, const OpDone& d, TimePoint now) {
  s.phase = Phase::idle;
  mark_gpu_changed(s.gpu, now);
  s.gpu = -1;
  s.measured.reset();
  s.wake_path = false;
  if (!d.ok) {
    s.last_error = id + " did not stop cleanly: " + d.message;
    note(Log::warn, event("service.failed", id, s.last_error, {{"during", "stopping"}}));
    set_state(id, s, SvcState::failed, now);
  } else if (s.state != SvcState::failed) {
    set_state(id, s, SvcState::stopped, now);
  }
  finish_action(s.tokens_stopped, d.ok, d.ok ? Refusal::none : Refusal::failed,
                d.ok ? id + " is stopped" : s.last_error);
  finish_action(s.tokens_slept, false, Refusal::conflict, id + " was stopped instead of sleeping");
  eviction_done(id);
  if (s.retire) {
    note(Log::info, event("service.removed", id, id + " removed from the config: stopped and forgotten"));
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

void SchedulerCore::Impl::on_verified(const std::string& id, Svc& s, const OpDone& d, TimePoint now) {
  mark_gpu_changed(s.gpu, now);
  if (d.ok && d.health == backends::Health::ready) {
    s.phase = Phase::idle;
    set_state(id, s, d.sleeping ? SvcState::sleeping : SvcState::ready, now);
    SchedEvent e =
        event("service.adopted", id,
              "adopted " + id + " (" + policy::to_string(s.state) + ") on GPU " + std::to_string(s.gpu));
    e.gpu = s.gpu;
    note(Log::info, std::move(e));
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
  note(Log::warn, event("service.failed", id, s.last_error, {{"during", "adoption"}}));
  fail_waiters(s, Refusal::unavailable, s.last_error, now, 0);
  finish_action(s.tokens_ready, false, Refusal::unavailable, s.last_error);
  begin_stop(id, s, "adopted but unhealthy", now);
}

void SchedulerCore::Impl::requeue_waiters(const std::string& id, Svc& s, TimePoint now) {
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

void SchedulerCore::Impl::eviction_done(const std::string& id) {
  for (auto& [tid, t] : svcs) t.awaiting.erase(id);
}

void SchedulerCore::Impl::after_idle(const std::string& id, Svc& s, TimePoint now) {
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

std::optional<std::string> SchedulerCore::Impl::admit_service(const std::string& id, Svc& s, int priority,
                                                              TimePoint now,
                                                              const std::set<std::string>* keep,
                                                              bool* waiting) {
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
        return id + " does not fit next to " + ids[a.service] + " (the plan would evict it): " + plan.reason;
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

bool SchedulerCore::Impl::defer_until_fresh(std::optional<std::uint64_t> token, const std::string& id,
                                            ServiceAction action, TimePoint now) {
  if (views_fresh()) return false;
  deferred_admits.push_back(DeferredAdmit{token, id, action, now});
  poll_now = true;
  return true;
}

void SchedulerCore::Impl::expire_deferred(TimePoint now) {
  auto expired = [&](const DeferredAdmit& d) { return now - d.since >= policy().vram_release_timeout; };
  for (const auto& d : deferred_admits) {
    if (!expired(d)) continue;
    const std::string msg = d.service + " was not started: no GPU sample arrived within " +
                            fmt_secs(policy().vram_release_timeout) +
                            (probe_up ? std::string() : " (the GPU probe is failing: " + probe_error + ")");
    note(Log::warn, event("service.error", d.service, msg, {{"during", to_string(d.action)}}));
    if (d.token) out.actions.push_back({*d.token, ActionResult{false, Refusal::unavailable, msg}});
  }
  deferred_admits.erase(std::remove_if(deferred_admits.begin(), deferred_admits.end(), expired),
                        deferred_admits.end());
}

void SchedulerCore::Impl::admit_or_defer(std::optional<std::uint64_t> token, const std::string& id,
                                         ServiceAction action, TimePoint now) {
  if (defer_until_fresh(token, id, action, now)) return;
  auto it = svcs.find(id);
  if (it == svcs.end()) return;
  if (auto err = admit_service(id, it->second, it->second.preset->priority, now)) {
    note(Log::warn, event("service.error", id, *err, {{"during", to_string(action)}}));
    it->second.last_error = *err;
    out.changed = true;
  }
}

void SchedulerCore::Impl::replay_deferred(TimePoint now) {
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

void SchedulerCore::Impl::on_stop_signalled(std::uint64_t op, TimePoint now) {
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

void SchedulerCore::Impl::note_served(const std::string& id, std::optional<std::chrono::seconds> keep_alive,
                                      std::uint64_t count, TimePoint answered) {
  if (metrics != nullptr) {
    for (std::uint64_t i = 0; i < count; ++i) metrics->observe_admission_wait(0.0);
  }
  auto it = svcs.find(id);
  if (it == svcs.end() || it->second.state != SvcState::ready) return;
  touch(it->second, keep_alive, answered);
}

// ---------- polling ----------
void SchedulerCore::Impl::on_probe_sample(const backends::ProbeSample& sample, TimePoint taken,
                                          TimePoint now) {
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

void SchedulerCore::Impl::on_poll_done(PollDone d, TimePoint now) {
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

void SchedulerCore::Impl::on_probe_error(const std::string& message, TimePoint now) {
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

void SchedulerCore::Impl::on_process_exit(const std::string& id, const backends::ExitInfo& exit,
                                          TimePoint now) {
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
    note(Log::warn, event("service.failed", id, msg, {{"during", policy::to_string(s.state)}}));
    s.last_error = msg;
    set_state(id, s, SvcState::failed, now);
    // Clean up what may be left of its process group; memory comes back via the release wait.
    if (s.phase == Phase::idle) begin_stop(id, s, "exited", now);
  }
}

bool SchedulerCore::Impl::waiting_for_memory() const {
  for (const auto& [id, s] : svcs) {
    if (s.phase == Phase::vram_wait && s.awaiting.empty()) return true;
  }
  return mode_job && mode_job->bringing_up;
}

bool SchedulerCore::Impl::moving() const {
  for (const auto& [id, s] : svcs) {
    if (s.phase != Phase::idle) return true;
  }
  return mode_job.has_value() || !deferred_admits.empty();
}

void SchedulerCore::Impl::tick(TimePoint now) {
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

void SchedulerCore::Impl::emit_poll(TimePoint now) {
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

}  // namespace gpumod::scheduler
