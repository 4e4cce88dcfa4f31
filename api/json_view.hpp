// How the scheduler's structs look on the wire (JSON), and the one error body shape:
// {"error": {"message": "...", "type": "...", "request_id": "..."}}.
// Kept apart from the handlers so the CLI's expectations and the docs have one source.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "config/config.hpp"
#include "scheduler/scheduler.hpp"

namespace gpumod::api {

// Enum names as they appear in JSON (local, so the API does not depend on other modules'
// to_string definitions at link time).
const char* name_of(scheduler::RequestStatus s);
const char* name_of(scheduler::ServiceAction a);
const char* name_of(policy::SvcState s);
const char* name_of(policy::ActionKind k);
const char* name_of(policy::Outcome o);

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

// Resolve a model name against the config the way the scheduler does: service id, model_id,
// alias, then a router's models. Null when nothing answers to it.
const config::Preset* find_preset_for_model(const config::Config& cfg, const std::string& model);
const config::Preset* find_preset_by_id(const config::Config& cfg, const std::string& id);
const config::Mode* find_mode_by_id(const config::Config& cfg, const std::string& id);

}  // namespace gpumod::api
