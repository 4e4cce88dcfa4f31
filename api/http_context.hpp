// Internal to api/: what the control handlers (server.cpp) and the /v1 proxy (proxy.cpp)
// share: the Control, the options, the shutdown flag and small response helpers.
#pragma once

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "api/control.hpp"
#include "api/server.hpp"

namespace gpumod::api {

struct Context {
  std::shared_ptr<Control> control;
  ServerOptions options;
  std::atomic<bool> stopping{false};
};

inline constexpr const char* kRequestIdHeader = "X-Request-Id";

// The request id chosen for this exchange (set on the response by the pre-routing handler).
inline std::string request_id_of(const httplib::Response& res) {
  return res.get_header_value(kRequestIdHeader);
}

void send_json(httplib::Response& res, int status, const nlohmann::json& body);
// The one error shape; adds Retry-After for 503 (retry_after_s, at least 1).
void send_error(httplib::Response& res, int status, const std::string& message, int retry_after_s = 0);
// POST bodies sent chunked are not covered by httplib's payload limit: check them here.
bool reject_oversized_body(const Context& ctx, const httplib::Request& req, httplib::Response& res);

enum class WaitResult { ready, deadline, stopping };
// Waits for a future until `budget` passes or the server stops (never forever).
template <typename Future>
WaitResult wait_with_deadline(const Context& ctx, const Future& future, std::chrono::milliseconds budget) {
  const auto deadline = std::chrono::steady_clock::now() + budget;
  constexpr auto slice = std::chrono::milliseconds(100);
  for (;;) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return WaitResult::deadline;
    const auto step = std::min<std::chrono::steady_clock::duration>(slice, deadline - now);
    if (future.wait_for(step) == std::future_status::ready) return WaitResult::ready;
    if (ctx.stopping.load()) return WaitResult::stopping;
  }
}

// How long a request may take: its own timeout or the policy default, plus the grace.
std::chrono::milliseconds request_budget(const Context& ctx,
                                         std::optional<std::chrono::milliseconds> timeout);

void register_proxy_routes(httplib::Server& server, Context& ctx);

}  // namespace gpumod::api
