// Internal to api/: what the control handlers (server.cpp) and the /v1 proxy (proxy.cpp)
// share: the Control, the options, the shutdown flag, the upstream connection pool and small
// response helpers over the transport's types (http/message.hpp).
#pragma once

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "api/control.hpp"
#include "api/server.hpp"
#include "http/message.hpp"
#include "http/server.hpp"
#include "http/upstream.hpp"

namespace gpumod::api {

using http::HttpRequest;
using http::HttpResponse;
using http::parse_endpoint;
using http::UpstreamCall;
using http::UpstreamFailure;
using http::UpstreamPool;

struct Context {
  std::shared_ptr<Control> control;
  ServerOptions options;
  std::atomic<bool> stopping{false};
  // The proxy's keep-alive connections to the services (loop thread only; http/upstream.hpp).
  std::unique_ptr<UpstreamPool> upstreams;
};

inline constexpr const char* kRequestIdHeader = "X-Request-Id";

// The request id chosen for this exchange (set on the response by the before-routing hook).
inline std::string request_id_of(const HttpResponse& res) {
  return res.header(kRequestIdHeader);
}

// JSON text for the wire. Never throws: a string that is not UTF-8 (a backend's message, say;
// parsed request input is checked before it gets this far) is sent with U+FFFD in its place.
std::string to_wire(const nlohmann::json& body);
void send_json(HttpResponse& res, int status, const nlohmann::json& body);
// The one error shape; adds Retry-After for 503 (retry_after_s, at least 1).
void send_error(HttpResponse& res, int status, const std::string& message, int retry_after_s = 0);

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

void register_proxy_routes(http::HttpServer& server, Context& ctx);

}  // namespace gpumod::api
