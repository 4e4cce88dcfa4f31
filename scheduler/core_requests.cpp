// SchedulerCore, part of its implementation (core_impl.hpp lists the parts): request outcomes,
// admission (pumping the queue in priority order, running the planner's plans, evicting), leases
// and cancel.
#include "scheduler/core_impl.hpp"

#include "policy/backfill.hpp"

#include <spdlog/spdlog.h>
#include <algorithm>
#include <string_view>

namespace gpumod::scheduler {

// ---------- request outcomes ----------
void SchedulerCore::Impl::finish_request(const std::string& rid, RequestOutcome o, TimePoint now) {
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

void SchedulerCore::Impl::remember(const std::string& rid, const std::string& model,
                                   const std::string& service, int priority, const RequestOutcome& o) {
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
  nlohmann::json detail = {{"model", model},
                           {"status", to_string(o.status)},
                           {"priority", priority},
                           {"waited_s", o.waited_seconds}};
  if (o.status != RequestStatus::ready) detail["refusal"] = to_string(o.refusal);
  SchedEvent e = event(o.status == RequestStatus::ready ? "request.ready" : "request.refused", service,
                       "request " + rid + " for " + model + ": " + to_string(o.status) + ": " + o.message,
                       std::move(detail));
  e.request_id = rid;
  e.gpu = o.gpu;
  note(Log::debug, std::move(e));
}

void SchedulerCore::Impl::note_admitted(const std::string& rid, const RequestRec& r, const char* how) {
  SchedEvent e =
      event("request.admitted", r.service,
            "request " + rid + " for " + r.spec.model + " waits for " + r.service + " (" + how + ")",
            {{"model", r.spec.model}, {"priority", r.priority}, {"how", how}});
  e.request_id = rid;
  note(Log::debug, std::move(e));
}

void SchedulerCore::Impl::fail_request(const std::string& rid, RequestStatus st, Refusal why,
                                       const std::string& msg, TimePoint now, int retry_after) {
  RequestOutcome o;
  o.status = st;
  o.refusal = why;
  o.message = msg;
  o.retry_after_seconds = retry_after;
  finish_request(rid, std::move(o), now);
}

void SchedulerCore::Impl::serve(const std::string& rid, const std::string& id, Svc& s, TimePoint now) {
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

void SchedulerCore::Impl::touch(Svc& s, std::optional<std::chrono::seconds> keep_alive, TimePoint now) {
  // max: a batch of fast-path answers (note_served) may carry a time before a use recorded since.
  s.last_used = std::max<std::int64_t>(s.last_used, now.time_since_epoch().count());
  std::chrono::seconds ka = s.preset->keep_alive.value_or(policy().default_keep_alive);
  if (keep_alive && *keep_alive > ka) ka = *keep_alive;
  const TimePoint until = now + ka;
  if (until > s.keep_alive_until) s.keep_alive_until = until;
}

void SchedulerCore::Impl::fail_waiters(Svc& s, Refusal why, const std::string& msg, TimePoint now,
                                       int retry_after) {
  auto waiters = std::move(s.waiters);
  s.waiters.clear();
  for (const auto& rid : waiters) fail_request(rid, RequestStatus::rejected, why, msg, now, retry_after);
}

void SchedulerCore::Impl::finish_action(std::vector<std::uint64_t>& tokens, bool ok, Refusal why,
                                        const std::string& msg) {
  for (auto t : tokens) out.actions.push_back({t, ActionResult{ok, why, msg}});
  tokens.clear();
}

void SchedulerCore::Impl::update_queue_metrics(TimePoint now) {
  if (metrics != nullptr) metrics->set_queue(queue.size(), secs(queue.oldest_age(now)));
}

// ---------- admission ----------
void SchedulerCore::Impl::submit(RequestSpec spec, TimePoint now) {
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
    note_admitted(rid, rec, "joined the load under way");
    requests.emplace(rid, std::move(rec));
    s.waiters.push_back(rid);
    out.changed = true;
    return;
  }
  QueuedRequest q{rid, id, rec.priority, now, rec.deadline, 0};
  switch (queue.push(q)) {
    case AdmissionQueue::PushResult::full:
      reject_now(Refusal::queue_full,
                 "admission queue is full (" + std::to_string(queue.max_length()) + " waiting); retry later",
                 "queue_full", kQueueFullRetryAfter);
      return;
    case AdmissionQueue::PushResult::duplicate_id:
      reject_now(Refusal::conflict, "request id '" + rid + "' is already queued", "duplicate_id");
      return;
    case AdmissionQueue::PushResult::queued:
      break;
  }
  {
    std::size_t position = 0;
    for (const QueuedRequest* queued : queue.ordered(now)) {
      ++position;
      if (queued->id == rid) break;
    }
    SchedEvent e = event("request.queued", id,
                         "request " + rid + " for " + rec.spec.model + " queued at position " +
                             std::to_string(position) + " of " + std::to_string(queue.size()) + " (" + id +
                             " is " + policy::to_string(s.state) + ")",
                         {{"model", rec.spec.model},
                          {"priority", rec.priority},
                          {"position", position},
                          {"queue_length", queue.size()}});
    e.request_id = rid;
    note(Log::debug, std::move(e));
  }
  requests.emplace(rid, std::move(rec));
  out.changed = true;
  update_queue_metrics(now);
  pump(now);
}

void SchedulerCore::Impl::absorb_queued(const std::string& id, Svc& s, TimePoint now) {
  auto taken = queue.take_service(id, now);
  if (taken.empty()) return;
  for (const auto& q : taken) {
    auto it = requests.find(q.id);
    if (it == requests.end()) continue;
    if (s.state == SvcState::ready && s.phase == Phase::idle) {
      serve(q.id, id, s, now);
    } else {
      it->second.status = RequestStatus::admitted;
      note_admitted(q.id, it->second, "its service is being brought up");
      s.waiters.push_back(q.id);
    }
  }
  out.changed = true;
  update_queue_metrics(now);
}

void SchedulerCore::Impl::pump(TimePoint now) {
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
  std::vector<policy::PlanRequest> blocked;  // planned before this one, not admitted
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
          fail_request(q.id, RequestStatus::rejected, Refusal::never_fits, id + " never fits: " + plan.reason,
                       now);
        }
        update_queue_metrics(now);
        break;
      }
      case policy::Outcome::wait:
        blocked.push_back({idx, prio});
        break;
      case policy::Outcome::plan:
        if (!blocked.empty() && !policy::backfill_safe(plan, gv, sv, blocked)) break;
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

bool SchedulerCore::Impl::execute(const std::string& target, const policy::Plan& plan,
                                  const std::vector<std::string>& ids, TimePoint now) {
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
        SchedEvent e = event("service.evicting", vid,
                             "evicting " + vid + " (" + (sleep ? "sleep" : "stop") + ") on GPU " +
                                 std::to_string(v.gpu) + " for " + target + ": " + plan.reason,
                             {{"how", sleep ? "sleep" : "stop"}, {"for", target}, {"reason", plan.reason}});
        e.gpu = v.gpu;
        note(Log::info, std::move(e));
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
  t.wait_noted = false;
  t.bringup_started = now;
  t.phase = Phase::vram_wait;
  t.last_error.clear();
  set_state(target, t, t.wake_path ? SvcState::waking : SvcState::starting, now);
  {
    nlohmann::json victims = nlohmann::json::array();
    for (const auto& v : t.awaiting) victims.push_back(v);
    SchedEvent e = event("service.admitted", target, "admitting " + target + ": " + plan.reason,
                         {{"reason", plan.reason},
                          {"wake", t.wake_path},
                          {"evicting", std::move(victims)},
                          {"needed_bytes", t.wait_bytes}});
    e.gpu = t.gpu;
    note(Log::info, std::move(e));
  }
  advance(now);
  return true;
}

void SchedulerCore::Impl::begin_sleep(const std::string& id, Svc& s, TimePoint now) {
  close_gate(s);  // claimed by the caller: already closed and empty
  s.phase = Phase::sleeping_op;
  set_state(id, s, SvcState::sleeping, now);
  out.effects.push_back(effect(Effect::Kind::sleep, id, s));
}

void SchedulerCore::Impl::begin_stop(const std::string& id, Svc& s, const std::string& reason,
                                     TimePoint now) {
  close_gate(s);  // claimed by the caller, or forced (crash, exit, removal)
  s.phase = Phase::stopping_op;
  s.stop_reason = reason;
  if (s.state != SvcState::failed) set_state(id, s, SvcState::stopping, now);
  Effect e = effect(Effect::Kind::stop, id, s);
  e.timeout = policy().stop_grace;
  out.effects.push_back(std::move(e));
}

bool SchedulerCore::Impl::request_stop(const std::string& id, Svc& s, const std::string& reason,
                                       TimePoint now) {
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

void SchedulerCore::Impl::abort_bringup(const std::string& id, Svc& s, const std::string& msg, TimePoint now,
                                        Refusal why, int retry_after) {
  s.phase = Phase::idle;
  s.awaiting.clear();
  s.vram_wait_since.reset();
  s.wait_noted = false;
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

void SchedulerCore::Impl::fail_bringup(const std::string& id, Svc& s, const std::string& msg, TimePoint now) {
  {
    SchedEvent e = event("service.failed", id, msg, {{"during", policy::to_string(s.state)}});
    e.gpu = s.gpu;
    note(Log::warn, std::move(e));
  }
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

void SchedulerCore::Impl::advance(TimePoint now) {
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
    if (fresh && g != gpus.end() && !s.wait_noted && g->second.free_bytes < s.wait_bytes) {
      s.wait_noted = true;
      SchedEvent e =
          event("service.vram_wait", id,
                id + " waits for " + policy::format_bytes(s.wait_bytes) + " free on GPU " +
                    std::to_string(s.gpu) + "; the probe shows " +
                    policy::format_bytes(g->second.free_bytes) + " free, held by " + holders_on(s.gpu),
                {{"needed_bytes", s.wait_bytes},
                 {"free_bytes", g->second.free_bytes},
                 {"evicting", s.had_evictions}});
      e.gpu = s.gpu;
      note(Log::info, std::move(e));
    }
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

void SchedulerCore::Impl::launch(const std::string& id, Svc& s, const backends::GpuSample& g, TimePoint now) {
  const double waited = s.vram_wait_since ? secs(now - *s.vram_wait_since) : 0.0;
  s.vram_wait_since.reset();
  s.wait_noted = false;
  SchedEvent started = event(s.wake_path ? "service.waking" : "service.starting", id,
                             std::string(s.wake_path ? "waking " : "starting ") + id + " on GPU " +
                                 std::to_string(s.gpu) + " (" + policy::format_bytes(g.free_bytes) + " free)",
                             {{"free_bytes", g.free_bytes}, {"vram_wait_s", waited}});
  started.gpu = s.gpu;
  s.deadline = now + s.preset->startup_timeout;
  s.bringup_started = now;  // start/wake durations count from here
  if (s.wake_path) {
    s.phase = Phase::waking_op;
    out.effects.push_back(effect(Effect::Kind::wake, id, s));
    note(Log::info, std::move(started));
    return;
  }
  s.phase = Phase::launching;
  if (metrics != nullptr) metrics->inc_service_start(id);
  Effect e = effect(Effect::Kind::start, id, s);
  e.gpu_free_bytes = g.free_bytes;
  e.gpu_total_bytes = g.total_bytes;
  out.effects.push_back(std::move(e));
  note(Log::info, std::move(started));
}

void SchedulerCore::Impl::prune_pid_owner() {
  std::set<int> live;
  for (const auto& pm : processes) live.insert(pm.pid);
  for (const auto& [id, s] : svcs) live.insert(s.pids.begin(), s.pids.end());
  std::erase_if(pid_owner, [&](const auto& entry) { return live.count(entry.first) == 0; });
}

std::string SchedulerCore::Impl::holders_on(int gpu) const {
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

void SchedulerCore::Impl::release_timeout(const std::string& id, Svc& s, TimePoint now) {
  const auto g = gpus.find(s.gpu);
  const Bytes free = g == gpus.end() ? 0 : g->second.free_bytes;
  const std::string holders = holders_on(s.gpu);
  const std::string msg = "VRAM on GPU " + std::to_string(s.gpu) + " was not released within " +
                          fmt_secs(policy().vram_release_timeout) + " for " + id + ": needed " +
                          policy::format_bytes(s.wait_bytes) + " free, the probe shows " +
                          policy::format_bytes(free) + " free; still held by " + holders;
  {
    SchedEvent e = event("service.vram_timeout", id, msg,
                         {{"needed_bytes", s.wait_bytes},
                          {"free_bytes", free},
                          {"timeout_s", secs(policy().vram_release_timeout)}});
    e.gpu = s.gpu;
    note(Log::warn, std::move(e));
  }
  if (metrics != nullptr) metrics->inc_vram_release_timeout(s.gpu);
  const int retry = static_cast<int>(std::max<std::int64_t>(
      1, std::chrono::duration_cast<std::chrono::seconds>(policy().vram_release_timeout).count() / 4));
  abort_bringup(id, s, msg, now, Refusal::unavailable, retry);
}

// ---------- leases, cancel ----------
void SchedulerCore::Impl::release_lease(LeaseId lease, TimePoint now) {
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

void SchedulerCore::Impl::on_gate_drained(std::size_t slot, TimePoint now) {
  out.changed = true;  // the lease count in the snapshot
  const auto it = svcs.find(gates->name(slot));
  if (it != svcs.end()) after_idle(it->first, it->second, now);
  if (mode_job) progress_mode(now);
  pump(now);
}

Result<void> SchedulerCore::Impl::cancel(const std::string& rid, TimePoint now) {
  auto it = requests.find(rid);
  if (it == requests.end()) return make_error("no queued or loading request with id '" + rid + "'");
  if (queue.cancel(rid)) update_queue_metrics(now);
  for (auto& [id, s] : svcs)
    s.waiters.erase(std::remove(s.waiters.begin(), s.waiters.end(), rid), s.waiters.end());
  fail_request(rid, RequestStatus::cancelled, Refusal::conflict, "request " + rid + " was cancelled", now);
  pump(now);
  return {};
}

}  // namespace gpumod::scheduler
