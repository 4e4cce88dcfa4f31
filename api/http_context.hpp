// Internal to api/: what the control handlers (server.cpp) and the /v1 proxy (proxy.cpp)
// share: the Control, the options, the upstream connection pool, the way back to the loop and small
// response helpers over the transport's types (http/message.hpp).
#pragma once

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "api/control.hpp"
#include "api/later.hpp"
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
  // The proxy's keep-alive connections to the services (loop thread only; http/upstream.hpp).
  std::unique_ptr<UpstreamPool> upstreams;
  // Scheduler answers come back to the loop through this (api/later.hpp).
  std::shared_ptr<LoopPoster> poster;
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

// The answer when the scheduler did not finish `what` within the handler's budget: 504.
void answer_late(HttpResponse& res, const std::string& what);

// How long a request may take: its own timeout or the policy default, plus the grace.
std::chrono::milliseconds request_budget(const Context& ctx,
                                         std::optional<std::chrono::milliseconds> timeout);

void register_proxy_routes(http::HttpServer& server, Context& ctx);
// The web page served at /ui (api/ui_page.html, compiled in).
const char* ui_page();

// GET /events and GET /services/{id}/logs (api/streams.cpp).
void register_stream_routes(http::HttpServer& server, Context& ctx);

}  // namespace gpumod::api
