// The production Control: the daemon's Scheduler and Metrics behind the interface the
// handlers use. Kept in its own file so test binaries that use a fake Control do not pull
// in the scheduler.
#include <utility>

#include "api/control.hpp"
#include "api/server.hpp"
#include "backends/command.hpp"
#include "exporter/metrics.hpp"

namespace gpumod::api {

namespace {

class SchedulerControl final : public Control {
 public:
  SchedulerControl(scheduler::Scheduler& scheduler, exporter::Metrics& metrics)
      : scheduler_(scheduler), metrics_(metrics) {}

  scheduler::RequestTicket submit(scheduler::RequestSpec spec, Notify on_decided,
                                  Notify on_accepted) override {
    return scheduler_.submit(std::move(spec), std::move(on_decided), std::move(on_accepted));
  }
  [[nodiscard]] std::optional<scheduler::RequestInfo> request_info(
      const std::string& request_id) const override {
    return scheduler_.request_info(request_id);
  }
  std::future<Result<void>> cancel(const std::string& request_id, Notify on_done) override {
    return scheduler_.cancel(request_id, std::move(on_done));
  }
  void release_lease(scheduler::LeaseId lease) override { scheduler_.release_lease(lease); }

  std::future<scheduler::ActionResult> service_action(const std::string& service_id,
                                                      scheduler::ServiceAction action,
                                                      Notify on_done) override {
    return scheduler_.service_action(service_id, action, std::move(on_done));
  }
  std::future<scheduler::ModeResult> switch_mode(const std::string& mode_id, Notify on_done) override {
    return scheduler_.switch_mode(mode_id, std::move(on_done));
  }
  std::future<scheduler::ReloadResult> reload(Notify on_done) override {
    return scheduler_.reload(std::move(on_done));
  }
  std::future<Result<scheduler::DryRun>> dry_run(const std::string& model, Notify on_done) override {
    return scheduler_.dry_run(model, std::move(on_done));
  }

  [[nodiscard]] std::shared_ptr<const scheduler::Snapshot> snapshot() const override {
    return scheduler_.snapshot();
  }
  [[nodiscard]] std::shared_ptr<const config::Config> config() const override { return scheduler_.config(); }
  [[nodiscard]] scheduler::LoopHealth loop_health() const override { return scheduler_.loop_health(); }

  [[nodiscard]] Result<std::string> unit_file(const std::string& service_id) const override {
    auto cfg = scheduler_.config();
    const config::Preset* preset = cfg ? cfg->find_preset(service_id) : nullptr;
    if (preset == nullptr) return make_error("unknown service '" + service_id + "'");
    // Render for the GPU it runs on now, else the first allowed one.
    int gpu = preset->gpus.empty() ? 0 : preset->gpus.front();
    if (auto snap = scheduler_.snapshot()) {
      for (const auto& s : snap->services) {
        if (s.id == service_id && s.gpu >= 0) gpu = s.gpu;
      }
    }
    return backends::render_unit_file(*preset, gpu);
  }

  [[nodiscard]] scheduler::EventLog& events() override { return scheduler_.events(); }
  [[nodiscard]] std::string render_metrics() const override { return metrics_.render(); }
  void count_proxied_request(const std::string& service, const std::string& endpoint,
                             int status_code) override {
    metrics_.inc_proxied_request(service, endpoint, status_code);
  }

 private:
  scheduler::Scheduler& scheduler_;
  exporter::Metrics& metrics_;
};

}  // namespace

std::shared_ptr<Control> make_scheduler_control(scheduler::Scheduler& scheduler, exporter::Metrics& metrics) {
  return std::make_shared<SchedulerControl>(scheduler, metrics);
}

ApiServer::ApiServer(scheduler::Scheduler& scheduler, exporter::Metrics& metrics, ServerOptions options)
    : ApiServer(make_scheduler_control(scheduler, metrics), std::move(options)) {}

}  // namespace gpumod::api
