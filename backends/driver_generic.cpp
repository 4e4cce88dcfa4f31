// Generic driver for any OpenAI-style server (FastAPI speech/embedding servers, docker):
// GET health_endpoint (200 ready, 503 loading, refused down), and optional sleep_url /
// wake_url that are POSTed to. Each URL may be a path on the service port or a full
// http://host:port/path.
#include <atomic>

#include "backends/driver.hpp"
#include "backends/http_client.hpp"

namespace gpumod::backends {

namespace {

using std::chrono::milliseconds;

class GenericDriver final : public Driver {
 public:
  GenericDriver(config::Preset preset, milliseconds timeout)
      : preset_(std::move(preset)), timeout_(timeout) {}

  const char* kind() const override { return "generic"; }

  Result<void> preflight(std::int64_t, std::int64_t) override { return {}; }

  HealthResult health() override {
    const std::string endpoint = preset_.health_endpoint.empty() ? "/health" : preset_.health_endpoint;
    const auto target = http::parse_target(endpoint, preset_.port);
    if (!target) return {Health::error, preset_.id + ": bad health_endpoint '" + endpoint + "'"};
    const http::Client client(target->host, target->port, timeout_);
    const auto reply = client.get(target->path);
    if (reply.failure == http::Failure::refused) return {Health::down, "connection refused"};
    if (!reply.answered())
      return {Health::error, preset_.id + ": " + http::describe("GET", client.url(target->path), reply)};
    if (reply.status >= 200 && reply.status < 300) return {Health::ready, "ok"};
    if (reply.status == 503) return {Health::loading, "HTTP 503: " + http::excerpt(reply.body)};
    return {Health::error, preset_.id + ": " + http::describe("GET", client.url(target->path), reply)};
  }

  Result<void> activate(milliseconds) override { return {}; }

  Result<void> sleep() override {
    if (auto r = post_optional(preset_.sleep_url, "sleep_url"); !r) return make_error(r.error());
    sleeping_ = true;
    return {};
  }

  Result<void> wake() override {
    if (auto r = post_optional(preset_.wake_url, "wake_url"); !r) return make_error(r.error());
    sleeping_ = false;
    return {};
  }

  // A generic server has no way to ask; report what this driver last did.
  Result<bool> is_sleeping() override { return sleeping_.load(); }

  Result<std::vector<RouterModel>> list_models() override { return make_error(not_router()); }
  Result<void> load_model(const std::string&) override { return make_error(not_router()); }
  Result<void> unload_model(const std::string&) override { return make_error(not_router()); }

 private:
  std::string not_router() const { return preset_.id + ": a generic server is not a llama.cpp router"; }

  Result<void> post_optional(const std::optional<std::string>& url, const char* key) {
    if (!url || url->empty()) {
      return make_error(preset_.id + ": cannot " +
                        std::string(key == std::string("sleep_url") ? "sleep" : "wake") +
                        ": the preset sets no " + key);
    }
    const auto target = http::parse_target(*url, preset_.port);
    if (!target) return make_error(preset_.id + ": bad " + key + " '" + *url + "'");
    const http::Client client(target->host, target->port,
                              std::max(timeout_, milliseconds(preset_.startup_timeout)));
    const auto reply = client.post(target->path, "");
    if (reply.ok()) return {};
    return make_error(preset_.id + ": " + http::describe("POST", client.url(target->path), reply));
  }

  config::Preset preset_;
  milliseconds timeout_;
  std::atomic<bool> sleeping_{false};
};

}  // namespace

std::unique_ptr<Driver> make_generic_driver(const config::Preset& preset, milliseconds http_timeout) {
  return std::make_unique<GenericDriver>(preset, http_timeout);
}

}  // namespace gpumod::backends
