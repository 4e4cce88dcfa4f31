// Metrics: every gpumod_* metric family, owned in one prometheus-cpp registry, and the
// /metrics text rendering. The scheduler reports events and readings through these methods;
// the HTTP layer only calls render(). All methods are thread-safe (prometheus-cpp metrics
// are atomic; series creation and removal is serialised inside).
//
// Conventions: base units (bytes, seconds, ratios), `svc` labels a service, `gpu` labels a
// GPU index. Every labelled counter is created at 0 when its GPU or service is registered,
// so increase() sees the first event; a service's series are removed when it leaves the config.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace prometheus {
class Registry;
}

namespace gpumod::exporter {

struct BuildInfo {
  std::string version;
  std::string revision;
  std::string compiler;
};

// The service states (policy's SvcState names, in its order), exported as
// gpumod_service_state{state=...}.
const std::vector<std::string>& service_states();

// Rejection reasons whose gpumod_request_rejections_total series exist (at 0) from the start.
// inc_rejection() accepts other reasons too; keep them to a small fixed set.
const std::vector<std::string>& rejection_reasons();
// The eviction actions of gpumod_service_evictions_total{action}.
const std::vector<std::string>& eviction_actions();
// The /v1 endpoints whose gpumod_proxy_requests_total{endpoint,code="200"} series are created
// at 0 with each service; pass these exact strings to inc_proxied_request().
const std::vector<std::string>& proxy_endpoints();

class Metrics {
 public:
  explicit Metrics(const BuildInfo& build);
  ~Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // --- registration ---
  void register_gpu(int gpu, const std::string& uuid, const std::string& name);
  // The full set of configured services: creates series for new ones at 0, removes the
  // series of services no longer listed.
  void set_services(const std::vector<std::string>& ids);
  // The full set of configured modes: creates gpumod_mode_switches_total and
  // gpumod_mode_switch_failures_total at 0 for new ones, removes those of modes no longer listed.
  void set_modes(const std::vector<std::string>& ids);

  // --- per GPU ---
  void set_gpu_memory(int gpu, std::int64_t total, std::int64_t used, std::int64_t free,
                      std::int64_t reserved_by_ledger);
  void set_gpu_telemetry(int gpu, std::optional<double> utilization_ratio,
                         std::optional<double> temperature_celsius, std::optional<double> power_watts);
  void set_probe_up(bool up);
  void inc_probe_errors();

  // --- per service ---
  void set_service_state(const std::string& svc, const std::string& state);
  void set_service_vram(const std::string& svc, std::int64_t declared_bytes,
                        std::optional<std::int64_t> measured_bytes);
  void inc_service_start(const std::string& svc);
  void inc_service_start_failure(const std::string& svc);
  void observe_start_seconds(const std::string& svc, double seconds);
  void observe_wake_seconds(const std::string& svc, double seconds);
  void inc_sleep(const std::string& svc);
  void inc_wake(const std::string& svc);
  void inc_eviction(const std::string& svc, const std::string& action);  // "sleep" | "stop"
  void set_active_leases(const std::string& svc, int leases);
  // +1 when a lease is handed out, -1 when it ends. The scheduler counts its two kinds of
  // lease (its own, and those taken through a service's lease gate on the caller's thread)
  // this way, so the gauge is their sum without either side knowing the other's count.
  void add_active_leases(const std::string& svc, int delta);
  void inc_proxied_request(const std::string& svc, const std::string& endpoint, int status_code);

  // --- scheduler ---
  void set_queue(std::size_t length, double oldest_age_seconds);
  void observe_admission_wait(double seconds);
  void inc_rejection(const std::string& reason);  // "queue_full" | "never_fits" | "unknown_model" | ...
  void inc_request_timeout();
  void observe_vram_release_wait(int gpu, double seconds);
  void inc_vram_release_timeout(int gpu);
  void inc_mode_switch(const std::string& mode);
  void inc_mode_switch_failure(const std::string& mode);
  // Also sets gpumod_config_last_reload_successful, and the last-success timestamp on success.
  // Construction counts as the first successful load (the daemon starts only with a valid config).
  void inc_config_reload(bool success);

  // Text exposition format 0.0.4.
  [[nodiscard]] std::string render() const;
  prometheus::Registry& registry();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace gpumod::exporter
