// A real Prometheus (the Debian package's /usr/bin/prometheus) for tests: runs on 127.0.0.1 and a
// free port with a temporary data directory, scrapes one target as job="gpumod" every second,
// evaluates the given rule files every second, and is always stopped (SIGTERM, then SIGKILL)
// when the object goes away. Also a small client for its HTTP API.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace gpumod::prom {

namespace fs = std::filesystem;
using json = nlohmann::json;

// The prometheus executable: /usr/bin/prometheus, else one on PATH; nullopt when not installed.
std::optional<fs::path> find_prometheus();

// prometheus.yml for one scrape target (host:port) as job="gpumod", 1 s scrape and rule
// evaluation intervals, and the given rule files.
std::string scrape_config(const std::string& target, const std::vector<fs::path>& rule_files);

// The answer of one Prometheus API call: `data` when status is "success", else the error.
struct ApiAnswer {
  bool ok = false;
  json data;
  std::string error;  // transport error, HTTP status or Prometheus' errorType/error
};

class PrometheusServer {
 public:
  // Writes prometheus.yml under work_dir, starts Prometheus with its data in work_dir/data and
  // its output in work_dir/prometheus.log, and waits (up to 30 s) until /-/ready answers 200.
  PrometheusServer(const fs::path& binary, const fs::path& work_dir, const std::string& target,
                   const std::vector<fs::path>& rule_files);
  ~PrometheusServer();
  PrometheusServer(const PrometheusServer&) = delete;
  PrometheusServer& operator=(const PrometheusServer&) = delete;

  [[nodiscard]] bool ready() const { return pid_ > 0 && ready_; }
  [[nodiscard]] int port() const { return port_; }
  [[nodiscard]] std::string log() const;  // what Prometheus printed so far

  // GET /api/v1/<path> with query parameters (repeated keys allowed, e.g. match[]).
  [[nodiscard]] ApiAnswer api(const std::string& path,
                              const std::vector<std::pair<std::string, std::string>>& params = {}) const;
  // An instant query at the current time.
  [[nodiscard]] ApiAnswer query(const std::string& expr) const { return api("query", {{"query", expr}}); }

  // SIGTERM and wait (SIGKILL after 20 s); returns the exit status, -1 when not running.
  int stop();

 private:
  fs::path log_path_;
  int port_ = 0;
  pid_t pid_ = -1;
  bool ready_ = false;
};

// The values of an instant query's result as (labels, value) pairs; NaN for "NaN" samples.
// Handles vector and scalar results; anything else gives no values.
std::vector<std::pair<json, double>> instant_values(const json& data);

}  // namespace gpumod::prom
