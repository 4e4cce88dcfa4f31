// Control: everything the HTTP layer needs from the rest of the daemon, as one small
// interface. The daemon passes a Scheduler + Metrics (make_scheduler_control adapts them);
// tests pass an in-memory fake, so every handler can be exercised through a real HTTP client
// without a scheduler thread or backends.
#pragma once

#include <future>
#include <memory>
#include <optional>
#include <string>

#include "base/result.hpp"
#include "config/config.hpp"
#include "scheduler/scheduler.hpp"

namespace gpumod::exporter {
class Metrics;
}

namespace gpumod::api {

// Every call that answers later returns a future and takes a Notify (scheduler.hpp): the
// handlers answer on the HTTP loop when it fires, so no thread waits for the scheduler.
class Control {
 public:
  using Notify = scheduler::Notify;
  virtual ~Control() = default;

  // --- requests (see scheduler::Scheduler) ---
  virtual scheduler::RequestTicket submit(scheduler::RequestSpec spec, Notify on_decided,
                                          Notify on_accepted) = 0;
  [[nodiscard]] virtual std::optional<scheduler::RequestInfo> request_info(
      const std::string& request_id) const = 0;
  virtual std::future<Result<void>> cancel(const std::string& request_id, Notify on_done) = 0;
  virtual void release_lease(scheduler::LeaseId lease) = 0;

  // --- operations ---
  virtual std::future<scheduler::ActionResult> service_action(const std::string& service_id,
                                                              scheduler::ServiceAction action,
                                                              Notify on_done) = 0;
  virtual std::future<scheduler::ModeResult> switch_mode(const std::string& mode_id, Notify on_done) = 0;
  virtual std::future<scheduler::ReloadResult> reload(Notify on_done) = 0;
  virtual std::future<Result<scheduler::DryRun>> dry_run(const std::string& model, Notify on_done) = 0;

  // --- reads ---
  [[nodiscard]] virtual std::shared_ptr<const scheduler::Snapshot> snapshot() const = 0;
  [[nodiscard]] virtual std::shared_ptr<const config::Config> config() const = 0;
  // Whether the scheduler thread still turns (GET /healthz).
  [[nodiscard]] virtual scheduler::LoopHealth loop_health() const = 0;
  // The systemd unit file gpumod would install for a service (GET /services/{id}/unit).
  [[nodiscard]] virtual Result<std::string> unit_file(const std::string& service_id) const = 0;
  // What the scheduler decided and why (GET /events); any thread (scheduler/event_log.hpp).
  [[nodiscard]] virtual scheduler::EventLog& events() = 0;
  // Prometheus text exposition 0.0.4.
  [[nodiscard]] virtual std::string render_metrics() const = 0;
  virtual void count_proxied_request(const std::string& service, const std::string& endpoint,
                                     int status_code) = 0;
};

// The production Control: forwards to the scheduler and the metrics registry. Both must
// outlive the returned object.
std::shared_ptr<Control> make_scheduler_control(scheduler::Scheduler& scheduler, exporter::Metrics& metrics);

}  // namespace gpumod::api
