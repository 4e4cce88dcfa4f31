// SchedulerCore, part of its implementation (core_impl.hpp lists the parts): adoption of running
// services and the state file at start, persistence, and the read side (snapshots, dry runs, the
// next wakeup).
#include "scheduler/core_impl.hpp"

#include <spdlog/spdlog.h>
#include <algorithm>
#include <nlohmann/json.hpp>

namespace gpumod::scheduler {

// ---------- adoption and persistence ----------
void SchedulerCore::Impl::adopt(const std::vector<backends::RunInfo>& running, const std::string& json_text,
                                TimePoint now) {
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

std::string SchedulerCore::Impl::state_json() const {
  nlohmann::json services = nlohmann::json::object();
  for (const auto& [id, s] : svcs) {
    if (s.gpu < 0 || (s.state != SvcState::ready && s.state != SvcState::sleeping)) continue;
    services[id] = {{"gpu", s.gpu}, {"state", policy::to_string(s.state)}};
  }
  return nlohmann::json{{"version", 1}, {"services", services}}.dump(2) + "\n";
}

void SchedulerCore::Impl::flush_persist() {
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
Snapshot SchedulerCore::Impl::snapshot(TimePoint now) const {
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
  snap.reload_error = reload_error;
  return snap;
}

RequestInfo SchedulerCore::Impl::info_of(const std::string& rid, RequestStatus st, TimePoint now) const {
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

Result<DryRun> SchedulerCore::Impl::dry_run(const std::string& model, TimePoint now) const {
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

TimePoint SchedulerCore::Impl::next_wakeup(TimePoint now) const {
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

}  // namespace gpumod::scheduler
