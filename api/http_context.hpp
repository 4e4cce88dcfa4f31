// Internal to api/: what the control handlers (server.cpp) and the /v1 proxy (proxy.cpp)
// share: the Control, the options, the shutdown flag and small response helpers.
#pragma once

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>

#include "api/control.hpp"
#include "api/server.hpp"

namespace gpumod::api {

struct Context {
  std::shared_ptr<Control> control;
  ServerOptions options;
  std::atomic<bool> stopping{false};

  // Upstream calls in flight, so stop() can abort them instead of waiting out a long
  // generation.
  std::mutex clients_mutex;
  std::set<httplib::Client*> active_clients;
  void stop_upstream_calls() {
    std::lock_guard lock(clients_mutex);
    for (auto* c : active_clients) c->stop();
  }
};

// Registers an upstream client with the Context for its lifetime.
class ActiveClient {
 public:
  ActiveClient(Context& ctx, httplib::Client* client) : ctx_(ctx), client_(client) {
    std::lock_guard lock(ctx_.clients_mutex);
    ctx_.active_clients.insert(client_);
  }
  ~ActiveClient() {
    std::lock_guard lock(ctx_.clients_mutex);
    ctx_.active_clients.erase(client_);
  }
  ActiveClient(const ActiveClient&) = delete;
  ActiveClient& operator=(const ActiveClient&) = delete;

 private:
  Context& ctx_;
  httplib::Client* client_;
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
