// SchedulerCore, part of its implementation (core_impl.hpp lists the parts): service actions
// (start, stop, sleep, wake, restart), mode switches and reload.
#include "scheduler/core_impl.hpp"

#include <spdlog/spdlog.h>
#include <algorithm>

namespace gpumod::scheduler {

// ---------- service actions ----------
void SchedulerCore::Impl::service_action(std::uint64_t token, const std::string& id, ServiceAction action,
                                         TimePoint now) {
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
void SchedulerCore::Impl::switch_mode(std::uint64_t token, const std::string& mode_id, TimePoint now) {
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
  {
    SchedEvent e = event(
        "mode.begin", "",
        "switching to mode " + mode_id + (current_mode.empty() ? std::string() : " from " + current_mode),
        {{"from", current_mode}, {"services", job.members}});
    e.mode = mode_id;
    note(Log::info, std::move(e));
  }
  mode_job = std::move(job);
  progress_mode(now);
}

void SchedulerCore::Impl::progress_mode(TimePoint now) {
  if (in_progress_mode || !mode_job) return;
  in_progress_mode = true;
  progress_mode_pass(now);
  in_progress_mode = false;
}

void SchedulerCore::Impl::progress_mode_pass(TimePoint now) {
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
      job.result.errors.push_back(member + ": " + (s.last_error.empty() ? "did not come up" : s.last_error));
      job.attempted.erase(member);
      job.members.erase(member);
      return progress_mode_pass(now);
    }
    const bool wake = s.state == SvcState::sleeping;
    bool waiting = false;
    if (auto err = admit_service(member, s, std::max(s.preset->priority, 100), now, &job.members, &waiting)) {
      // Memory of what was just stopped may not show free yet: retry on the next samples
      // until the release timeout, then fail naming what still holds it.
      if (waiting && now < job.bringup_deadline) {
        settled = false;
        continue;
      }
      std::string msg = *err;
      if (waiting) {
        msg = member + ": VRAM not released within " + fmt_secs(policy().vram_release_timeout) + " (" + *err +
              ")";
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

void SchedulerCore::Impl::finish_mode(TimePoint now) {
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
  {
    char took[32];
    std::snprintf(took, sizeof took, "%.2f s", job.result.seconds);
    const ModeResult& r = job.result;
    std::string message = "mode " + job.mode + " switch " + (r.ok ? "done" : "failed") + " in " + took;
    for (const auto& err : r.errors) message += "; " + err;
    SchedEvent e = event("mode.end", "", std::move(message),
                         {{"ok", r.ok},
                          {"seconds", r.seconds},
                          {"started", r.started},
                          {"stopped", r.stopped},
                          {"slept", r.slept},
                          {"woken", r.woken},
                          {"errors", r.errors}});
    e.mode = job.mode;
    note(r.ok ? Log::info : Log::warn, std::move(e));
  }
  out.modes.push_back({job.token, std::move(job.result)});
  out.changed = true;
}

// ---------- reload ----------
void SchedulerCore::Impl::reload(std::uint64_t token, const config::LoadResult& loaded, TimePoint now) {
  ReloadResult r;
  if (!loaded.ok()) {
    r.ok = false;
    r.message = "config reload failed; the running config is kept:\n" + loaded.error_text();
    if (metrics != nullptr) metrics->inc_config_reload(false);
    note(Log::warn, event("reload", "", r.message, {{"ok", false}}));
    reload_error = r.message;
    out.changed = true;
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
              std::to_string(r.removed.size()) + " removed, " + std::to_string(r.changed.size()) + " changed";
  if (metrics != nullptr) metrics->inc_config_reload(true);
  reload_error.clear();
  note(Log::info, event("reload", "", r.message,
                        {{"ok", true}, {"added", r.added}, {"removed", r.removed}, {"changed", r.changed}}));
  out.reloads.push_back({token, std::move(r)});
  out.changed = true;
  pump(now);
}

void SchedulerCore::Impl::fail_queued_for(const std::string& id, Refusal why, const std::string& msg,
                                          TimePoint now) {
  for (const auto& q : queue.take_service(id, now))
    fail_request(q.id, RequestStatus::rejected, why, msg, now);
  update_queue_metrics(now);
}

}  // namespace gpumod::scheduler
