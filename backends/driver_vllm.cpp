// vLLM OpenAI server driver. Health: connection refused while starting (vLLM binds its port
// only once the engine is up), 200 when ready. Sleep mode (server started with
// --enable-sleep-mode and VLLM_SERVER_DEV_MODE=1): POST /sleep?level=1|2, POST /wake_up,
// GET /is_sleeping. A level-2 sleep discards the weights, so waking follows vLLM's documented
// sequence: wake the weights only, reload them in place, then wake the KV cache.
#include <nlohmann/json.hpp>

#include <cstdio>
#include <exception>

#include "backends/driver.hpp"
#include "backends/http_client.hpp"

namespace gpumod::backends {

namespace {

using json = nlohmann::json;
using std::chrono::milliseconds;

std::string gib(std::int64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", static_cast<double>(bytes) / (1024.0 * 1024.0 * 1024.0));
  return buf;
}

class VllmDriver final : public Driver {
 public:
  VllmDriver(config::Preset preset, milliseconds timeout)
      : preset_(std::move(preset)),
        health_path_(preset_.health_endpoint.empty() ? "/health" : preset_.health_endpoint),
        client_("127.0.0.1", preset_.port, timeout),
        // Waking re-allocates and copies gigabytes: allow it the startup budget, not the short call timeout.
        slow_client_("127.0.0.1", preset_.port, std::max(timeout, milliseconds(preset_.startup_timeout))) {}

  const char* kind() const override { return "vllm"; }

  Result<void> preflight(std::int64_t gpu_free_bytes, std::int64_t gpu_total_bytes) override {
    return check_vllm_free_memory(preset_, gpu_free_bytes, gpu_total_bytes);
  }

  HealthResult health() override {
    const auto reply = client_.get(health_path_);
    if (reply.failure == http::Failure::refused)
      return {Health::down, "connection refused (vLLM still starting?)"};
    if (!reply.answered()) {
      return {Health::error, preset_.id + ": " + http::describe("GET", client_.url(health_path_), reply)};
    }
    if (reply.status == 200) return {Health::ready, "ok"};
    if (reply.status == 503) return {Health::loading, "HTTP 503: " + http::excerpt(reply.body)};
    return {Health::error, preset_.id + ": " + http::describe("GET", client_.url(health_path_), reply)};
  }

  Result<void> activate(milliseconds) override { return {}; }

  Result<void> sleep() override {
    const int level = sleep_level();
    if (level == 0) {
      return make_error(preset_.id + ": vLLM sleep needs sleep_mode l1 or l2 (this preset has " +
                        std::string(preset_.sleep_mode == config::SleepMode::router ? "router" : "none") +
                        ")");
    }
    return post("/sleep?level=" + std::to_string(level), "", slow_client_);
  }

  Result<void> wake() override {
    if (sleep_level() == 2) {
      if (auto r = post("/wake_up?tags=weights", "", slow_client_); !r) return r;
      if (auto r = post("/collective_rpc", json{{"method", "reload_weights"}}.dump(), slow_client_); !r)
        return r;
      if (auto r = post("/wake_up?tags=kv_cache", "", slow_client_); !r) return r;
      return post("/reset_prefix_cache", "", client_);
    }
    return post("/wake_up", "", slow_client_);
  }

  Result<bool> is_sleeping() override {
    const auto reply = client_.get("/is_sleeping");
    if (!reply.ok())
      return make_error(preset_.id + ": " + http::describe("GET", client_.url("/is_sleeping"), reply));
    try {
      return json::parse(reply.body).at("is_sleeping").get<bool>();
    } catch (const json::exception& e) {
      return make_error(preset_.id + ": GET " + client_.url("/is_sleeping") + ": unexpected answer (" +
                        e.what() + "): " + http::excerpt(reply.body));
    }
  }

  Result<std::vector<RouterModel>> list_models() override { return make_error(not_router()); }
  Result<void> load_model(const std::string&) override { return make_error(not_router()); }
  Result<void> unload_model(const std::string&) override { return make_error(not_router()); }

 private:
  int sleep_level() const {
    switch (preset_.sleep_mode) {
      case config::SleepMode::l1:
        return 1;
      case config::SleepMode::l2:
        return 2;
      default:
        return 0;
    }
  }

  std::string not_router() const {
    return preset_.id + ": vLLM is not a llama.cpp router (no model load/unload)";
  }

  Result<void> post(const std::string& path, const std::string& body, const http::Client& client) {
    const auto reply = client.post(path, body);
    if (reply.ok()) return {};
    return make_error(preset_.id + ": " + http::describe("POST", client.url(path), reply));
  }

  config::Preset preset_;
  std::string health_path_;
  http::Client client_;
  http::Client slow_client_;
};

}  // namespace

double vllm_gpu_memory_utilization(const config::Preset& preset) {
  for (const char* key : {"gpu_mem_util", "gpu_memory_utilization"}) {
    const auto it = preset.unit_vars.find(key);
    if (it == preset.unit_vars.end()) continue;
    try {
      const double v = std::stod(it->second);
      if (v > 0.0 && v <= 1.0) return v;
    } catch (const std::exception&) {
      // fall through to the default: config validation reports bad values
    }
  }
  return 0.9;
}

Result<void> check_vllm_free_memory(const config::Preset& preset, std::int64_t gpu_free_bytes,
                                    std::int64_t gpu_total_bytes) {
  const double util = vllm_gpu_memory_utilization(preset);
  const auto needed = static_cast<std::int64_t>(util * static_cast<double>(gpu_total_bytes));
  if (gpu_free_bytes >= needed) return {};
  char util_text[16];
  std::snprintf(util_text, sizeof util_text, "%.2f", util);
  return make_error(preset.id + ": free VRAM " + gib(gpu_free_bytes) +
                    " GiB is less than gpu_memory_utilization " + util_text + " x total " +
                    gib(gpu_total_bytes) + " GiB = " + gib(needed) +
                    " GiB; vLLM would refuse to start (free the GPU first or lower unit_vars.gpu_mem_util)");
}

std::unique_ptr<Driver> make_vllm_driver(const config::Preset& preset, milliseconds http_timeout) {
  return std::make_unique<VllmDriver>(preset, http_timeout);
}

}  // namespace gpumod::backends
