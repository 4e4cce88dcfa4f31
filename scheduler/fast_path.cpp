#include "scheduler/fast_path.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <utility>

namespace gpumod::scheduler {

namespace {

RequestOutcome ready_outcome(const RequestSpec& spec, const ServiceSnapshot& svc) {
  RequestOutcome o;
  o.request_id = spec.request_id;
  o.status = RequestStatus::ready;
  o.message = svc.id + " is ready";
  o.service = svc.id;
  o.endpoint = "http://127.0.0.1:" + std::to_string(svc.port);
  o.gpu = svc.gpu;
  return o;
}

const ServiceSnapshot* find_service(const Snapshot* s, const std::string& id) {
  if (s == nullptr) return nullptr;
  const auto it = std::find_if(s->services.begin(), s->services.end(),
                               [&](const ServiceSnapshot& x) { return x.id == id; });
  return it == s->services.end() ? nullptr : &*it;
}

}  // namespace

FastPath::FastPath(const Clock& clock, exporter::Metrics* metrics, LeaseGates& gates, Post post,
                   OnGateDrained on_gate_drained)
    : clock_(clock),
      metrics_(metrics),
      gates_(gates),
      post_(std::move(post)),
      on_gate_drained_(std::move(on_gate_drained)) {}

void FastPath::publish(std::shared_ptr<const Snapshot> snap, std::shared_ptr<const config::Config> cfg) {
  snap_.store(std::move(snap));
  cfg_.store(std::move(cfg));
}

std::optional<RequestOutcome> FastPath::answer(const RequestSpec& spec) {
  return spec.hold_lease ? lease_from_gate(spec) : answer_from_snapshot(spec);
}

std::optional<RequestOutcome> FastPath::answer_from_snapshot(const RequestSpec& spec) {
  if (!live()) return std::nullopt;
  const auto c = cfg_.load();
  const auto s = snap_.load();
  if (!c || !s) return std::nullopt;
  const config::Preset* p = c->resolve_model(spec.model);
  if (p == nullptr) return std::nullopt;  // unknown: the scheduler's 404 names it
  const ServiceSnapshot* svc = find_service(s.get(), p->id);
  if (svc == nullptr || svc->state != policy::SvcState::ready) return std::nullopt;
  if (!record_served(svc->id, spec.keep_alive)) return std::nullopt;
  return ready_outcome(spec, *svc);
}

// The gate is open only while the core would serve the service at once, and it opens after the
// snapshot showing the service's way there was published; so the snapshot read after a
// successful acquire shows this very ready spell (endpoint, GPU) or, rarely, a state it has
// moved to since (a crash: then the lease goes back and the scheduler thread answers).
std::optional<RequestOutcome> FastPath::lease_from_gate(const RequestSpec& spec) {
  if (!live()) return std::nullopt;
  const auto c = cfg_.load();
  if (!c) return std::nullopt;
  const config::Preset* p = c->resolve_model(spec.model);
  if (p == nullptr) return std::nullopt;
  const auto slot = gates_.slot_of(p->id);
  if (!slot) return std::nullopt;
  const auto lease = gates_.acquire(*slot);
  if (!lease) return std::nullopt;
  const auto s = snap_.load();
  const ServiceSnapshot* svc = find_service(s.get(), p->id);
  if (svc == nullptr || svc->state != policy::SvcState::ready || !record_served(svc->id, spec.keep_alive)) {
    give_back(*lease, /*counted=*/false);
    return std::nullopt;
  }
  if (metrics_ != nullptr) metrics_->add_active_leases(svc->id, 1);
  RequestOutcome o = ready_outcome(spec, *svc);
  o.lease = *lease;
  return o;
}

// The scheduler thread hears of a lease given back only when it waits for the gate to empty.
void FastPath::give_back(LeaseId lease, bool counted) {
  const LeaseGates::Released r = gates_.release(lease);
  if (!r.released) {
    spdlog::warn("lease {:#x} given back twice or never handed out: ignored", lease);
    return;
  }
  if (counted && metrics_ != nullptr) metrics_->add_active_leases(gates_.name(r.slot), -1);
  if (r.notify) {
    post_("lease gate drained", [this, slot = r.slot](TimePoint at) { on_gate_drained_(slot, at); });
  }
}

// Posting a task per answer woke the scheduler thread once per request (a quarter of the
// daemon's CPU on the fast path, bench/README.md "HTTP"). So the first answer after a quiet
// spell posts one wake-up, and while answers keep coming the loop drains the next batch
// kServedLinger later on its own: one request at a time (the proxy latency bench) then costs no
// scheduler wake-up per request either.
bool FastPath::record_served(const std::string& id, std::optional<std::chrono::seconds> keep_alive) {
  bool post_drain = false;
  {
    std::lock_guard lock(served_mutex_);
    Served& e = served_[id];
    ++e.count;
    if (keep_alive && (!e.keep_alive || *keep_alive > *e.keep_alive)) e.keep_alive = keep_alive;
    e.last = clock_.now();
    post_drain = !drain_pending_;
    drain_pending_ = true;
  }
  if (!post_drain) return true;
  // Only a wake-up: every round of the loop starts with drain().
  const bool posted = post_("record fast-path answers", [](TimePoint) {});
  if (!posted) {
    std::lock_guard lock(served_mutex_);
    served_.clear();
    drain_pending_ = false;
  }
  return posted;
}

void FastPath::drain(TimePoint at, const NoteServed& note) {
  std::map<std::string, Served> batch;
  {
    std::lock_guard lock(served_mutex_);
    batch.swap(served_);
    if (batch.empty()) {
      drain_pending_ = false;
      drain_at_.reset();
      return;
    }
  }
  for (const auto& [id, e] : batch) note(id, e.keep_alive, e.count, e.last);
  drain_at_ = at + kServedLinger;
}

}  // namespace gpumod::scheduler
