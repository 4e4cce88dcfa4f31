#include "api/json_view.hpp"

#include <algorithm>

namespace gpumod::api {

using nlohmann::json;

int http_status(scheduler::Refusal refusal, int if_none) {
  using scheduler::Refusal;
  switch (refusal) {
    case Refusal::none:
      return if_none;
    case Refusal::unknown:
      return 404;
    case Refusal::conflict:
      return 409;
    case Refusal::never_fits:
      return 422;
    case Refusal::queue_full:
    case Refusal::unavailable:
      return 503;
    case Refusal::deadline:
      return 504;
    case Refusal::failed:
      return 500;
  }
  return 500;
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
              {"state", policy::to_string(s.state)},
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
         {"status", scheduler::to_string(o.status)},
         {"http_status", http_status(o.refusal, 200)},
         {"refusal", scheduler::to_string(o.refusal)},
         {"message", o.message},
         {"service", o.service},
         {"endpoint", o.endpoint},
         {"gpu", o.gpu},
         {"waited_s", o.waited_seconds}};
  if (o.retry_after_seconds > 0) j["retry_after_s"] = o.retry_after_seconds;
  return j;
}

json to_json(const scheduler::RequestInfo& info) {
  json j{{"request_id", info.request_id}, {"model", info.model},
         {"service", info.service},       {"status", scheduler::to_string(info.status)},
         {"priority", info.priority},     {"age_s", info.age_seconds}};
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
              {"reload_error", snap.reload_error.empty() ? json(nullptr) : json(snap.reload_error)},
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
    actions.push_back(json{{"kind", policy::to_string(a.kind)}, {"gpu", a.gpu}, {"bytes", a.bytes}});
  }
  return json{{"model", model},    {"service", d.service},    {"outcome", policy::to_string(d.plan.outcome)},
              {"gpu", d.plan.gpu}, {"reason", d.plan.reason}, {"steps", d.steps},
              {"actions", actions}};
}

}  // namespace gpumod::api
