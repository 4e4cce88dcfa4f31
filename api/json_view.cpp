#include "api/json_view.hpp"

#include <algorithm>

namespace gpumod::api {

using nlohmann::json;

const char* name_of(scheduler::RequestStatus s) {
  switch (s) {
    case scheduler::RequestStatus::queued:
      return "queued";
    case scheduler::RequestStatus::admitted:
      return "admitted";
    case scheduler::RequestStatus::ready:
      return "ready";
    case scheduler::RequestStatus::rejected:
      return "rejected";
    case scheduler::RequestStatus::timed_out:
      return "timed_out";
    case scheduler::RequestStatus::cancelled:
      return "cancelled";
  }
  return "unknown";
}

const char* name_of(scheduler::ServiceAction a) {
  switch (a) {
    case scheduler::ServiceAction::start:
      return "start";
    case scheduler::ServiceAction::stop:
      return "stop";
    case scheduler::ServiceAction::sleep:
      return "sleep";
    case scheduler::ServiceAction::wake:
      return "wake";
  }
  return "unknown";
}

const char* name_of(policy::SvcState s) {
  switch (s) {
    case policy::SvcState::stopped:
      return "stopped";
    case policy::SvcState::starting:
      return "starting";
    case policy::SvcState::ready:
      return "ready";
    case policy::SvcState::sleeping:
      return "sleeping";
    case policy::SvcState::waking:
      return "waking";
    case policy::SvcState::stopping:
      return "stopping";
    case policy::SvcState::failed:
      return "failed";
  }
  return "unknown";
}

const char* name_of(policy::ActionKind k) {
  switch (k) {
    case policy::ActionKind::sleep:
      return "sleep";
    case policy::ActionKind::stop:
      return "stop";
    case policy::ActionKind::wait_free:
      return "wait_free";
    case policy::ActionKind::start:
      return "start";
    case policy::ActionKind::wake:
      return "wake";
  }
  return "unknown";
}

const char* name_of(policy::Outcome o) {
  switch (o) {
    case policy::Outcome::already_ready:
      return "already_ready";
    case policy::Outcome::in_progress:
      return "in_progress";
    case policy::Outcome::plan:
      return "plan";
    case policy::Outcome::wait:
      return "wait";
    case policy::Outcome::never_fits:
      return "never_fits";
  }
  return "unknown";
}

const char* error_type(int http_status) {
  switch (http_status) {
    case 400:
      return "invalid_request";
    case 401:
      return "unauthorized";
    case 403:
      return "forbidden";
    case 404:
      return "not_found";
    case 405:
      return "method_not_allowed";
    case 409:
      return "conflict";
    case 413:
      return "payload_too_large";
    case 422:
      return "unprocessable";
    case 502:
      return "upstream_unavailable";
    case 503:
      return "unavailable";
    case 504:
      return "timeout";
    default:
      return http_status >= 500 ? "internal_error" : "error";
  }
}

json error_body(int http_status, const std::string& message, const std::string& request_id) {
  return json{
      {"error", {{"message", message}, {"type", error_type(http_status)}, {"request_id", request_id}}}};
}

namespace {
json optional_number(const std::optional<double>& v) {
  return v ? json(*v) : json(nullptr);
}
}  // namespace

json to_json(const scheduler::GpuSnapshot& gpu) {
  return json{{"index", gpu.index},
              {"uuid", gpu.uuid},
              {"name", gpu.name},
              {"total_bytes", gpu.total_bytes},
              {"used_bytes", gpu.used_bytes},
              {"free_bytes", gpu.free_bytes},
              {"ledger_bytes", gpu.ledger_bytes},
              {"effective_free_bytes", gpu.effective_free_bytes},
              {"utilization_ratio", optional_number(gpu.utilization_ratio)},
              {"temperature_celsius", optional_number(gpu.temperature_celsius)},
              {"power_watts", optional_number(gpu.power_watts)}};
}

json to_json(const scheduler::ServiceSnapshot& s) {
  return json{{"id", s.id},
              {"driver", s.driver},
              {"runner", s.runner},
              {"state", name_of(s.state)},
              {"gpu", s.gpu},
              {"port", s.port},
              {"vram_bytes", s.vram_bytes},
              {"measured_bytes", s.measured_bytes ? json(*s.measured_bytes) : json(nullptr)},
              {"priority", s.priority},
              {"pinned", s.pinned},
              {"leases", s.leases},
              {"pid", s.pid},
              {"models", s.models},
              {"last_error", s.last_error},
              {"state_seconds", s.state_seconds},
              {"cold_start_estimate_s", s.cold_start_estimate_s},
              {"wake_estimate_s", s.wake_estimate_s}};
}

json to_json(const scheduler::RequestOutcome& o) {
  json j{{"request_id", o.request_id},
         {"status", name_of(o.status)},
         {"http_status", o.http_status},
         {"message", o.message},
         {"service", o.service},
         {"endpoint", o.endpoint},
         {"gpu", o.gpu},
         {"waited_s", o.waited_seconds}};
  if (o.retry_after_seconds > 0) j["retry_after_s"] = o.retry_after_seconds;
  return j;
}

json to_json(const scheduler::RequestInfo& info) {
  json j{{"request_id", info.request_id},  {"model", info.model},       {"service", info.service},
         {"status", name_of(info.status)}, {"priority", info.priority}, {"age_s", info.age_seconds}};
  if (info.outcome) j["outcome"] = to_json(*info.outcome);
  return j;
}

json to_json(const scheduler::Snapshot& snap) {
  json gpus = json::array();
  for (const auto& g : snap.gpus) gpus.push_back(to_json(g));
  json services = json::array();
  for (const auto& s : snap.services) services.push_back(to_json(s));
  json queue = json::array();
  for (const auto& r : snap.queue) queue.push_back(to_json(r));
  return json{{"mode", snap.current_mode},
              {"probe", {{"up", snap.probe_up}, {"kind", snap.probe_kind}}},
              {"config_source", snap.config_source},
              {"version", snap.version},
              {"gpus", gpus},
              {"services", services},
              {"queue", queue}};
}

json to_json(const scheduler::ModeResult& r) {
  return json{{"mode", r.mode},   {"ok", r.ok},       {"started", r.started}, {"stopped", r.stopped},
              {"slept", r.slept}, {"woken", r.woken}, {"errors", r.errors},   {"seconds", r.seconds}};
}

json to_json(const scheduler::ReloadResult& r) {
  return json{{"ok", r.ok},
              {"message", r.message},
              {"added", r.added},
              {"removed", r.removed},
              {"changed", r.changed}};
}

json to_json(const scheduler::DryRun& d, const std::string& model) {
  json actions = json::array();
  for (const auto& a : d.plan.actions) {
    actions.push_back(json{{"kind", name_of(a.kind)}, {"gpu", a.gpu}, {"bytes", a.bytes}});
  }
  return json{{"model", model},    {"service", d.service},    {"outcome", name_of(d.plan.outcome)},
              {"gpu", d.plan.gpu}, {"reason", d.plan.reason}, {"steps", d.steps},
              {"actions", actions}};
}

const config::Preset* find_preset_by_id(const config::Config& cfg, const std::string& id) {
  for (const auto& p : cfg.presets) {
    if (p.id == id) return &p;
  }
  return nullptr;
}

const config::Mode* find_mode_by_id(const config::Config& cfg, const std::string& id) {
  for (const auto& m : cfg.modes) {
    if (m.id == id) return &m;
  }
  return nullptr;
}

const config::Preset* find_preset_for_model(const config::Config& cfg, const std::string& model) {
  if (const auto* p = find_preset_by_id(cfg, model)) return p;
  for (const auto& p : cfg.presets) {
    if (!p.model_id.empty() && p.model_id == model) return &p;
  }
  for (const auto& p : cfg.presets) {
    if (std::find(p.aliases.begin(), p.aliases.end(), model) != p.aliases.end()) return &p;
  }
  for (const auto& p : cfg.presets) {
    if (std::find(p.models.begin(), p.models.end(), model) != p.models.end()) return &p;
  }
  return nullptr;
}

}  // namespace gpumod::api
