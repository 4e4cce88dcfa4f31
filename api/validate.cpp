#include "api/validate.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <random>

#include "http/syntax.hpp"

namespace gpumod::api {

namespace {

bool name_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
         c == ':' || c == '/' || c == '@' || c == '-';
}

bool request_id_char(char c) {
  return name_char(c) && c != '/' && c != '@';
}

// A JSON number as seconds, or an error naming the field and the allowed range.
Result<double> seconds_field(const nlohmann::json& value, const char* field, double min_exclusive,
                             double max_inclusive) {
  if (!value.is_number()) {
    return make_error(std::string("field '") + field + "' must be a number of seconds, got " +
                      std::string(value.type_name()));
  }
  const double seconds = value.get<double>();
  if (!std::isfinite(seconds) || seconds <= min_exclusive || seconds > max_inclusive) {
    return make_error(std::string("field '") + field + "' must be " +
                      (min_exclusive < 0 ? "between 0" : "greater than 0") + " and at most " +
                      std::to_string(static_cast<long long>(max_inclusive)) + " seconds");
  }
  return seconds;
}

}  // namespace

bool valid_name(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameLength) return false;
  for (char c : name) {
    if (!name_char(c)) return false;
  }
  return true;
}

std::string name_problem(std::string_view what, std::string_view name) {
  if (valid_name(name)) return "";
  std::string w(what);
  if (name.empty()) return w + " is empty";
  if (name.size() > kMaxNameLength) {
    return w + " is " + std::to_string(name.size()) + " characters long; at most " +
           std::to_string(kMaxNameLength) + " are allowed";
  }
  return w + " contains characters outside [A-Za-z0-9._:/@-]";
}

bool acceptable_request_id(std::string_view id) {
  if (id.empty() || id.size() > 64) return false;
  for (char c : id) {
    if (!request_id_char(c)) return false;
  }
  return true;
}

std::string generate_request_id() {
  // Random per process start plus a counter: unique within a daemon's life, unguessable enough
  // to not collide with another daemon's ids in shared logs.
  static const std::uint64_t base = [] {
    std::random_device rd;
    return (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  }();
  static std::atomic<std::uint64_t> counter{0};
  const std::uint64_t n = base + counter.fetch_add(1, std::memory_order_relaxed) * 0x9E3779B97F4A7C15ULL;
  static constexpr std::array<char, 16> hex = {'0', '1', '2', '3', '4', '5', '6', '7',
                                               '8', '9', 'a', 'b', 'c', 'd', 'e', 'f'};
  std::string id = "req-";
  for (int shift = 60; shift >= 0; shift -= 4) id.push_back(hex[(n >> shift) & 0xF]);
  return id;
}

namespace {

// The deepest nesting of arrays and objects in `body`, counted outside strings; stops counting
// past `limit`.
std::size_t json_depth(std::string_view body, std::size_t limit) {
  std::size_t depth = 0;
  std::size_t deepest = 0;
  bool in_string = false;
  for (std::size_t i = 0; i < body.size(); ++i) {
    const char c = body[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
      if (deepest > limit) return deepest;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return deepest;
}

}  // namespace

Result<nlohmann::json> parse_json_body(std::string_view body) {
  if (body.empty())
    return make_error("the request body is empty; send a JSON object such as {\"model\": \"NAME\"}");
  if (const auto bad = http::utf8_error_offset(body)) {
    return make_error("the request body is not valid UTF-8: byte 0x" +
                      hex_byte(static_cast<unsigned char>(body[*bad])) + " at offset " +
                      std::to_string(*bad));
  }
  if (json_depth(body, kMaxJsonDepth) > kMaxJsonDepth) {
    return make_error("the request body nests arrays or objects more than " + std::to_string(kMaxJsonDepth) +
                      " levels deep");
  }
  try {
    return nlohmann::json::parse(body);
  } catch (const nlohmann::json::exception& e) {
    return make_error(std::string("the request body is not valid JSON: ") + e.what());
  }
}

Result<RequestBody> parse_request_body(std::string_view body) {
  auto parsed = parse_json_body(body);
  if (!parsed) return make_error(parsed.error());
  const nlohmann::json& doc = *parsed;
  if (!doc.is_object()) {
    return make_error(
        std::string("the request body must be a JSON object such as {\"model\": \"NAME\"}, got ") +
        std::string(doc.type_name()));
  }
  RequestBody out;
  bool have_model = false;
  for (const auto& [key, value] : doc.items()) {
    if (key == "model") {
      if (!value.is_string()) {
        return make_error("field 'model' must be a string, got " + std::string(value.type_name()));
      }
      out.model = value.get<std::string>();
      if (auto problem = name_problem("field 'model'", out.model); !problem.empty())
        return make_error(problem);
      have_model = true;
    } else if (key == "priority") {
      if (!value.is_number_integer()) {
        return make_error("field 'priority' must be an integer from 0 to 100, got " +
                          std::string(value.type_name()));
      }
      const auto priority = value.get<std::int64_t>();
      if (priority < 0 || priority > 100) {
        return make_error("field 'priority' must be from 0 to 100, got " + std::to_string(priority));
      }
      out.priority = static_cast<int>(priority);
    } else if (key == "timeout_s") {
      auto seconds = seconds_field(value, "timeout_s", 0, 86400);
      if (!seconds) return make_error(seconds.error());
      out.timeout = std::chrono::milliseconds(static_cast<std::int64_t>(std::llround(*seconds * 1000)));
      if (out.timeout->count() == 0) out.timeout = std::chrono::milliseconds(1);
    } else if (key == "keep_alive_s") {
      auto seconds = seconds_field(value, "keep_alive_s", -1, 604800);
      if (!seconds) return make_error(seconds.error());
      out.keep_alive = std::chrono::seconds(static_cast<std::int64_t>(std::llround(*seconds)));
    } else if (key == "wait") {
      if (!value.is_boolean()) {
        return make_error("field 'wait' must be true or false, got " + std::string(value.type_name()));
      }
      out.wait = value.get<bool>();
    } else {
      return make_error("unknown field '" + key +
                        "'; expected model, priority, timeout_s, keep_alive_s, wait");
    }
  }
  if (!have_model) return make_error("field 'model' is required, e.g. {\"model\": \"qwen3-coder\"}");
  return out;
}

bool tokens_equal(std::string_view a, std::string_view b) {
  // Walk the longer length every time; a length mismatch still costs a full comparison.
  const std::size_t n = std::max(a.size(), b.size());
  unsigned diff = a.size() == b.size() ? 0U : 1U;
  for (std::size_t i = 0; i < n; ++i) {
    const auto x = static_cast<unsigned char>(i < a.size() ? a[i] : 0);
    const auto y = static_cast<unsigned char>(i < b.size() ? b[i] : 0);
    diff |= static_cast<unsigned>(x ^ y);
  }
  return diff == 0 && n > 0;
}

std::optional<std::string> bearer_token(std::string_view header_value) {
  constexpr std::string_view prefix = "Bearer ";
  if (header_value.size() <= prefix.size()) return std::nullopt;
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    const char c = header_value[i];
    const char p = prefix[i];
    if (std::tolower(static_cast<unsigned char>(c)) != std::tolower(static_cast<unsigned char>(p))) {
      return std::nullopt;
    }
  }
  std::string_view token = header_value.substr(prefix.size());
  while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
  while (!token.empty() && (token.back() == ' ' || token.back() == '\r')) token.remove_suffix(1);
  if (token.empty()) return std::nullopt;
  return std::string(token);
}

}  // namespace gpumod::api
