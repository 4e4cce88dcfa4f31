// SchedEvent: one thing the scheduler decided or saw, with the reason, as GET /events shows it
// (docs/api.md "Events" lists every kind and its fields). The core makes them on its thread as
// part of its output (core.hpp's CoreOutput::events); the shell hands them to the EventLog
// (event_log.hpp), which numbers, stamps and keeps them for the subscribers. A plain value.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace gpumod::scheduler {

struct SchedEvent {
  std::string kind;  // "service.ready", "request.queued", "mode.end", ...
  std::string service;
  std::string request_id;
  std::string mode;
  int gpu = -1;
  std::string message;  // for a person: what happened and why
  // The numbers and lists behind the message (bytes needed and free, seconds, position,
  // victims, ...): a JSON object, so each kind carries what it has with its own types.
  nlohmann::json detail = nlohmann::json::object();
};

}  // namespace gpumod::scheduler
