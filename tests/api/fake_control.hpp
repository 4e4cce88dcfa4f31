// An in-memory Control for the API tests: scripted answers, recorded calls. Thread-safe,
// since handlers run on the server's worker threads while the test thread inspects it.
#pragma once

#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "api/control.hpp"

namespace gpumod::api::testing {

// A future that is ready, and the caller's Notify called as the Scheduler does (after).
template <typename T>
std::future<T> ready_future(T value, const scheduler::Notify& notify) {
  std::promise<T> p;
  p.set_value(std::move(value));
  auto f = p.get_future();
  if (notify) notify();
  return f;
}

class FakeControl final : public Control {
 public:
  FakeControl() {
    auto cfg = std::make_shared<config::Config>();
    config::Preset coder;
    coder.id = "qwen3-coder";
    coder.driver = config::Driver::llamacpp;
    coder.port = 7070;
    coder.vram_mb = 20000;
    coder.models = {"qwen3-coder-30b", "qwen3-coder-small"};
    coder.aliases = {"coder"};
    config::Preset embed;
    embed.id = "vllm-embedding";
    embed.driver = config::Driver::vllm;
    embed.port = 8200;
    embed.vram_mb = 5000;
    embed.model_id = "BAAI/bge-m3";
    embed.aliases = {"embed"};
    cfg->presets = {coder, embed};
    config::Mode code;
    code.id = "code";
    code.name = "Code";
    code.services = {"qwen3-coder"};
    config::Mode rag;
    rag.id = "rag";
    rag.services = {"vllm-embedding"};
    cfg->modes = {code, rag};
    config_ = cfg;

    auto snap = std::make_shared<scheduler::Snapshot>();
    scheduler::GpuSnapshot gpu;
    gpu.index = 0;
    gpu.name = "sim";
    gpu.total_bytes = 24LL << 30;
    gpu.free_bytes = 4LL << 30;
    snap->gpus = {gpu};
    scheduler::ServiceSnapshot s1;
    s1.id = "qwen3-coder";
    s1.state = policy::SvcState::ready;
    s1.gpu = 0;
    s1.port = 7070;
    scheduler::ServiceSnapshot s2;
    s2.id = "vllm-embedding";
    s2.state = policy::SvcState::sleeping;
    s2.port = 8200;
    snap->services = {s1, s2};
    snap->current_mode = "code";
    snap->probe_kind = "sim";
    snapshot_ = snap;
  }

  // --- scripting ---
  // Answer for submit(); default: ready on qwen3-coder at `endpoint`.
  std::function<scheduler::RequestOutcome(const scheduler::RequestSpec&)> on_submit;
  // When true, submit() returns a ticket whose outcome is never fulfilled (until fulfil()).
  bool hold_outcomes = false;
  std::string endpoint = "http://127.0.0.1:1";
  scheduler::ActionResult action_result{true, scheduler::Refusal::none, "done"};
  scheduler::ModeResult mode_result;
  scheduler::ReloadResult reload_result{true, "no changes", {}, {}, {}};

  // False: submit(), release_lease(), the actions and count_proxied_request() keep no record
  // (the fuzzer calls them millions of times).
  bool record = true;

  // Runs first in cancel() (without the lock; it may fulfil()); an error it returns is cancel's.
  std::function<Result<void>(const std::string& request_id)> on_cancel;
  void set_config(std::shared_ptr<const config::Config> c) {
    std::lock_guard lock(mutex_);
    config_ = std::move(c);
  }
  void set_snapshot(std::shared_ptr<const scheduler::Snapshot> s) {
    std::lock_guard lock(mutex_);
    snapshot_ = std::move(s);
  }
  void add_request_info(const scheduler::RequestInfo& info) {
    std::lock_guard lock(mutex_);
    infos_[info.request_id] = info;
  }
  // What GET /requests/{id} shows once the request is decided.
  void decide(const std::string& request_id, const scheduler::RequestOutcome& outcome) {
    std::lock_guard lock(mutex_);
    auto& info = infos_.at(request_id);
    info.status = outcome.status;
    info.outcome = outcome;
  }
  void fulfil(const std::string& request_id, const scheduler::RequestOutcome& outcome) {
    scheduler::Notify notify;
    {
      std::lock_guard lock(mutex_);
      auto& pending = pending_.at(request_id);
      pending.promise.set_value(outcome);
      notify = std::move(pending.notify);
      pending_.erase(request_id);
    }
    if (notify) notify();
  }

  // --- recorded ---
  std::vector<scheduler::RequestSpec> submitted() const {
    std::lock_guard lock(mutex_);
    return submitted_;
  }
  std::vector<std::string> cancelled() const {
    std::lock_guard lock(mutex_);
    return cancelled_;
  }
  std::vector<scheduler::LeaseId> released() const {
    std::lock_guard lock(mutex_);
    return released_;
  }
  std::vector<std::string> actions() const {
    std::lock_guard lock(mutex_);
    return actions_;
  }
  struct Proxied {
    std::string service, endpoint;
    int code;
  };
  std::vector<Proxied> proxied() const {
    std::lock_guard lock(mutex_);
    return proxied_;
  }

  // --- Control ---
  scheduler::RequestTicket submit(scheduler::RequestSpec spec, Notify on_decided,
                                  Notify on_accepted) override {
    const auto ticket = submit_locked(std::move(spec), on_decided);
    // The fake takes every request in at once (`accepted` stays invalid), as the Scheduler does
    // for one it decides at once.
    if (on_accepted) on_accepted();
    return ticket;
  }
  scheduler::RequestTicket submit_locked(scheduler::RequestSpec spec, Notify& on_decided) {
    std::lock_guard lock(mutex_);
    if (record) submitted_.push_back(spec);
    scheduler::RequestTicket ticket;
    ticket.request_id = spec.request_id.empty() ? "generated-1" : spec.request_id;
    std::promise<scheduler::RequestOutcome> promise;
    ticket.outcome = promise.get_future().share();
    if (hold_outcomes) {
      pending_.emplace(ticket.request_id, Pending{std::move(promise), std::move(on_decided)});
      scheduler::RequestInfo info;
      info.request_id = ticket.request_id;
      info.model = spec.model;
      info.status = scheduler::RequestStatus::queued;
      infos_[ticket.request_id] = info;
      return ticket;
    }
    scheduler::RequestOutcome outcome;
    if (on_submit) {
      outcome = on_submit(spec);
    } else {
      outcome.status = scheduler::RequestStatus::ready;
      outcome.service = "qwen3-coder";
      outcome.endpoint = endpoint;
      outcome.gpu = 0;
      outcome.waited_seconds = 0.25;
    }
    outcome.request_id = ticket.request_id;
    if (spec.hold_lease && outcome.status == scheduler::RequestStatus::ready) outcome.lease = ++next_lease_;
    promise.set_value(outcome);
    if (on_decided) on_decided();
    return ticket;
  }
  [[nodiscard]] std::optional<scheduler::RequestInfo> request_info(
      const std::string& request_id) const override {
    std::lock_guard lock(mutex_);
    auto it = infos_.find(request_id);
    if (it == infos_.end()) return std::nullopt;
    return it->second;
  }
  std::future<Result<void>> cancel(const std::string& request_id, Notify on_done) override {
    return ready_future(cancel_now(request_id), on_done);
  }
  Result<void> cancel_now(const std::string& request_id) {
    if (on_cancel) {
      auto r = on_cancel(request_id);
      if (!r) {
        std::lock_guard lock(mutex_);
        cancelled_.push_back(request_id);
        return r;
      }
    }
    std::lock_guard lock(mutex_);
    cancelled_.push_back(request_id);
    auto it = infos_.find(request_id);
    if (it != infos_.end() && it->second.status == scheduler::RequestStatus::ready) {
      return make_error("it is already ready");
    }
    return {};
  }
  void release_lease(scheduler::LeaseId lease) override {
    std::lock_guard lock(mutex_);
    if (record) released_.push_back(lease);
  }
  std::future<scheduler::ActionResult> service_action(const std::string& service_id,
                                                      scheduler::ServiceAction action,
                                                      Notify on_done) override {
    scheduler::ActionResult r;
    {
      std::lock_guard lock(mutex_);
      if (record) actions_.push_back(service_id + ":" + std::to_string(static_cast<int>(action)));
      r = action_result;
    }
    return ready_future(r, on_done);
  }
  std::future<scheduler::ModeResult> switch_mode(const std::string& mode_id, Notify on_done) override {
    scheduler::ModeResult r;
    {
      std::lock_guard lock(mutex_);
      if (record) actions_.push_back("mode:" + mode_id);
      r = mode_result;
    }
    r.mode = mode_id;
    return ready_future(r, on_done);
  }
  std::future<scheduler::ReloadResult> reload(Notify on_done) override {
    return ready_future(reload_result, on_done);
  }
  std::future<Result<scheduler::DryRun>> dry_run(const std::string& model, Notify on_done) override {
    scheduler::DryRun d;
    d.service = model == "embed" ? "vllm-embedding" : "qwen3-coder";
    d.plan.outcome = policy::Outcome::plan;
    d.plan.gpu = 0;
    d.plan.reason = "fits after sleeping qwen3-coder";
    d.plan.actions = {policy::Action{policy::ActionKind::sleep, 0, 0, 0},
                      policy::Action{policy::ActionKind::start, 1, 0, 0}};
    d.steps = {"sleep qwen3-coder on GPU 0 (frees 19.5 GiB)", "start vllm-embedding on GPU 0"};
    return ready_future(Result<scheduler::DryRun>(d), on_done);
  }
  [[nodiscard]] std::shared_ptr<const scheduler::Snapshot> snapshot() const override {
    std::lock_guard lock(mutex_);
    return snapshot_;
  }
  [[nodiscard]] std::shared_ptr<const config::Config> config() const override {
    std::lock_guard lock(mutex_);
    return config_;
  }
  [[nodiscard]] scheduler::LoopHealth loop_health() const override {
    std::lock_guard lock(mutex_);
    return health_;
  }
  void set_loop_health(scheduler::LoopHealth h) {
    std::lock_guard lock(mutex_);
    health_ = std::move(h);
  }
  [[nodiscard]] Result<std::string> unit_file(const std::string& service_id) const override {
    return "[Unit]\nDescription=gpumod " + service_id + "\n";
  }
  [[nodiscard]] std::string render_metrics() const override {
    return "gpumod_build_info{version=\"test\"} 1\n";
  }
  // The real event log, small: tests append to it as the scheduler would.
  [[nodiscard]] scheduler::EventLog& events() override { return events_; }
  // The log directory handlers read service logs from (GET /services/{id}/logs).
  void set_log_dir(const std::filesystem::path& dir) {
    auto cfg = std::make_shared<config::Config>(*config());
    cfg->daemon.log_dir = dir;
    std::lock_guard lock(mutex_);
    config_ = std::move(cfg);
  }
  void count_proxied_request(const std::string& service, const std::string& endpoint,
                             int status_code) override {
    std::lock_guard lock(mutex_);
    if (record) proxied_.push_back({service, endpoint, status_code});
  }

 private:
  mutable std::mutex mutex_;
  scheduler::EventLog events_{64};
  std::shared_ptr<const config::Config> config_;
  std::shared_ptr<const scheduler::Snapshot> snapshot_;
  std::map<std::string, scheduler::RequestInfo> infos_;
  struct Pending {
    std::promise<scheduler::RequestOutcome> promise;
    Notify notify;
  };
  std::map<std::string, Pending> pending_;
  std::vector<scheduler::RequestSpec> submitted_;
  std::vector<std::string> cancelled_;
  std::vector<scheduler::LeaseId> released_;
  std::vector<std::string> actions_;
  std::vector<Proxied> proxied_;
  scheduler::LeaseId next_lease_ = 100;
  scheduler::LoopHealth health_{true, false, {}, std::chrono::milliseconds(10000), {}, {}};
};

}  // namespace gpumod::api::testing
