// DaemonClient: how the CLI and the MCP server (app/mcp.hpp) talk to a running daemon's HTTP
// API (cpp-httplib client, JSON answers). Each call opens its own connection, so one object may
// serve calls made one after another from any thread.
#pragma once

#include <chrono>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "base/result.hpp"

namespace gpumod::app {

struct Reply {
  int status = 0;
  nlohmann::json body;  // parsed when the answer is JSON
  std::string text;     // the raw body
};

class DaemonClient {
 public:
  DaemonClient(std::string url, std::optional<std::string> token)
      : url_(std::move(url)), token_(std::move(token)) {}

  // An error only when the daemon could not be reached (the message says where and what to
  // check); any HTTP answer is a Reply, refusals included.
  [[nodiscard]] Result<Reply> call(const std::string& method, const std::string& path,
                                   const std::string& body = "",
                                   std::chrono::seconds read_timeout = std::chrono::seconds(30)) const;
  // GET `path` as a stream: each piece of a 200 body goes to `on_data` as it arrives (return
  // false to stop). Any other status keeps its body in the Reply instead, for error_message.
  [[nodiscard]] Result<Reply> stream(const std::string& path,
                                     const std::function<bool(std::string_view data)>& on_data) const;

  // GET `path` as a Server-Sent Events stream (GET /events): each event's name and data go to
  // `on_event` (return false to stop); comments (keep-alives) are skipped.
  [[nodiscard]] Result<Reply> events(
      const std::string& path,
      const std::function<bool(const std::string& kind, const std::string& data)>& on_event) const;
  // Follows a request submitted with "wait": false (GET /requests/{id} every 200 ms) until it is
  // decided (the Reply's body has its "outcome"), the daemon refuses the GET, or `give_up`
  // passes (the last Reply, without an outcome). `on_state` sees each answer's status and the
  // seconds since the first look.
  [[nodiscard]] Result<Reply> follow_request(
      const std::string& request_id, std::chrono::steady_clock::time_point give_up,
      const std::function<void(const std::string& state, double elapsed_s)>& on_state) const;

  [[nodiscard]] const std::string& url() const { return url_; }
  // %XX-escapes everything but unreserved characters, for a path segment.
  static std::string percent_encode(const std::string& s);
  // The daemon's message for a refused call: its error object's message, else the raw body.
  static std::string error_message(const Reply& reply);

 private:
  std::string url_;
  std::optional<std::string> token_;
};

}  // namespace gpumod::app
