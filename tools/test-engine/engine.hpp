// The test engine's protocol state and HTTP handlers: vLLM (health, sleep levels 1 and 2,
// wake with the level-2 reload sequence, is_sleeping), llama.cpp single-model (/health 503
// while loading) and router (/models, /models/load, /models/unload), and for all of them
// the OpenAI-style /v1 endpoints with deterministic toy outputs.
#pragma once

#include <httplib.h>

#include <nlohmann/json.hpp>

#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "tools/test-engine/memory.hpp"
#include "tools/test-engine/options.hpp"

namespace gpumod::engine {

class Engine {
 public:
  Engine(Options options, Memory& memory);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  void install(httplib::Server& server);
  // Single-model protocols: allocate and "load" for --load-ms. Exits the process on
  // --crash-on-load. Returns false when a stop was requested meanwhile.
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
  std::int64_t total_bytes() const;
  std::int64_t residual_bytes() const;
  std::int64_t weights_bytes() const;
  std::int64_t kv_bytes() const;

  void health(const httplib::Request& req, httplib::Response& res);
  void vllm_sleep(const httplib::Request& req, httplib::Response& res);
  void vllm_wake(const httplib::Request& req, httplib::Response& res);
  void vllm_is_sleeping(const httplib::Request& req, httplib::Response& res);
  void vllm_collective_rpc(const httplib::Request& req, httplib::Response& res);
  void router_models(const httplib::Request& req, httplib::Response& res);
  void router_load(const httplib::Request& req, httplib::Response& res);
  void router_unload(const httplib::Request& req, httplib::Response& res);
  // What every /v1 generate and embeddings request carries, read once.
  struct V1Request {
    nlohmann::json body;  // a JSON object
    std::string model;    // as asked ("" when the request named none)
    std::string served;   // the model that answers (--model when none was named)
  };
  // Parses the body (a JSON object, an optional string "model", `required_field` present when
  // given) and checks the model can answer now; on failure fills `res` and returns nullopt.
  std::optional<V1Request> parse_v1_request(const httplib::Request& req, httplib::Response& res,
                                            const char* required_field = nullptr);
  void v1_models(const httplib::Request& req, httplib::Response& res);
  void v1_generate(const httplib::Request& req, httplib::Response& res, bool chat);
  void v1_embeddings(const httplib::Request& req, httplib::Response& res);
  // Checks the request's model can be served now; on failure fills `res` and returns false.
  bool check_model(const std::string& model, httplib::Response& res);
  void router_load_worker(const std::string& model);

  Options options_;
  Memory& memory_;
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
