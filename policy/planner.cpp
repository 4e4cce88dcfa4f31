// The placement planner. plan() is a pure function of its arguments: no I/O, no clocks,
// no threads, no randomness, no global state. Equal inputs give identical plans.
//
// Objective
// ---------
// Bring the request's target service up with the least disruption to the others, without
// ever planning a start or wake that the GPU cannot hold:
//
//   1. Target state decides the kind of answer:
//        ready              -> already_ready
//        starting, waking   -> in_progress (join the transition under way)
//        stopping           -> wait (it will be stopped soon; plan again then)
//        sleeping           -> wake on its own GPU; needs vram - sleep_residual more bytes
//        stopped, failed    -> start on the best allowed GPU; needs vram bytes
//
//   2. Memory model. For a GPU g:
//        raw(g)            = min(live_free, total - ledger) - headroom   (may be negative)
//        effective_free(g) = max(raw(g), 0)
//      The ledger already holds the charge of every service on g (full vram from starting to
//      stopping, sleep_residual while sleeping). Evicting a service frees exactly what it is
//      charged for, in both views: the ledger at once, live_free once the driver releases it.
//      Usage by processes outside gpumod (live_free below total - ledger) is never freed.
//      A plan on g is feasible when  raw(g) + freed(evictions on g) >= need.  The unclamped raw
//      is used on purpose: a GPU already below its headroom must first pay back that deficit.
//      Because live_free lags behind evictions, every plan puts one wait_free{g, need + headroom}
//      after the evictions and before the start/wake, even when nothing was evicted, so the
//      executor never starts a service before the driver shows the bytes really free.
//
//   3. Protection. A service is never touched when it is in transit (starting, waking,
//      stopping), pinned, under another operation of the scheduler's, leaving the config,
//      leased (leases > 0), of higher priority than the request
//      (priority > request.priority), or inside its keep-alive window with priority >= the
//      request's (an equal-priority request does not cut a keep-alive window short; a
//      strictly higher-priority one does). Candidates for eviction on a GPU are the other
//      services there in state ready or sleeping that are not protected.
//
//   4. Port exclusivity. Every other service sharing the target's nonzero port that is not
//      stopped/failed is STOPPED as part of the plan, whatever GPU it is on (sleeping is not
//      enough: a sleeping server still holds its port). Their freed memory counts on their
//      GPU. If any of them is protected the answer is wait, naming it.
//
//   5. Eviction choice on one GPU (greedy, then made minimal):
//        a) sleeps only: ready, sleep-capable candidates ordered by
//           (priority asc, last_used asc, wake_s asc, index asc); take them until feasible.
//        b) if sleeps alone cannot make room: every candidate with its largest release
//           (stop; a sleeping service can only be stopped) ordered by
//           (priority asc, last_used asc, cold_start_s asc, index asc); take until feasible.
//        Then drop every taken eviction that is not needed, trying the most important
//        (last taken) first; after this pass dropping any single eviction makes the plan
//        infeasible (minimality over the SET of evicted services). In case b) each remaining
//        stop of a sleep-capable ready service is then turned into a sleep when that still
//        frees enough (again most important first), which keeps the set minimal.
//      Completeness: b) takes everything evictable, so if any subset of evictions makes room,
//      a plan is found.
//
//   6. Best fit across allowed GPUs (allowed_gpus, empty = all). A GPU where even an empty
//      card could not hold the target (total - headroom < need) is skipped; if that is true
//      of every allowed GPU the answer is never_fits with the numbers. Among GPUs with a plan:
//        - one needing no eviction, least leftover (raw + freed - need) first;
//        - otherwise the lowest cost, compared as the tuple
//          (number of stops, sum of evicted priorities, sum of bring-back seconds
//           (wake_s per sleep, cold_start_s per stop), leftover bytes);
//        ties go to the lower GPU index. Forced port stops are the same on every GPU and are
//      not part of this cost (they do count as freed memory on their GPU).
//      If no allowed GPU has a plan the answer is wait; the reason names, per GPU, what holds
//      the memory (protected services, services in transit, usage outside gpumod).
//
//   7. Actions, in order: the port stops, the evictions on the chosen GPU, one wait_free,
//      then start{target, gpu} or wake{target, gpu}. Plan::gpu is the chosen GPU.
//
// The same text, with examples, is in docs/policy.md.
#include "policy/planner.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <tuple>

namespace gpumod::policy {

Bytes GpuView::raw_free() const {
  return std::min(live_free, total - ledger) - headroom;
}

Bytes GpuView::effective_free() const {
  return std::max<Bytes>(raw_free(), 0);
}

const char* to_string(SvcState s) {
  switch (s) {
    case SvcState::stopped:
      return "stopped";
    case SvcState::starting:
      return "starting";
    case SvcState::ready:
      return "ready";
    case SvcState::sleeping:
      return "sleeping";
    case SvcState::waking:
      return "waking";
    case SvcState::stopping:
      return "stopping";
    case SvcState::failed:
      return "failed";
  }
  return "unknown";
}

const char* to_string(ActionKind k) {
  switch (k) {
    case ActionKind::sleep:
      return "sleep";
    case ActionKind::stop:
      return "stop";
    case ActionKind::wait_free:
      return "wait_free";
    case ActionKind::start:
      return "start";
    case ActionKind::wake:
      return "wake";
  }
  return "unknown";
}

const char* to_string(Outcome o) {
  switch (o) {
    case Outcome::already_ready:
      return "already_ready";
    case Outcome::in_progress:
      return "in_progress";
    case Outcome::plan:
      return "plan";
    case Outcome::wait:
      return "wait";
    case Outcome::never_fits:
      return "never_fits";
  }
  return "unknown";
}

Bytes charge_of(const ServiceView& s) {
  switch (s.state) {
    case SvcState::starting:
    case SvcState::ready:
    case SvcState::waking:
    case SvcState::stopping:
      return s.vram;
    case SvcState::sleeping:
      return s.sleep_residual;
    case SvcState::stopped:
    case SvcState::failed:
      return 0;
  }
  return 0;
}

Bytes need_of(const ServiceView& s) {
  return s.state == SvcState::sleeping ? s.vram - s.sleep_residual : s.vram;
}

const char* protection_of(const ServiceView& s, int request_priority) {
  switch (s.state) {
    case SvcState::starting:
      return "starting";
    case SvcState::waking:
      return "waking";
    case SvcState::stopping:
      return "stopping";
    default:
      break;
  }
  if (s.pinned) return "pinned";
  if (s.in_flight) return "operation in flight";
  if (s.retiring) return "leaving the config";
  if (s.leases > 0) return "leased";
  if (s.priority > request_priority) return "higher priority";
  if (s.keep_alive_active && s.priority >= request_priority) return "keep-alive";
  return nullptr;
}

std::string format_bytes(Bytes b) {
  constexpr double kMiB = 1024.0 * 1024.0;
  constexpr double kGiB = kMiB * 1024.0;
  const double v = static_cast<double>(b);
  char buf[64];
  if (std::abs(v) >= kGiB) {
    std::snprintf(buf, sizeof buf, "%.2f GiB", v / kGiB);
  } else if (std::abs(v) >= kMiB || b == 0) {
    std::snprintf(buf, sizeof buf, "%.0f MiB", v / kMiB);
  } else {
    std::snprintf(buf, sizeof buf, "%lld B", static_cast<long long>(b));
  }
  return buf;
}

namespace {

struct Eviction {
  std::size_t service = 0;
  ActionKind kind = ActionKind::stop;
  Bytes frees = 0;
};

// What can be released on one GPU, and by which action.
struct Candidate {
  std::size_t service = 0;
  Bytes sleep_frees = 0;  // > 0 only for a ready, sleep-capable service
  Bytes stop_frees = 0;   // its whole charge
};

struct GpuPlan {
  bool feasible = false;
  std::vector<Eviction> evictions;
  int stops = 0;
  long long priority_sum = 0;
  double bring_back_s = 0.0;
  Bytes leftover = 0;
};

int position_of_gpu(const std::vector<GpuView>& gpus, int index) {
  for (std::size_t i = 0; i < gpus.size(); ++i) {
    if (gpus[i].index == index) return static_cast<int>(i);
  }
  return -1;
}

bool preferred_victim(const ServiceView& a, std::size_t ai, double a_cost, const ServiceView& b,
                      std::size_t bi, double b_cost) {
  return std::tie(a.priority, a.last_used, a_cost, ai) < std::tie(b.priority, b.last_used, b_cost, bi);
}

Bytes sum_frees(const std::vector<Eviction>& e) {
  Bytes total = 0;
  for (const auto& x : e) total += x.frees;
  return total;
}

// Drops every eviction that is not needed, most important (last taken) first.
void make_minimal(std::vector<Eviction>& taken, Bytes available, Bytes need) {
  Bytes freed = sum_frees(taken);
  for (std::size_t i = taken.size(); i-- > 0;) {
    if (available + freed - taken[i].frees >= need) {
      freed -= taken[i].frees;
      taken.erase(taken.begin() + static_cast<std::ptrdiff_t>(i));
    }
  }
}

// `available` = raw free plus what forced port stops release on this GPU.
GpuPlan plan_on_gpu(const std::vector<ServiceView>& services, std::vector<Candidate>& candidates,
                    Bytes available, Bytes need) {
  GpuPlan result;
  if (available >= need) {
    result.feasible = true;
    result.leftover = available - need;
    return result;
  }

  // a) sleeps only.
  std::sort(candidates.begin(), candidates.end(), [&](const Candidate& x, const Candidate& y) {
    return preferred_victim(services[x.service], x.service, services[x.service].wake_s, services[y.service],
                            y.service, services[y.service].wake_s);
  });
  Bytes freed = 0;
  for (const auto& c : candidates) {
    if (c.sleep_frees <= 0) continue;
    result.evictions.push_back({c.service, ActionKind::sleep, c.sleep_frees});
    freed += c.sleep_frees;
    if (available + freed >= need) break;
  }
  if (available + freed < need) {
    // b) stops (and stops of sleeping services) in preference order.
    result.evictions.clear();
    freed = 0;
    std::sort(candidates.begin(), candidates.end(), [&](const Candidate& x, const Candidate& y) {
      return preferred_victim(services[x.service], x.service, services[x.service].cold_start_s,
                              services[y.service], y.service, services[y.service].cold_start_s);
    });
    for (const auto& c : candidates) {
      if (c.stop_frees <= 0) continue;
      result.evictions.push_back({c.service, ActionKind::stop, c.stop_frees});
      freed += c.stop_frees;
      if (available + freed >= need) break;
    }
    if (available + freed < need) {
      result.evictions.clear();
      return result;  // infeasible even with every candidate stopped
    }
    make_minimal(result.evictions, available, need);
    freed = sum_frees(result.evictions);
    // Gentler where possible: a stop that can be a sleep and still make room becomes one.
    for (std::size_t i = result.evictions.size(); i-- > 0;) {
      Eviction& e = result.evictions[i];
      const ServiceView& s = services[e.service];
      if (s.state != SvcState::ready || !s.can_sleep) continue;
      const Bytes sleep_frees = s.vram - s.sleep_residual;
      if (sleep_frees <= 0) continue;
      if (available + freed - e.frees + sleep_frees >= need) {
        freed = freed - e.frees + sleep_frees;
        e.kind = ActionKind::sleep;
        e.frees = sleep_frees;
      }
    }
  } else {
    make_minimal(result.evictions, available, need);
    freed = sum_frees(result.evictions);
  }

  result.feasible = true;
  result.leftover = available + freed - need;
  for (const auto& e : result.evictions) {
    const ServiceView& s = services[e.service];
    result.priority_sum += s.priority;
    if (e.kind == ActionKind::stop) {
      ++result.stops;
      result.bring_back_s += s.cold_start_s;
    } else {
      result.bring_back_s += s.wake_s;
    }
  }
  return result;
}

bool better_plan(const GpuPlan& a, int a_index, const GpuPlan& b, int b_index) {
  const bool a_free = a.evictions.empty();
  const bool b_free = b.evictions.empty();
  if (a_free != b_free) return a_free;
  if (a_free) return std::tie(a.leftover, a_index) < std::tie(b.leftover, b_index);
  return std::tie(a.stops, a.priority_sum, a.bring_back_s, a.leftover, a_index) <
         std::tie(b.stops, b.priority_sum, b.bring_back_s, b.leftover, b_index);
}

// Why no plan exists on GPU `pos`: what holds its memory.
std::string explain_blocked_gpu(const std::vector<GpuView>& gpus, std::size_t pos,
                                const std::vector<ServiceView>& services, std::size_t target,
                                const std::vector<std::size_t>& port_stops, const PlanRequest& request,
                                Bytes available, Bytes need) {
  const GpuView& g = gpus[pos];
  std::string out = "GPU " + std::to_string(g.index) + ": " + format_bytes(std::max<Bytes>(available, 0)) +
                    " free after " + format_bytes(g.headroom) + " headroom, " + format_bytes(need) +
                    " needed";
  std::string held;
  Bytes evictable = 0;
  for (std::size_t i = 0; i < services.size(); ++i) {
    const ServiceView& s = services[i];
    if (i == target || s.gpu != g.index) continue;
    if (std::find(port_stops.begin(), port_stops.end(), i) != port_stops.end()) continue;
    const Bytes charge = charge_of(s);
    if (charge <= 0) continue;
    const char* why = protection_of(s, request.priority);
    if (why == nullptr) {
      evictable += charge;
      continue;
    }
    held += held.empty() ? "" : ", ";
    held += s.id + " " + format_bytes(charge) + " (" + why + ")";
  }
  if (!held.empty()) out += "; held by " + held;
  if (evictable > 0) out += "; evictable " + format_bytes(evictable);
  const Bytes outside = (g.total - g.ledger) - g.live_free;
  if (outside > 0) out += "; " + format_bytes(outside) + " in use outside gpumod or not yet released";
  return out;
}

}  // namespace

Plan plan(const std::vector<GpuView>& gpus, const std::vector<ServiceView>& services,
          const PlanRequest& request) {
  Plan result;
  if (request.target >= services.size()) {
    result.outcome = Outcome::never_fits;
    result.reason = "unknown service index " + std::to_string(request.target);
    return result;
  }
  const ServiceView& target = services[request.target];
  const std::size_t target_index = request.target;

  switch (target.state) {
    case SvcState::ready:
      result.outcome = Outcome::already_ready;
      result.gpu = target.gpu;
      result.reason = target.id + " is ready on GPU " + std::to_string(target.gpu);
      return result;
    case SvcState::starting:
    case SvcState::waking:
      result.outcome = Outcome::in_progress;
      result.gpu = target.gpu;
      result.reason = target.id + " is " + to_string(target.state) + " on GPU " + std::to_string(target.gpu);
      return result;
    case SvcState::stopping:
      result.outcome = Outcome::wait;
      result.gpu = target.gpu;
      result.reason = target.id + " is stopping; plan again once it has stopped";
      return result;
    default:
      break;
  }

  const bool waking = target.state == SvcState::sleeping;
  const Bytes need = need_of(target);

  // GPUs the target may use (positions into `gpus`), and the never-fits test on them. A sleeping
  // target can only wake where it is; an empty GPU could hold it when total - headroom >= vram.
  std::vector<std::size_t> allowed;
  if (waking) {
    const int pos = position_of_gpu(gpus, target.gpu);
    if (pos < 0) {
      result.outcome = Outcome::never_fits;
      result.reason = target.id + " sleeps on GPU " + std::to_string(target.gpu) + ", which is not known";
      return result;
    }
    allowed.push_back(static_cast<std::size_t>(pos));
  } else if (target.allowed_gpus.empty()) {
    for (std::size_t i = 0; i < gpus.size(); ++i) allowed.push_back(i);
  } else {
    for (std::size_t i = 0; i < gpus.size(); ++i) {
      if (std::find(target.allowed_gpus.begin(), target.allowed_gpus.end(), gpus[i].index) !=
          target.allowed_gpus.end()) {
        allowed.push_back(i);
      }
    }
  }
  std::vector<std::size_t> could_fit;
  could_fit.reserve(allowed.size());
  for (const std::size_t pos : allowed) {
    if (gpus[pos].total - gpus[pos].headroom >= target.vram) could_fit.push_back(pos);
  }
  if (could_fit.empty()) {
    result.outcome = Outcome::never_fits;
    std::string detail;
    for (const std::size_t pos : allowed) {
      const GpuView& g = gpus[pos];
      detail += detail.empty() ? "" : "; ";
      detail += "GPU " + std::to_string(g.index) + " holds at most " + format_bytes(g.total - g.headroom) +
                " (" + format_bytes(g.total) + " total - " + format_bytes(g.headroom) + " headroom)";
    }
    if (detail.empty()) detail = "none of its allowed GPUs exists";
    result.reason =
        target.id + " needs " + format_bytes(target.vram) + ", more than any allowed GPU can hold: " + detail;
    return result;
  }

  // Port exclusivity: every other holder of the target's port is stopped, or we wait.
  std::vector<std::size_t> port_stops;
  if (target.port != 0) {
    std::string blockers;
    for (std::size_t i = 0; i < services.size(); ++i) {
      const ServiceView& s = services[i];
      if (i == target_index || s.port != target.port) continue;
      if (s.state == SvcState::stopped || s.state == SvcState::failed) continue;
      if (const char* why = protection_of(s, request.priority)) {
        blockers += blockers.empty() ? "" : ", ";
        blockers += s.id + " (" + why + ")";
      } else {
        port_stops.push_back(i);
      }
    }
    if (!blockers.empty()) {
      result.outcome = Outcome::wait;
      result.reason = target.id + " needs port " + std::to_string(target.port) +
                      ", held by a service that may not be stopped now: " + blockers;
      return result;
    }
  }

  // Memory available per GPU (raw free plus what port stops release there) and candidates.
  std::vector<Bytes> available(gpus.size());
  for (std::size_t i = 0; i < gpus.size(); ++i) available[i] = gpus[i].raw_free();
  for (const std::size_t i : port_stops) {
    const int pos = position_of_gpu(gpus, services[i].gpu);
    if (pos >= 0) available[static_cast<std::size_t>(pos)] += charge_of(services[i]);
  }
  std::vector<std::vector<Candidate>> candidates(gpus.size());
  std::vector<char> is_port_stop(services.size(), 0);
  for (const std::size_t i : port_stops) is_port_stop[i] = 1;
  for (std::size_t i = 0; i < services.size(); ++i) {
    const ServiceView& s = services[i];
    if (i == target_index || is_port_stop[i] != 0) continue;
    if (s.state != SvcState::ready && s.state != SvcState::sleeping) continue;
    if (protection_of(s, request.priority) != nullptr) continue;
    const int pos = position_of_gpu(gpus, s.gpu);
    if (pos < 0) continue;
    Candidate c;
    c.service = i;
    c.stop_frees = charge_of(s);
    if (s.state == SvcState::ready && s.can_sleep) c.sleep_frees = s.vram - s.sleep_residual;
    candidates[static_cast<std::size_t>(pos)].push_back(c);
  }

  int best_pos = -1;
  GpuPlan best;
  for (const std::size_t pos : could_fit) {
    GpuPlan p = plan_on_gpu(services, candidates[pos], available[pos], need);
    if (!p.feasible) continue;
    if (best_pos < 0 ||
        better_plan(p, gpus[pos].index, best, gpus[static_cast<std::size_t>(best_pos)].index)) {
      best = std::move(p);
      best_pos = static_cast<int>(pos);
    }
  }

  if (best_pos < 0) {
    result.outcome = Outcome::wait;
    std::string detail;
    for (const std::size_t pos : could_fit) {
      detail += detail.empty() ? "" : "; ";
      detail +=
          explain_blocked_gpu(gpus, pos, services, target_index, port_stops, request, available[pos], need);
    }
    result.reason = "no room for " + target.id + " now: " + detail;
    return result;
  }

  const GpuView& chosen = gpus[static_cast<std::size_t>(best_pos)];
  result.outcome = Outcome::plan;
  result.gpu = chosen.index;
  result.actions.reserve(port_stops.size() + best.evictions.size() + 2);
  std::string port_text;
  for (const std::size_t i : port_stops) {
    result.actions.push_back({ActionKind::stop, i, services[i].gpu, 0});
    port_text += port_text.empty() ? "" : ", ";
    port_text += services[i].id;
  }
  std::string evict_text;
  for (const auto& e : best.evictions) {
    result.actions.push_back({e.kind, e.service, chosen.index, 0});
    evict_text += evict_text.empty() ? "" : ", ";
    evict_text += std::string(to_string(e.kind)) + " " + services[e.service].id + " (frees " +
                  format_bytes(e.frees) + ")";
  }
  const Bytes live_needed = need + chosen.headroom;
  result.actions.push_back({ActionKind::wait_free, 0, chosen.index, live_needed});
  result.actions.push_back({waking ? ActionKind::wake : ActionKind::start, target_index, chosen.index, 0});

  result.reason = std::string(waking ? "wake " : "start ") + target.id + " on GPU " +
                  std::to_string(chosen.index) + ": needs " + format_bytes(need) + ", " +
                  format_bytes(chosen.effective_free()) + " free after " + format_bytes(chosen.headroom) +
                  " headroom";
  if (!port_text.empty()) result.reason += "; port " + std::to_string(target.port) + ": stop " + port_text;
  if (!evict_text.empty()) result.reason += "; " + evict_text;
  result.reason += "; then wait for " + format_bytes(live_needed) + " live free";
  return result;
}

}  // namespace gpumod::policy
