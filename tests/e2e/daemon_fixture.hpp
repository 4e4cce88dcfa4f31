// Test support for end-to-end tests: runs a real `gpumod serve` process on a free loopback port
// with a generated config, talks to it over HTTP, and always stops it (and every service it
// started) when the test ends, pass or fail.
#pragma once

#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "tests/support/eventually.hpp"
#include "tests/support/net.hpp"
#include "tests/support/temp_dir.hpp"

namespace gpumod::e2e {

namespace fs = std::filesystem;
using json = nlohmann::json;
using gpumod::testing::eventually;
using gpumod::testing::free_port;
using gpumod::testing::TempDir;

inline const char* kGpumodBin = GPUMOD_BINARY_DIR "/app/gpumod";
inline const char* kEngineBin = GPUMOD_BINARY_DIR "/tools/test-engine/gpumod-test-engine";

void write_file(const fs::path& path, const std::string& text);

// One engine-backed preset for a generated config.
struct EnginePreset {
  std::string id;
  std::string protocol = "vllm";  // vllm | llamacpp | router | generic
  std::string driver = "vllm";    // vllm | llamacpp | generic
  int port = 0;
  int vram_mb = 1000;
  int load_ms = 200;
  std::string sleep_mode = "none";  // none | l1 | l2 | router
  int priority = 50;
  std::vector<std::string> extra_engine_args;
  std::vector<std::string> aliases;
  std::string model;  // model name the engine serves (default: id)
  int startup_timeout_s = 30;
};

// The usual preset: the driver follows the protocol (router and llamacpp → llamacpp).
EnginePreset engine_preset(const std::string& id, const std::string& protocol, int port, int vram_mb,
                           int load_ms = 200, const std::string& sleep_mode = "none");

struct GeneratedConfig {
  int gpu_mb = 24576;
  int headroom_mb = 0;
  int release_lag_ms = 0;
  std::string vram_release_timeout = "20s";
  int queue_max = 1024;
  std::string stall_timeout;  // policy.stall_timeout when not empty
  std::string api_token;      // api_token when not empty (give it to Daemon::use_token too)
  std::vector<EnginePreset> presets;
  std::map<std::string, std::vector<std::string>> modes;
};

// Writes gpumod.yaml, presets/*.yaml and modes/*.yaml under dir.
void write_config(const fs::path& dir, const GeneratedConfig& cfg);

struct Response {
  int status = 0;  // 0: no answer (connection failed)
  std::string body;
  std::map<std::string, std::string> headers;
  [[nodiscard]] json js() const { return json::parse(body, nullptr, false); }
  // The body as a JSON object; otherwise a test failure naming the status and body, and {} (so
  // the caller's expectations fail on their own line instead of a json exception).
  [[nodiscard]] json obj() const {
    json j = js();
    if (j.is_object()) return j;
    ADD_FAILURE() << "HTTP " << status << " answer is not a JSON object: " << body;
    return json::object();
  }
};

class Daemon {
 public:
  // Starts `gpumod serve --config <config_dir>` and waits for /healthz (fails the test otherwise).
  Daemon(const fs::path& config_dir, const fs::path& state_dir, std::vector<std::string> extra_args = {});
  ~Daemon();  // stops every service, then SIGTERMs the daemon
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  [[nodiscard]] bool started() const { return pid_ > 0 && healthy_; }
  [[nodiscard]] int port() const { return port_; }
  [[nodiscard]] std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  [[nodiscard]] pid_t pid() const { return pid_; }
  [[nodiscard]] std::string log() const;  // what the daemon printed so far

  Response get(const std::string& path, std::chrono::seconds timeout = std::chrono::seconds(30)) const;
  Response post(const std::string& path, const std::string& body = "{}",
                std::chrono::seconds timeout = std::chrono::seconds(60)) const;
  Response del(const std::string& path) const;

  // Every call from here on (the destructor's included) sends this bearer token.
  void use_token(std::string token) { token_ = std::move(token); }
  // Stops every non-stopped service through the API and waits until /status shows them stopped.
  void stop_all_services();
  // SIGKILL the daemon (services keep running, for adoption tests).
  void kill_hard();
  // SIGTERM and wait; returns the exit status.
  int terminate();

 private:
  bool wait_healthy(std::chrono::seconds limit);
  fs::path state_dir_;
  fs::path log_path_;
  std::string token_;
  int port_ = 0;
  void note_unanswered(const std::string& what, const std::string& error) const;
  pid_t pid_ = -1;
  bool healthy_ = false;
  mutable bool unanswered_ = false;
};

// The pids of live processes whose environment holds GPUMOD_SIM_DIR=<sim_dir>: every service a
// daemon with that state dir started. Used to prove nothing is left behind.
std::vector<pid_t> processes_using_sim_dir(const fs::path& sim_dir);

// Sum of the simulated GPU charge files under sim_dir for live pids (what the sim GPU shows used).
std::int64_t sim_charged_bytes(const fs::path& sim_dir);

}  // namespace gpumod::e2e
