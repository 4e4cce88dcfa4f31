// llama.cpp llama-server driver: single-model (/health 503 while loading, 200 when ready)
// and router mode (GET /models with a status per model, POST /models/load and
// /models/unload with {"model": ...}; sleeping a router means unloading its model).
#include <nlohmann/json.hpp>

#include <thread>

#include "backends/driver.hpp"
#include "backends/http_client.hpp"

namespace gpumod::backends {

namespace {

using json = nlohmann::json;
using std::chrono::milliseconds;

constexpr milliseconds kModelPollInterval{25};
constexpr milliseconds kUnloadWait{30000};

class LlamaCppDriver final : public Driver {
 public:
  LlamaCppDriver(const config::Preset& preset, milliseconds timeout)
      : id_(preset.id),
        health_path_(preset.health_endpoint.empty() ? "/health" : preset.health_endpoint),
        router_(!preset.models.empty() || preset.sleep_mode == config::SleepMode::router),
        model_(!preset.model_id.empty() ? preset.model_id
                                        : (preset.models.empty() ? std::string() : preset.models.front())),
        startup_timeout_(std::chrono::duration_cast<milliseconds>(preset.startup_timeout)),
        client_("127.0.0.1", preset.port, timeout) {}

  const char* kind() const override { return router_ ? "llamacpp-router" : "llamacpp"; }

  Result<void> preflight(std::int64_t, std::int64_t) override { return {}; }

  HealthResult health() override {
    const auto reply = client_.get(health_path_);
    if (reply.failure == http::Failure::refused) return {Health::down, "connection refused"};
    if (!reply.answered())
      return {Health::error, id_ + ": " + http::describe("GET", client_.url(health_path_), reply)};
    if (reply.status == 503) return {Health::loading, "loading: " + http::excerpt(reply.body)};
    if (reply.status != 200) {
      return {Health::error, id_ + ": " + http::describe("GET", client_.url(health_path_), reply)};
    }
    if (!router_ || model_.empty()) return {Health::ready, "ok"};
    // A router answers as soon as it is up; its model may still be loading.
    auto models = list_models();
    if (!models) return {Health::error, models.error()};
    for (const auto& m : *models) {
      if (m.id != model_) continue;
      if (m.status == "loading") return {Health::loading, "router up; model " + model_ + " loading"};
      return {Health::ready, "router up; model " + model_ + " " + m.status};
    }
    return {Health::ready, "router up; model " + model_ + " not listed"};
  }

  Result<void> activate(milliseconds timeout) override {
    if (!router_ || model_.empty()) return {};
    return load_and_wait(model_, timeout);
  }

  Result<void> sleep() override {
    if (!router_) {
      return make_error(id_ +
                        ": a single-model llama.cpp server cannot sleep (use sleep_mode: router with a "
                        "router preset, or stop it)");
    }
    auto models = list_models();
    if (!models) return make_error(models.error());
    std::vector<std::string> unloading;
    for (const auto& m : *models) {
      if (m.status == "loaded" || m.status == "loading") {
        auto r = unload_model(m.id);
        if (!r) return r;
        unloading.push_back(m.id);
      }
    }
    return wait_unloaded(unloading);
  }

  Result<void> wake() override {
    if (!router_) return make_error(id_ + ": a single-model llama.cpp server cannot wake (it never sleeps)");
    if (model_.empty()) return make_error(id_ + ": router preset names no model (set model_id or models)");
    return load_and_wait(model_, startup_timeout_);
  }

  Result<bool> is_sleeping() override {
    if (!router_ || model_.empty()) return false;
    auto models = list_models();
    if (!models) return make_error(models.error());
    for (const auto& m : *models) {
      if (m.id == model_) return m.status != "loaded" && m.status != "loading";
    }
    return true;
  }

  Result<std::vector<RouterModel>> list_models() override {
    if (!router_) return make_error(id_ + ": not a llama.cpp router (no models list)");
    const auto reply = client_.get("/models");
    if (!reply.ok()) return make_error(id_ + ": " + http::describe("GET", client_.url("/models"), reply));
    try {
      const auto doc = json::parse(reply.body);
      std::vector<RouterModel> out;
      for (const auto& item : doc.at("data")) {
        RouterModel m;
        m.id = item.at("id").get<std::string>();
        const auto& status = item.value("status", json::object());
        if (status.is_object()) {
          m.status = status.value("value", std::string("unknown"));
          // A load that failed is reported as unloaded with failed: true.
          if (status.value("failed", false)) m.status = "failed";
        } else if (status.is_string()) {
          m.status = status.get<std::string>();
        }
        out.push_back(std::move(m));
      }
      return out;
    } catch (const json::exception& e) {
      return make_error(id_ + ": GET " + client_.url("/models") + ": unexpected JSON (" + e.what() +
                        "): " + http::excerpt(reply.body));
    }
  }

  Result<void> load_model(const std::string& model) override { return post_model("/models/load", model); }
  Result<void> unload_model(const std::string& model) override { return post_model("/models/unload", model); }

 private:
  Result<void> post_model(const std::string& path, const std::string& model) {
    if (!router_) return make_error(id_ + ": not a llama.cpp router (cannot " + path + ")");
    const auto reply = client_.post(path, json{{"model", model}}.dump());
    if (reply.ok()) return {};
    // Asking to load what is already loaded (or unload what is not) is not a failure here.
    if (reply.answered() && reply.status == 400 &&
        (reply.body.find("already") != std::string::npos ||
         reply.body.find("not loaded") != std::string::npos)) {
      return {};
    }
    return make_error(id_ + ": " + http::describe("POST", client_.url(path), reply));
  }

  Result<std::string> model_status(const std::string& model) {
    auto models = list_models();
    if (!models) return make_error(models.error());
    for (const auto& m : *models) {
      if (m.id == model) return m.status;
    }
    return make_error(id_ + ": router does not list model " + model);
  }

  Result<void> load_and_wait(const std::string& model, milliseconds timeout) {
    auto status = model_status(model);
    if (!status) return make_error(status.error());
    if (*status == "loaded") return {};
    if (*status != "loading") {
      auto r = load_model(model);
      if (!r) return r;
    }
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    std::string last = *status;
    while (std::chrono::steady_clock::now() < deadline) {
      status = model_status(model);
      if (!status) return make_error(status.error());
      last = *status;
      if (last == "loaded") return {};
      if (last == "failed") return make_error(id_ + ": router failed to load model " + model);
      std::this_thread::sleep_for(kModelPollInterval);
    }
    return make_error(id_ + ": model " + model + " not loaded after " + std::to_string(timeout.count()) +
                      " ms (last status: " + last + ")");
  }

  Result<void> wait_unloaded(const std::vector<std::string>& models) {
    const auto deadline = std::chrono::steady_clock::now() + kUnloadWait;
    while (true) {
      auto listed = list_models();
      if (!listed) return make_error(listed.error());
      bool busy = false;
      for (const auto& m : *listed) {
        for (const auto& want : models) {
          if (m.id == want && (m.status == "loaded" || m.status == "loading")) busy = true;
        }
      }
      if (!busy) return {};
      if (std::chrono::steady_clock::now() >= deadline) {
        return make_error(id_ + ": router still lists a model as loaded " +
                          std::to_string(kUnloadWait.count()) + " ms after unload");
      }
      std::this_thread::sleep_for(kModelPollInterval);
    }
  }

  std::string id_;
  std::string health_path_;
  bool router_;
  std::string model_;
  milliseconds startup_timeout_;
  http::Client client_;
};

}  // namespace

std::unique_ptr<Driver> make_llamacpp_driver(const config::Preset& preset, milliseconds http_timeout) {
  return std::make_unique<LlamaCppDriver>(preset, http_timeout);
}

}  // namespace gpumod::backends
