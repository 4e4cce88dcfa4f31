// How the scheduler's structs look on the wire (JSON), and the one error body shape:
// {"error": {"message": "...", "type": "...", "request_id": "..."}}.
// Kept apart from the handlers so the CLI's expectations and the docs have one source.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "config/config.hpp"
#include "scheduler/scheduler.hpp"

namespace gpumod::api {

// Enum names on the wire are their owners' to_string (policy/planner.hpp, scheduler.hpp).

// The one mapping of the scheduler's refusals to HTTP (docs/api.md): unknown 404, conflict 409,
// never_fits 422, queue_full and unavailable 503, deadline 504, failed 500; `if_none` for
// Refusal::none (200 for an answer that is not a refusal).
int http_status(scheduler::Refusal refusal, int if_none);

// "invalid_request", "unauthorized", "not_found", ... for an HTTP status.
const char* error_type(int http_status);
nlohmann::json error_body(int http_status, const std::string& message, const std::string& request_id);

nlohmann::json to_json(const scheduler::GpuSnapshot& gpu);
nlohmann::json to_json(const scheduler::ServiceSnapshot& service);
nlohmann::json to_json(const scheduler::RequestOutcome& outcome);
nlohmann::json to_json(const scheduler::RequestInfo& info);
nlohmann::json to_json(const scheduler::Snapshot& snapshot);
nlohmann::json to_json(const scheduler::ModeResult& result);
nlohmann::json to_json(const scheduler::ReloadResult& result);
nlohmann::json to_json(const scheduler::DryRun& dry_run, const std::string& model);

}  // namespace gpumod::api
