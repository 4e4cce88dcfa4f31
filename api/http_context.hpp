// Internal to api/: what the control handlers (server.cpp) and the /v1 proxy (proxy.cpp)
// share: the Control, the options, the shutdown flag, the upstream connection pool and small
// response helpers over the transport's types (api/http_message.hpp).
#pragma once

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "api/control.hpp"
#include "api/http_message.hpp"
#include "api/http_server.hpp"
#include "api/server.hpp"

namespace gpumod::api {

using http::HttpRequest;
using http::HttpResponse;

// Keep-alive httplib::Clients to the services' endpoints, so a proxied call does not pay for a
// new TCP connection (about 0.08 ms on loopback, bench/README.md "HTTP"). A Client is used by
// one call at a time: acquire() hands one out (a new one when none is idle), release() puts
// it back unless `reusable` is false (the call failed, or the service closes connections).
class UpstreamPool {
 public:
  static constexpr std::size_t kMaxIdlePerEndpoint = 16;

  struct Lease {
    std::unique_ptr<httplib::Client> client;
    bool reused = false;  // it has served a call before (its connection may have gone stale)
  };

  UpstreamPool(std::chrono::milliseconds connect_timeout, std::chrono::milliseconds read_timeout)
      : connect_timeout_(connect_timeout), read_timeout_(read_timeout) {}

  Lease acquire(const std::string& endpoint, bool fresh = false);
  void release(const std::string& endpoint, std::unique_ptr<httplib::Client> client);
  // Drops every idle connection (stop, tests).
  void clear();

 private:
  std::chrono::milliseconds connect_timeout_;
  std::chrono::milliseconds read_timeout_;
  std::mutex mutex_;
  std::map<std::string, std::vector<std::unique_ptr<httplib::Client>>> idle_;
};

struct Context {
  std::shared_ptr<Control> control;
  ServerOptions options;
  std::atomic<bool> stopping{false};
  std::unique_ptr<UpstreamPool> upstreams;

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

// The request id chosen for this exchange (set on the response by the before-routing hook).
inline std::string request_id_of(const HttpResponse& res) {
  return res.header(kRequestIdHeader);
}

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
