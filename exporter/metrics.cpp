// Metric families of gpumod and their text rendering (see metrics.hpp and docs/metrics.md).
#include "exporter/metrics.hpp"

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <utility>

#include "policy/planner.hpp"

namespace gpumod::exporter {

namespace {

using prometheus::Counter;
using prometheus::Family;
using prometheus::Gauge;
using prometheus::Histogram;
using prometheus::Labels;

// Cold starts of large models legitimately take minutes (the predecessor saw 180 s), and a
// startup timeout can be set up to 10 min: resolve sub-second (already warm page cache,
// tiny servers) through 10 min.
const Histogram::BucketBoundaries& start_buckets() {
  static const Histogram::BucketBoundaries b = {0.5, 1, 2, 5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600};
  return b;
}
// vLLM level-1 wakes take well under a second for small models and 3-6 s for large ones;
// a llama.cpp router "wake" is a model load and can take tens of seconds.
const Histogram::BucketBoundaries& wake_buckets() {
  static const Histogram::BucketBoundaries b = {0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 20, 30, 60, 120};
  return b;
}
// Admission waits range from "already ready" (milliseconds) to waiting behind a cold start
// and evictions (minutes).
const Histogram::BucketBoundaries& admission_buckets() {
  static const Histogram::BucketBoundaries b = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                                2.5,   5,    10,    30,   60,  120,  300, 600};
  return b;
}
// The driver releases VRAM within tens of milliseconds normally, seconds when a process is
// slow to exit, and the release-wait timeout tops out at minutes: 10 ms to 5 min.
const Histogram::BucketBoundaries& release_buckets() {
  static const Histogram::BucketBoundaries b = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                                2.5,  5,     10,   30,  60,   120, 300};
  return b;
}

double now_unix_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

const std::vector<std::string>& service_states() {
  static const std::vector<std::string> states = [] {
    std::vector<std::string> names;
    names.reserve(policy::kAllSvcStates.size());
    for (const auto s : policy::kAllSvcStates) names.emplace_back(policy::to_string(s));
    return names;
  }();
  return states;
}

const std::vector<std::string>& rejection_reasons() {
  static const std::vector<std::string> reasons = {"queue_full",   "never_fits",  "unknown_model",
                                                   "cancelled",    "bad_request", "vram_not_released",
                                                   "shutting_down"};
  return reasons;
}

const std::vector<std::string>& eviction_actions() {
  static const std::vector<std::string> actions = {"sleep", "stop"};
  return actions;
}

const std::vector<std::string>& proxy_endpoints() {
  static const std::vector<std::string> endpoints = {"/v1/chat/completions", "/v1/completions",
                                                     "/v1/embeddings"};
  return endpoints;
}

struct Metrics::Impl {
  struct GpuSeries {
    std::string label;
    Gauge* info = nullptr;
    Gauge* total = nullptr;
    Gauge* used = nullptr;
    Gauge* free = nullptr;
    Gauge* reserved = nullptr;
    Gauge* utilization = nullptr;  // null while the probe cannot read it
    Gauge* temperature = nullptr;
    Gauge* power = nullptr;
    Histogram* release_wait = nullptr;
    Counter* release_timeouts = nullptr;
  };

  struct ServiceSeries {
    std::map<std::string, Gauge*> state;
    std::string current_state;
    Gauge* declared = nullptr;
    Gauge* measured = nullptr;  // null while not measured
    Counter* starts = nullptr;
    Counter* start_failures = nullptr;
    Histogram* start_seconds = nullptr;
    Histogram* wake_seconds = nullptr;
    Counter* sleeps = nullptr;
    Counter* wakes = nullptr;
    std::map<std::string, Counter*> evictions;
    Gauge* leases = nullptr;
    std::map<std::pair<std::string, std::string>, Counter*> proxied;  // (endpoint, code)
  };

  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  mutable std::mutex mutex;  // serialises series creation/removal and lookups
  std::map<int, GpuSeries> gpus;
  std::map<std::string, ServiceSeries> services;
  std::map<std::string, std::pair<Counter*, Counter*>> modes;  // switches, failures
  std::map<std::string, Counter*> rejections;
  std::set<std::string> warned_unknown;

  // GPU
  Family<Gauge>& gpu_info;
  Family<Gauge>& gpu_mem_total;
  Family<Gauge>& gpu_mem_used;
  Family<Gauge>& gpu_mem_free;
  Family<Gauge>& gpu_mem_reserved;
  Family<Gauge>& gpu_util;
  Family<Gauge>& gpu_temp;
  Family<Gauge>& gpu_power;
  Family<Gauge>& probe_up_family;
  Family<Counter>& probe_errors_family;
  // Service
  Family<Gauge>& svc_state;
  Family<Gauge>& svc_declared;
  Family<Gauge>& svc_measured;
  Family<Counter>& svc_starts;
  Family<Counter>& svc_start_failures;
  Family<Histogram>& svc_start_seconds;
  Family<Histogram>& svc_wake_seconds;
  Family<Counter>& svc_sleeps;
  Family<Counter>& svc_wakes;
  Family<Counter>& svc_evictions;
  Family<Gauge>& svc_leases;
  Family<Counter>& proxy_requests;
  // Scheduler
  Family<Gauge>& queue_length_family;
  Family<Gauge>& queue_oldest_family;
  Family<Histogram>& admission_wait_family;
  Family<Counter>& rejections_family;
  Family<Counter>& timeouts_family;
  Family<Histogram>& release_wait_family;
  Family<Counter>& release_timeouts_family;
  Family<Counter>& mode_switches_family;
  Family<Counter>& mode_switch_failures_family;
  Family<Counter>& config_reloads_family;
  Family<Gauge>& config_last_success_family;
  Family<Gauge>& config_last_successful_family;
  Family<Gauge>& build_info_family;

  Gauge& probe_up;
  Counter& probe_errors;
  Gauge& queue_length;
  Gauge& queue_oldest;
  Histogram& admission_wait;
  Counter& request_timeouts;
  Counter& reload_success;
  Counter& reload_failure;
  Gauge& reload_last_success;
  Gauge& reload_last_successful;

  template <typename Builder>
  static auto& reg(Builder builder, prometheus::Registry& r, const std::string& name,
                   const std::string& help) {
    return builder.Name(name).Help(help).Register(r);
  }

  explicit Impl(const BuildInfo& build)
      : gpu_info(reg(prometheus::BuildGauge(), *registry, "gpumod_gpu_info",
                     "Identity of each GPU gpumod manages; the value is always 1.")),
        gpu_mem_total(reg(prometheus::BuildGauge(), *registry, "gpumod_gpu_memory_total_bytes",
                          "Total memory of the GPU in bytes.")),
        gpu_mem_used(reg(prometheus::BuildGauge(), *registry, "gpumod_gpu_memory_used_bytes",
                         "Memory in use on the GPU as reported by the probe, in bytes.")),
        gpu_mem_free(reg(prometheus::BuildGauge(), *registry, "gpumod_gpu_memory_free_bytes",
                         "Free memory on the GPU as reported by the probe, in bytes.")),
        gpu_mem_reserved(
            reg(prometheus::BuildGauge(), *registry, "gpumod_gpu_memory_reserved_bytes",
                "Memory the scheduler's ledger has committed to services on the GPU, in bytes.")),
        gpu_util(reg(prometheus::BuildGauge(), *registry, "gpumod_gpu_utilization_ratio",
                     "GPU compute utilization, 0 to 1; absent while the probe cannot read it.")),
        gpu_temp(reg(prometheus::BuildGauge(), *registry, "gpumod_gpu_temperature_celsius",
                     "GPU temperature in degrees Celsius; absent while the probe cannot read it.")),
        gpu_power(reg(prometheus::BuildGauge(), *registry, "gpumod_gpu_power_watts",
                      "GPU power draw in watts; absent while the probe cannot read it.")),
        probe_up_family(reg(prometheus::BuildGauge(), *registry, "gpumod_gpu_probe_up",
                            "1 if the last GPU probe reading succeeded, 0 if it failed.")),
        probe_errors_family(reg(prometheus::BuildCounter(), *registry, "gpumod_gpu_probe_errors_total",
                                "GPU probe readings that failed.")),
        svc_state(reg(prometheus::BuildGauge(), *registry, "gpumod_service_state",
                      "Lifecycle state of each service: 1 for the current state, 0 for the others.")),
        svc_declared(reg(prometheus::BuildGauge(), *registry, "gpumod_service_vram_declared_bytes",
                         "VRAM the service declares in its preset (vram_mb), in bytes.")),
        svc_measured(reg(prometheus::BuildGauge(), *registry, "gpumod_service_vram_measured_bytes",
                         "VRAM the service's processes use as measured by the GPU probe, in bytes.")),
        svc_starts(reg(prometheus::BuildCounter(), *registry, "gpumod_service_starts_total",
                       "Cold starts of the service that gpumod began.")),
        svc_start_failures(reg(prometheus::BuildCounter(), *registry, "gpumod_service_start_failures_total",
                               "Cold starts of the service that failed or timed out.")),
        svc_start_seconds(reg(prometheus::BuildHistogram(), *registry,
                              "gpumod_service_start_duration_seconds",
                              "Time from starting the service until it answered its health check.")),
        svc_wake_seconds(reg(prometheus::BuildHistogram(), *registry, "gpumod_service_wake_duration_seconds",
                             "Time from waking the service until it answered again.")),
        svc_sleeps(reg(prometheus::BuildCounter(), *registry, "gpumod_service_sleeps_total",
                       "Times the service was put to sleep.")),
        svc_wakes(reg(prometheus::BuildCounter(), *registry, "gpumod_service_wakes_total",
                      "Times the service was woken from sleep.")),
        svc_evictions(
            reg(prometheus::BuildCounter(), *registry, "gpumod_service_evictions_total",
                "Times the service was evicted to make room for another, by action (sleep or stop).")),
        svc_leases(
            reg(prometheus::BuildGauge(), *registry, "gpumod_service_active_leases",
                "Requests currently holding a lease on the service (a busy service cannot be evicted).")),
        proxy_requests(reg(prometheus::BuildCounter(), *registry, "gpumod_proxy_requests_total",
                           "Requests proxied to the service through /v1, by endpoint and HTTP status code.")),
        queue_length_family(reg(prometheus::BuildGauge(), *registry, "gpumod_queue_length",
                                "Requests waiting in the admission queue.")),
        queue_oldest_family(reg(prometheus::BuildGauge(), *registry, "gpumod_queue_oldest_age_seconds",
                                "Age of the oldest request in the admission queue, 0 when empty.")),
        admission_wait_family(reg(prometheus::BuildHistogram(), *registry, "gpumod_admission_wait_seconds",
                                  "Time from a request's arrival until its service was ready for it.")),
        rejections_family(reg(prometheus::BuildCounter(), *registry, "gpumod_request_rejections_total",
                              "Requests rejected, by reason.")),
        timeouts_family(reg(prometheus::BuildCounter(), *registry, "gpumod_request_timeouts_total",
                            "Requests whose deadline passed before their service was ready.")),
        release_wait_family(reg(prometheus::BuildHistogram(), *registry, "gpumod_vram_release_wait_seconds",
                                "Time spent waiting for the driver to report evicted VRAM as free.")),
        release_timeouts_family(
            reg(prometheus::BuildCounter(), *registry, "gpumod_vram_release_timeouts_total",
                "Waits for VRAM to be released that gave up before the memory was free.")),
        mode_switches_family(reg(prometheus::BuildCounter(), *registry, "gpumod_mode_switches_total",
                                 "Switches to the mode that were requested.")),
        mode_switch_failures_family(reg(prometheus::BuildCounter(), *registry,
                                        "gpumod_mode_switch_failures_total",
                                        "Switches to the mode that failed.")),
        config_reloads_family(reg(prometheus::BuildCounter(), *registry, "gpumod_config_reloads_total",
                                  "Configuration reloads, by result (success or failure).")),
        config_last_success_family(reg(prometheus::BuildGauge(), *registry,
                                       "gpumod_config_last_reload_success_timestamp_seconds",
                                       "Unix time of the last successful configuration load.")),
        config_last_successful_family(reg(prometheus::BuildGauge(), *registry,
                                          "gpumod_config_last_reload_successful",
                                          "1 if the last configuration reload succeeded, 0 if it failed.")),
        build_info_family(reg(prometheus::BuildGauge(), *registry, "gpumod_build_info",
                              "Version of gpumod that is running; the value is always 1.")),
        probe_up(probe_up_family.Add({})),
        probe_errors(probe_errors_family.Add({})),
        queue_length(queue_length_family.Add({})),
        queue_oldest(queue_oldest_family.Add({})),
        admission_wait(admission_wait_family.Add({}, admission_buckets())),
        request_timeouts(timeouts_family.Add({})),
        reload_success(config_reloads_family.Add({{"result", "success"}})),
        reload_failure(config_reloads_family.Add({{"result", "failure"}})),
        reload_last_success(config_last_success_family.Add({})),
        reload_last_successful(config_last_successful_family.Add({})) {
    build_info_family
        .Add({{"version", build.version}, {"revision", build.revision}, {"compiler", build.compiler}})
        .Set(1);
    // The daemon only runs with a valid configuration, so construction counts as its first load.
    reload_last_success.Set(now_unix_seconds());
    reload_last_successful.Set(1);
    probe_up.Set(1);
    for (const auto& reason : rejection_reasons()) {
      rejections[reason] = &rejections_family.Add({{"reason", reason}});
    }
  }

  // Lookups that name a GPU or service that was never registered are ignored: creating series
  // on the fly would resurrect a service removed by a reload racing with its last events.
  // The switch and failure counters of `mode`, made at 0 the first time. Caller holds `mutex`.
  std::pair<Counter*, Counter*>& mode_series(const std::string& mode) {
    auto& entry = modes[mode];
    if (entry.first == nullptr) {
      entry = {&mode_switches_family.Add({{"mode", mode}}),
               &mode_switch_failures_family.Add({{"mode", mode}})};
    }
    return entry;
  }
  GpuSeries* gpu(int index) {
    auto it = gpus.find(index);
    if (it == gpus.end()) {
      warn_once("gpu " + std::to_string(index));
      return nullptr;
    }
    return &it->second;
  }
  ServiceSeries* service(const std::string& svc) {
    auto it = services.find(svc);
    if (it == services.end()) {
      warn_once("service " + svc);
      return nullptr;
    }
    return &it->second;
  }
  void warn_once(const std::string& what) {
    if (warned_unknown.insert(what).second) {
      spdlog::warn("metrics: ignoring a reading for {}, which is not registered", what);
    }
  }

  // A series of a service that carries only the svc label, with its family (and buckets for a
  // histogram). add_service creates and remove_service removes exactly the rows of these
  // tables, so a family added to a service is also removed with it.
  template <typename T>
  struct SvcSlot {
    Family<T>& family;
    T*& series;
  };
  struct SvcHistogramSlot {
    Family<Histogram>& family;
    Histogram*& series;
    const Histogram::BucketBoundaries& buckets;
  };
  std::array<SvcSlot<Gauge>, 2> svc_gauges(ServiceSeries& s) {
    return {{{svc_declared, s.declared}, {svc_leases, s.leases}}};
  }
  std::array<SvcSlot<Counter>, 4> svc_counters(ServiceSeries& s) {
    return {{{svc_starts, s.starts},
             {svc_start_failures, s.start_failures},
             {svc_sleeps, s.sleeps},
             {svc_wakes, s.wakes}}};
  }
  std::array<SvcHistogramSlot, 2> svc_histograms(ServiceSeries& s) {
    return {{{svc_start_seconds, s.start_seconds, start_buckets()},
             {svc_wake_seconds, s.wake_seconds, wake_buckets()}}};
  }

  void add_service(const std::string& svc) {
    ServiceSeries s;
    const Labels l = {{"svc", svc}};
    for (const auto& state : service_states()) {
      s.state[state] = &svc_state.Add({{"svc", svc}, {"state", state}});
    }
    s.current_state = "stopped";
    s.state["stopped"]->Set(1);
    for (auto& slot : svc_gauges(s)) slot.series = &slot.family.Add(l);
    for (auto& slot : svc_counters(s)) slot.series = &slot.family.Add(l);
    for (auto& slot : svc_histograms(s)) slot.series = &slot.family.Add(l, slot.buckets);
    for (const auto& action : eviction_actions()) {
      s.evictions[action] = &svc_evictions.Add({{"svc", svc}, {"action", action}});
    }
    // Codes are open-ended; the success series of each endpoint exist from the start so that
    // a request rate is visible from the first request.
    for (const auto& endpoint : proxy_endpoints()) {
      s.proxied[{endpoint, "200"}] =
          &proxy_requests.Add({{"svc", svc}, {"endpoint", endpoint}, {"code", "200"}});
    }
    services.emplace(svc, std::move(s));
  }

  void remove_service(ServiceSeries& s) {
    for (auto& [state, g] : s.state) svc_state.Remove(g);
    if (s.measured != nullptr) svc_measured.Remove(s.measured);
    for (auto& slot : svc_gauges(s)) slot.family.Remove(slot.series);
    for (auto& slot : svc_counters(s)) slot.family.Remove(slot.series);
    for (auto& slot : svc_histograms(s)) slot.family.Remove(slot.series);
    for (auto& [action, c] : s.evictions) svc_evictions.Remove(c);
    for (auto& [key, c] : s.proxied) proxy_requests.Remove(c);
  }

  // Sets an optional gauge: present with the value, or removed while there is no reading.
  static void set_optional(Family<Gauge>& family, Gauge*& gauge, const Labels& labels,
                           std::optional<double> v) {
    if (v.has_value()) {
      if (gauge == nullptr) gauge = &family.Add(labels);
      gauge->Set(*v);
    } else if (gauge != nullptr) {
      family.Remove(gauge);
      gauge = nullptr;
    }
  }
};

Metrics::Metrics(const BuildInfo& build) : impl_(std::make_unique<Impl>(build)) {}
Metrics::~Metrics() = default;

void Metrics::register_gpu(int gpu, const std::string& uuid, const std::string& name) {
  std::lock_guard lock(impl_->mutex);
  auto& m = *impl_;
  const std::string label = std::to_string(gpu);
  auto [it, inserted] = m.gpus.try_emplace(gpu);
  auto& g = it->second;
  if (!inserted) {
    // Re-registration (e.g. after a probe restart) may change the identity: replace the info series.
    m.gpu_info.Remove(g.info);
  } else {
    const Labels l = {{"gpu", label}};
    g.label = label;
    g.total = &m.gpu_mem_total.Add(l);
    g.used = &m.gpu_mem_used.Add(l);
    g.free = &m.gpu_mem_free.Add(l);
    g.reserved = &m.gpu_mem_reserved.Add(l);
    g.release_wait = &m.release_wait_family.Add(l, release_buckets());
    g.release_timeouts = &m.release_timeouts_family.Add(l);
  }
  g.info = &m.gpu_info.Add({{"gpu", label}, {"uuid", uuid}, {"name", name}});
  g.info->Set(1);
}

void Metrics::set_services(const std::vector<std::string>& ids) {
  std::lock_guard lock(impl_->mutex);
  auto& m = *impl_;
  const std::set<std::string> wanted(ids.begin(), ids.end());
  for (auto it = m.services.begin(); it != m.services.end();) {
    if (wanted.count(it->first) == 0) {
      m.remove_service(it->second);
      it = m.services.erase(it);
    } else {
      ++it;
    }
  }
  for (const auto& id : wanted) {
    if (m.services.count(id) == 0) m.add_service(id);
  }
}

void Metrics::set_modes(const std::vector<std::string>& ids) {
  std::lock_guard lock(impl_->mutex);
  auto& m = *impl_;
  const std::set<std::string> wanted(ids.begin(), ids.end());
  for (auto it = m.modes.begin(); it != m.modes.end();) {
    if (wanted.count(it->first) == 0) {
      m.mode_switches_family.Remove(it->second.first);
      m.mode_switch_failures_family.Remove(it->second.second);
      it = m.modes.erase(it);
    } else {
      ++it;
    }
  }
  for (const auto& id : wanted) m.mode_series(id);
}

void Metrics::set_gpu_memory(int gpu, std::int64_t total, std::int64_t used, std::int64_t free,
                             std::int64_t reserved_by_ledger) {
  std::lock_guard lock(impl_->mutex);
  auto* g = impl_->gpu(gpu);
  if (g == nullptr) return;
  g->total->Set(static_cast<double>(total));
  g->used->Set(static_cast<double>(used));
  g->free->Set(static_cast<double>(free));
  g->reserved->Set(static_cast<double>(reserved_by_ledger));
}

void Metrics::set_gpu_telemetry(int gpu, std::optional<double> utilization_ratio,
                                std::optional<double> temperature_celsius,
                                std::optional<double> power_watts) {
  std::lock_guard lock(impl_->mutex);
  auto& m = *impl_;
  auto* g = m.gpu(gpu);
  if (g == nullptr) return;
  const Labels l = {{"gpu", g->label}};
  Impl::set_optional(m.gpu_util, g->utilization, l, utilization_ratio);
  Impl::set_optional(m.gpu_temp, g->temperature, l, temperature_celsius);
  Impl::set_optional(m.gpu_power, g->power, l, power_watts);
}

void Metrics::set_probe_up(bool up) {
  impl_->probe_up.Set(up ? 1 : 0);
}
void Metrics::inc_probe_errors() {
  impl_->probe_errors.Increment();
}

void Metrics::set_service_state(const std::string& svc, const std::string& state) {
  std::lock_guard lock(impl_->mutex);
  auto* s = impl_->service(svc);
  if (s == nullptr) return;
  auto next = s->state.find(state);
  if (next == s->state.end()) {
    spdlog::warn("metrics: unknown state '{}' for service {}", state, svc);
    return;
  }
  s->state[s->current_state]->Set(0);
  next->second->Set(1);
  s->current_state = state;
}

void Metrics::set_service_vram(const std::string& svc, std::int64_t declared_bytes,
                               std::optional<std::int64_t> measured_bytes) {
  std::lock_guard lock(impl_->mutex);
  auto& m = *impl_;
  auto* s = m.service(svc);
  if (s == nullptr) return;
  s->declared->Set(static_cast<double>(declared_bytes));
  std::optional<double> measured;
  if (measured_bytes) measured = static_cast<double>(*measured_bytes);
  Impl::set_optional(m.svc_measured, s->measured, {{"svc", svc}}, measured);
}

void Metrics::inc_service_start(const std::string& svc) {
  std::lock_guard lock(impl_->mutex);
  if (auto* s = impl_->service(svc)) s->starts->Increment();
}
void Metrics::inc_service_start_failure(const std::string& svc) {
  std::lock_guard lock(impl_->mutex);
  if (auto* s = impl_->service(svc)) s->start_failures->Increment();
}
void Metrics::observe_start_seconds(const std::string& svc, double seconds) {
  std::lock_guard lock(impl_->mutex);
  if (auto* s = impl_->service(svc)) s->start_seconds->Observe(seconds);
}
void Metrics::observe_wake_seconds(const std::string& svc, double seconds) {
  std::lock_guard lock(impl_->mutex);
  if (auto* s = impl_->service(svc)) s->wake_seconds->Observe(seconds);
}
void Metrics::inc_sleep(const std::string& svc) {
  std::lock_guard lock(impl_->mutex);
  if (auto* s = impl_->service(svc)) s->sleeps->Increment();
}
void Metrics::inc_wake(const std::string& svc) {
  std::lock_guard lock(impl_->mutex);
  if (auto* s = impl_->service(svc)) s->wakes->Increment();
}
void Metrics::inc_eviction(const std::string& svc, const std::string& action) {
  std::lock_guard lock(impl_->mutex);
  auto* s = impl_->service(svc);
  if (s == nullptr) return;
  auto it = s->evictions.find(action);
  if (it == s->evictions.end()) {
    spdlog::warn("metrics: unknown eviction action '{}' for service {}", action, svc);
    return;
  }
  it->second->Increment();
}
void Metrics::set_active_leases(const std::string& svc, int leases) {
  std::lock_guard lock(impl_->mutex);
  if (auto* s = impl_->service(svc)) s->leases->Set(leases);
}
void Metrics::add_active_leases(const std::string& svc, int delta) {
  std::lock_guard lock(impl_->mutex);
  auto* s = impl_->service(svc);
  if (s == nullptr) return;
  if (delta >= 0) {
    s->leases->Increment(delta);
  } else {
    s->leases->Decrement(-delta);
  }
}
void Metrics::inc_proxied_request(const std::string& svc, const std::string& endpoint, int status_code) {
  std::lock_guard lock(impl_->mutex);
  auto& m = *impl_;
  auto* s = m.service(svc);
  if (s == nullptr) return;
  const std::string code = std::to_string(status_code);
  auto& counter = s->proxied[{endpoint, code}];
  if (counter == nullptr)
    counter = &m.proxy_requests.Add({{"svc", svc}, {"endpoint", endpoint}, {"code", code}});
  counter->Increment();
}

void Metrics::set_queue(std::size_t length, double oldest_age_seconds) {
  impl_->queue_length.Set(static_cast<double>(length));
  impl_->queue_oldest.Set(oldest_age_seconds);
}
void Metrics::observe_admission_wait(double seconds) {
  impl_->admission_wait.Observe(seconds);
}
void Metrics::inc_rejection(const std::string& reason) {
  std::lock_guard lock(impl_->mutex);
  auto& m = *impl_;
  auto& counter = m.rejections[reason];
  if (counter == nullptr) counter = &m.rejections_family.Add({{"reason", reason}});
  counter->Increment();
}
void Metrics::inc_request_timeout() {
  impl_->request_timeouts.Increment();
}
void Metrics::observe_vram_release_wait(int gpu, double seconds) {
  std::lock_guard lock(impl_->mutex);
  if (auto* g = impl_->gpu(gpu)) g->release_wait->Observe(seconds);
}
void Metrics::inc_vram_release_timeout(int gpu) {
  std::lock_guard lock(impl_->mutex);
  if (auto* g = impl_->gpu(gpu)) g->release_timeouts->Increment();
}
void Metrics::inc_mode_switch(const std::string& mode) {
  std::lock_guard lock(impl_->mutex);
  impl_->mode_series(mode).first->Increment();
}
void Metrics::inc_mode_switch_failure(const std::string& mode) {
  std::lock_guard lock(impl_->mutex);
  impl_->mode_series(mode).second->Increment();
}
void Metrics::inc_config_reload(bool success) {
  if (success) {
    impl_->reload_success.Increment();
    impl_->reload_last_success.Set(now_unix_seconds());
    impl_->reload_last_successful.Set(1);
  } else {
    impl_->reload_failure.Increment();
    impl_->reload_last_successful.Set(0);
  }
}

std::string Metrics::render() const {
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, impl_->registry->Collect());
  return out.str();
}

prometheus::Registry& Metrics::registry() {
  return *impl_->registry;
}

}  // namespace gpumod::exporter
