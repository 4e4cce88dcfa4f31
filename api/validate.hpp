// Input checks for the HTTP layer: model names and ids, the POST /request body, request ids,
// bearer tokens and the loopback rule. Pure functions, so they are tested without a server.
#pragma once

#include <chrono>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "base/result.hpp"

namespace gpumod::api {

inline constexpr std::size_t kMaxNameLength = 128;

// Model names, service ids, mode ids and request ids: 1..128 of [A-Za-z0-9._:/@-].
// Nothing else may reach the scheduler (and nothing ever reaches a shell).
bool valid_name(std::string_view name);
// Why `name` is not valid, in words a person can act on ("" when it is valid).
std::string name_problem(std::string_view what, std::string_view name);

// A client's X-Request-Id is reused when it is 1..64 of [A-Za-z0-9._:-]; otherwise a new
// one is generated.
bool acceptable_request_id(std::string_view id);
std::string generate_request_id();

// Any JSON request body (POST /request, the /v1 calls): well-formed UTF-8 (400 names the first
// bad byte's offset otherwise), nested at most kMaxJsonDepth deep (so nothing that walks it
// recursively can run out of stack), then parsed. Errors are messages for a person; no
// exception leaves.
inline constexpr std::size_t kMaxJsonDepth = 128;
Result<nlohmann::json> parse_json_body(std::string_view body);

// The body of POST /request.
struct RequestBody {
  std::string model;
  std::optional<int> priority;
  std::optional<std::chrono::milliseconds> timeout;
  std::optional<std::chrono::seconds> keep_alive;
  bool wait = true;
};
// Strict: a JSON object with `model` (string) and optional `priority` (integer 0..100),
// `timeout_s` (number, 0 < t <= 86400), `keep_alive_s` (number, 0..604800), `wait` (bool).
// Unknown fields are errors (a typo such as "timout_s" must not be silently ignored).
Result<RequestBody> parse_request_body(std::string_view body);

// Compares in time that depends only on the lengths, not on where the strings differ.
bool tokens_equal(std::string_view a, std::string_view b);
// The token of an "Authorization: Bearer <token>" header value, if it has that form.
std::optional<std::string> bearer_token(std::string_view header_value);

}  // namespace gpumod::api
