// Driver: how gpumod talks to a running server (health, sleep, wake, router model load).
// Every call is a bounded-time HTTP call to 127.0.0.1:<port>; calls may block briefly and
// are made from worker threads. One driver instance per service.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "base/result.hpp"
#include "config/config.hpp"

namespace gpumod::backends {

enum class Health {
  ready,    // answers and its model is loaded
  loading,  // up but not ready (llama.cpp 503, router model still loading)
  down,     // connection refused: not listening (yet)
  error     // answered something unexpected; detail says what
};
const char* to_string(Health h);

struct HealthResult {
  Health health = Health::down;
  std::string detail;
};

struct RouterModel {
  std::string id;
  std::string status;  // "loaded", "loading", "unloaded", ...
};

class Driver {
 public:
  virtual ~Driver() = default;
  virtual const char* kind() const = 0;

  // Before a start: may refuse (vLLM: free VRAM must cover gpu_memory_utilization x total).
  virtual Result<void> preflight(std::int64_t gpu_free_bytes, std::int64_t gpu_total_bytes) = 0;
  virtual HealthResult health() = 0;
  // Once health is up after a start or wake: finish bringing the model in (router: load
  // the preset's model and wait for it). No-op for single-model servers.
  virtual Result<void> activate(std::chrono::milliseconds timeout) = 0;
  virtual Result<void> sleep() = 0;  // per the preset's sleep_mode
  virtual Result<void> wake() = 0;
  virtual Result<bool> is_sleeping() = 0;
  // Router only (others return an error saying so).
  virtual Result<std::vector<RouterModel>> list_models() = 0;
  virtual Result<void> load_model(const std::string& model) = 0;
  virtual Result<void> unload_model(const std::string& model) = 0;
};

std::unique_ptr<Driver> make_driver(const config::Preset& preset,
                                    std::chrono::milliseconds http_timeout = std::chrono::seconds(5));

// The individual drivers make_driver picks from preset.driver (fastapi and docker use the
// generic one). llama.cpp runs in router mode when preset.models is non-empty or
// sleep_mode is router.
std::unique_ptr<Driver> make_llamacpp_driver(const config::Preset& preset,
                                             std::chrono::milliseconds http_timeout);
std::unique_ptr<Driver> make_vllm_driver(const config::Preset& preset,
                                         std::chrono::milliseconds http_timeout);
std::unique_ptr<Driver> make_generic_driver(const config::Preset& preset,
                                            std::chrono::milliseconds http_timeout);

// vLLM refuses to start unless free >= gpu_memory_utilization x total (unit_vars.gpu_mem_util,
// default 0.9); this is that check, with a message naming both numbers.
Result<void> check_vllm_free_memory(const config::Preset& preset, std::int64_t gpu_free_bytes,
                                    std::int64_t gpu_total_bytes);
// unit_vars.gpu_mem_util (or gpu_memory_utilization), default 0.9.
double vllm_gpu_memory_utilization(const config::Preset& preset);

}  // namespace gpumod::backends
