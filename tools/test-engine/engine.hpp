// The test engine's protocol state and HTTP handlers: vLLM (health, sleep levels 1 and 2,
// wake with the level-2 reload sequence, is_sleeping), llama.cpp single-model (/health 503
// while loading) and router (/models, /models/load, /models/unload), and for all of them
// the OpenAI-style /v1 endpoints with deterministic toy outputs.
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "http/server.hpp"
#include "tools/test-engine/memory.hpp"
#include "tools/test-engine/options.hpp"

namespace gpumod::engine {

class Engine {
 public:
  using Request = http::HttpRequest;
  using Response = http::HttpResponse;

  // `started` is when the process started: --load-ms counts from there, so the time the
  // engine spends getting up (probing the GPU, binding its port) is part of its load time.
  Engine(Options options, Memory& memory, std::chrono::steady_clock::time_point started);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Registers the routes of the configured protocol (before the server runs).
  void install(http::HttpServer& server);
  // Single-model protocols: allocate and "load" until --load-ms after the start. Exits the
  // process on --crash-on-load. Returns false when a stop was requested meanwhile.
  bool load();
  void request_stop();
  void wait_for_stop();
  bool stopping();
  // Joins the router's background loads (after request_stop).
  void join_loaders();

 private:
  enum class ModelStatus { unloaded, loading, loaded };
  struct RouterModelState {
    ModelStatus status = ModelStatus::unloaded;
    bool failed = false;
  };

  // Waits up to `d`; true when a stop was requested.
  bool stop_within(std::chrono::milliseconds d);
  // Waits until `t`; true when a stop was requested.
  bool stop_before(std::chrono::steady_clock::time_point t);
  std::int64_t total_bytes() const;
  std::int64_t residual_bytes() const;
  std::int64_t weights_bytes() const;
  std::int64_t kv_bytes() const;

  void health(const Request& req, Response& res);
  void vllm_sleep(const Request& req, Response& res);
  void vllm_wake(const Request& req, Response& res);
  void vllm_is_sleeping(const Request& req, Response& res);
  void vllm_collective_rpc(const Request& req, Response& res);
  void router_models(const Request& req, Response& res);
  void router_load(const Request& req, Response& res);
  void router_unload(const Request& req, Response& res);
  // What every /v1 generate and embeddings request carries, read once.
  struct V1Request {
    nlohmann::json body;  // a JSON object
    std::string model;    // as asked ("" when the request named none)
    std::string served;   // the model that answers (--model when none was named)
  };
  // Parses the body (a JSON object, an optional string "model", `required_field` present when
  // given) and checks the model can answer now; on failure fills `res` and returns nullopt.
  std::optional<V1Request> parse_v1_request(const Request& req, Response& res,
                                            const char* required_field = nullptr);
  void v1_models(const Request& req, Response& res);
  void v1_generate(const Request& req, Response& res, bool chat);
  void v1_embeddings(const Request& req, Response& res);
  // Checks the request's model can be served now; on failure fills `res` and returns false.
  bool check_model(const std::string& model, Response& res);
  void router_load_worker(const std::string& model);

  Options options_;
  Memory& memory_;
  std::chrono::steady_clock::time_point started_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  bool ready_ = false;
  // vLLM sleep state
  std::mutex sleep_mu_;  // serialises sleep / wake sequences
  bool weights_awake_ = true;
  bool kv_awake_ = true;
  bool weights_valid_ = true;
  // router
  std::map<std::string, RouterModelState> models_;
  std::vector<std::thread> loaders_;
};

}  // namespace gpumod::engine
