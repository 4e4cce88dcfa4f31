// SchedulerCore: construction, lease gates, state changes and effects, the ledger and the
// planner's views, and the entry points that core.hpp declares. The other parts are listed in
// core_impl.hpp; docs/scheduler.md has the rules.
#include "scheduler/core_impl.hpp"

#include <spdlog/spdlog.h>
#include <algorithm>

namespace gpumod::scheduler {

SchedulerCore::Impl::Impl(config::Config c, exporter::Metrics* m)
    : cfg(std::make_shared<const config::Config>(std::move(c))),
      metrics(m),
      queue(cfg->daemon.policy.queue_max, cfg->daemon.policy.aging_interval) {
  for (const auto& p : cfg->presets) {
    add_svc(p.id).preset = std::make_shared<const config::Preset>(p);
  }
  register_services();
}

Svc& SchedulerCore::Impl::add_svc(const std::string& id) {
  Svc& s = svcs[id];
  s.gate = gates->add(id);
  return s;
}

// ---------- lease gates ----------
bool SchedulerCore::Impl::serves_now(const Svc& s) {
  return s.state == SvcState::ready && s.phase == Phase::idle && !s.retire;
}

void SchedulerCore::Impl::close_gate(Svc& s) {
  LeaseGate& g = gate_of(s);
  if (g.is_open()) g.force_close();
}

void SchedulerCore::Impl::sync_gates() {
  for (auto& [id, s] : svcs) {
    LeaseGate& g = gate_of(s);
    if (serves_now(s)) {
      if (!g.is_open()) g.open();
    } else if (g.is_open()) {
      g.force_close();
    }
  }
}

void SchedulerCore::Impl::register_services() {
  if (metrics == nullptr) return;
  std::vector<std::string> ids;
  for (const auto& [id, s] : svcs) ids.push_back(id);
  metrics->set_services(ids);
  std::vector<std::string> mode_ids;
  mode_ids.reserve(cfg->modes.size());
  for (const auto& m : cfg->modes) mode_ids.push_back(m.id);
  metrics->set_modes(mode_ids);
  for (const auto& [id, s] : svcs) {
    metrics->set_service_state(id, policy::to_string(s.state));
    metrics->set_service_vram(id, s.preset->vram_mb * kMiB, s.measured);
  }
}

// ---------- events ----------
void SchedulerCore::Impl::note(Log level, SchedEvent e) {
  switch (level) {
    case Log::debug:
      spdlog::debug("{}", e.message);
      break;
    case Log::info:
      spdlog::info("{}", e.message);
      break;
    case Log::warn:
      spdlog::warn("{}", e.message);
      break;
  }
  out.events.push_back(std::move(e));
}

SchedEvent SchedulerCore::Impl::event(const char* kind, const std::string& service, std::string message,
                                      nlohmann::json detail) {
  SchedEvent e;
  e.kind = kind;
  e.service = service;
  e.message = std::move(message);
  e.detail = std::move(detail);
  return e;
}

// ---------- state ----------
void SchedulerCore::Impl::set_state(const std::string& id, Svc& s, SvcState st, TimePoint now) {
  if (s.state == st) return;
  if (st != SvcState::ready) close_gate(s);
  SchedEvent e =
      event("service.state", id, id + ": " + policy::to_string(s.state) + " -> " + policy::to_string(st),
            {{"from", policy::to_string(s.state)}, {"to", policy::to_string(st)}});
  e.gpu = s.gpu;
  note(Log::debug, std::move(e));
  s.state = st;
  s.state_since = now;
  persist_dirty = true;
  out.changed = true;
  if (metrics != nullptr && cfg->find_preset(id) != nullptr)
    metrics->set_service_state(id, policy::to_string(st));
}

std::uint64_t SchedulerCore::Impl::new_op(const std::string& id, Svc& s) {
  if (s.op != 0) op_owner.erase(s.op);
  s.op = next_op++;
  op_owner[s.op] = id;
  return s.op;
}

void SchedulerCore::Impl::clear_op(Svc& s) {
  if (s.op != 0) op_owner.erase(s.op);
  s.op = 0;
}

Effect SchedulerCore::Impl::effect(Effect::Kind kind, const std::string& id, Svc& s) {
  Effect e;
  e.kind = kind;
  e.op = new_op(id, s);
  e.service = id;
  e.gpu = s.gpu;
  e.preset = s.preset;
  return e;
}

Bytes SchedulerCore::Impl::charge(const Svc& s) const {
  const Bytes full = s.preset->vram_mb * kMiB;
  switch (s.state) {
    case SvcState::starting:
    case SvcState::ready:
    case SvcState::waking:
    case SvcState::stopping:
      return full;
    case SvcState::sleeping:
      return s.phase == Phase::sleeping_op ? full : s.preset->sleep_residual_mb() * kMiB;
    case SvcState::stopped:
    case SvcState::failed:
      return 0;
  }
  return 0;
}

Bytes SchedulerCore::Impl::ledger(int gpu) const {
  Bytes sum = 0;
  for (const auto& [id, s] : svcs) {
    if (s.gpu == gpu) sum += charge(s);
  }
  return sum;
}

bool SchedulerCore::Impl::gpu_allowed(int index) const {
  const auto& allowed = cfg->daemon.gpus;
  return allowed.empty() || std::find(allowed.begin(), allowed.end(), index) != allowed.end();
}

void SchedulerCore::Impl::mark_gpu_changed(int gpu, TimePoint now) {
  if (gpu < 0) return;
  gpu_changed[gpu] = now;
  poll_now = true;
}

bool SchedulerCore::Impl::sample_fresh(int gpu) const {
  const auto it = gpu_changed.find(gpu);
  return it == gpu_changed.end() || (sample_taken && *sample_taken >= it->second);
}

bool SchedulerCore::Impl::views_fresh() const {
  for (const auto& [index, g] : gpus) {
    if (gpu_allowed(index) && !sample_fresh(index)) return false;
  }
  return true;
}

std::vector<policy::GpuView> SchedulerCore::Impl::gpu_views() const {
  std::vector<policy::GpuView> v;
  for (const auto& [index, g] : gpus) {
    if (!gpu_allowed(index)) continue;
    v.push_back(policy::GpuView{index, g.total_bytes, g.free_bytes, ledger(index), headroom()});
  }
  return v;
}

std::vector<policy::ServiceView> SchedulerCore::Impl::service_views(TimePoint now,
                                                                    std::vector<std::string>* ids) const {
  std::vector<policy::ServiceView> v;
  v.reserve(svcs.size());
  for (const auto& [id, s] : svcs) {
    policy::ServiceView sv;
    sv.id = id;
    sv.state = s.phase == Phase::sleeping_op ? SvcState::stopping : s.state;
    if (s.phase == Phase::stopping_op) sv.state = SvcState::stopping;
    sv.gpu = s.gpu;
    sv.vram = s.preset->vram_mb * kMiB;
    sv.sleep_residual = s.preset->sleep_residual_mb() * kMiB;
    sv.can_sleep = s.preset->can_sleep();
    sv.priority = s.preset->priority;
    sv.pinned = s.preset->pinned;
    sv.in_flight = s.phase != Phase::idle;
    sv.retiring = s.retire;
    sv.leases = busy_leases(s);
    sv.keep_alive_active = now < s.keep_alive_until;
    sv.last_used = s.last_used;
    sv.cold_start_s = s.cold_est.value_or(30.0);
    sv.wake_s = s.wake_est.value_or(2.0);
    sv.port = s.preset->port;
    sv.allowed_gpus = s.preset->gpus;
    v.push_back(std::move(sv));
    if (ids != nullptr) ids->push_back(id);
  }
  return v;
}

SchedulerCore::SchedulerCore(config::Config config, exporter::Metrics* metrics)
    : impl_(std::make_unique<Impl>(std::move(config), metrics)) {}
SchedulerCore::~SchedulerCore() = default;

void SchedulerCore::adopt(const std::vector<backends::RunInfo>& running, const std::string& state_file_json,
                          TimePoint now) {
  impl_->owner.assert_owner("SchedulerCore::adopt");
  impl_->adopt(running, state_file_json, now);
}
void SchedulerCore::on_probe_sample(const backends::ProbeSample& sample, TimePoint taken, TimePoint now) {
  impl_->owner.assert_owner("SchedulerCore::on_probe_sample");
  impl_->on_probe_sample(sample, taken, now);
}
void SchedulerCore::on_probe_error(const std::string& message, TimePoint now) {
  impl_->owner.assert_owner("SchedulerCore::on_probe_error");
  impl_->on_probe_error(message, now);
}
void SchedulerCore::on_poll_done(PollDone done, TimePoint now) {
  impl_->owner.assert_owner("SchedulerCore::on_poll_done");
  impl_->on_poll_done(std::move(done), now);
}
void SchedulerCore::on_op_done(const OpDone& done, TimePoint now) {
  impl_->owner.assert_owner("SchedulerCore::on_op_done");
  impl_->on_op_done(done, now);
}
void SchedulerCore::on_process_exit(const std::string& service, const backends::ExitInfo& exit,
                                    TimePoint now) {
  impl_->owner.assert_owner("SchedulerCore::on_process_exit");
  impl_->on_process_exit(service, exit, now);
  impl_->advance(now);
  impl_->pump(now);
}
void SchedulerCore::tick(TimePoint now) {
  impl_->owner.assert_owner("SchedulerCore::tick");
  impl_->tick(now);
}
void SchedulerCore::submit(RequestSpec spec, TimePoint now) {
  impl_->owner.assert_owner("SchedulerCore::submit");
  impl_->submit(std::move(spec), now);
}
void SchedulerCore::note_served(const std::string& service, std::optional<std::chrono::seconds> keep_alive,
                                std::uint64_t count, TimePoint answered) {
  impl_->owner.assert_owner("SchedulerCore::note_served");
  impl_->note_served(service, keep_alive, count, answered);
}
void SchedulerCore::on_stop_signalled(std::uint64_t op, TimePoint now) {
  impl_->owner.assert_owner("SchedulerCore::on_stop_signalled");
  impl_->on_stop_signalled(op, now);
}
Result<void> SchedulerCore::cancel(const std::string& request_id, TimePoint now) {
  impl_->owner.assert_owner("SchedulerCore::cancel");
  return impl_->cancel(request_id, now);
}
void SchedulerCore::release_lease(LeaseId lease, TimePoint now) {
  impl_->owner.assert_owner("SchedulerCore::release_lease");
  impl_->release_lease(lease, now);
}
void SchedulerCore::on_gate_drained(std::size_t slot, TimePoint now) {
  impl_->owner.assert_owner("SchedulerCore::on_gate_drained");
  impl_->on_gate_drained(slot, now);
}
LeaseGates& SchedulerCore::gates() {
  return *impl_->gates;
}
void SchedulerCore::service_action(std::uint64_t token, const std::string& service, ServiceAction action,
                                   TimePoint now) {
  impl_->owner.assert_owner("SchedulerCore::service_action");
  impl_->service_action(token, service, action, now);
}
void SchedulerCore::switch_mode(std::uint64_t token, const std::string& mode, TimePoint now) {
  impl_->owner.assert_owner("SchedulerCore::switch_mode");
  impl_->switch_mode(token, mode, now);
}
void SchedulerCore::reload(std::uint64_t token, const config::LoadResult& loaded, TimePoint now) {
  impl_->owner.assert_owner("SchedulerCore::reload");
  impl_->reload(token, loaded, now);
}
Result<DryRun> SchedulerCore::dry_run(const std::string& model, TimePoint now) const {
  impl_->owner.assert_owner("SchedulerCore::dry_run");
  return impl_->dry_run(model, now);
}
CoreOutput SchedulerCore::take_output() {
  impl_->owner.assert_owner("SchedulerCore::take_output");
  impl_->sync_gates();
  impl_->flush_persist();
  CoreOutput o = std::move(impl_->out);
  impl_->out = CoreOutput{};
  return o;
}
Snapshot SchedulerCore::snapshot(TimePoint now) const {
  impl_->owner.assert_owner("SchedulerCore::snapshot");
  return impl_->snapshot(now);
}
const config::Config& SchedulerCore::config() const {
  return *impl_->cfg;
}
std::shared_ptr<const config::Config> SchedulerCore::shared_config() const {
  return impl_->cfg;
}
TimePoint SchedulerCore::next_wakeup(TimePoint now) const {
  impl_->owner.assert_owner("SchedulerCore::next_wakeup");
  return impl_->next_wakeup(now);
}
policy::SvcState SchedulerCore::state_of(const std::string& service) const {
  impl_->owner.assert_owner("SchedulerCore::state_of");
  const auto it = impl_->svcs.find(service);
  return it == impl_->svcs.end() ? SvcState::stopped : it->second.state;
}
std::string SchedulerCore::last_error_of(const std::string& service) const {
  impl_->owner.assert_owner("SchedulerCore::last_error_of");
  const auto it = impl_->svcs.find(service);
  return it == impl_->svcs.end() ? std::string() : it->second.last_error;
}
std::size_t SchedulerCore::queue_length() const {
  impl_->owner.assert_owner("SchedulerCore::queue_length");
  return impl_->queue.size();
}
std::string SchedulerCore::persisted_state_json() const {
  impl_->owner.assert_owner("SchedulerCore::persisted_state_json");
  return impl_->state_json();
}

void SchedulerCore::bind_to_current_thread() {
  impl_->owner.bind();
}

}  // namespace gpumod::scheduler
