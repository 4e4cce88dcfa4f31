// Test helpers for the planner: build a cluster of GPUs and services with a consistent
// ledger, and replay a plan on a copy of it to check what a user would check (nothing
// over-committed, nothing protected touched, the port rule kept). These checks restate the
// rules from docs/policy.md independently of planner.cpp, so they can catch it being wrong.
#pragma once

#include <algorithm>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "policy/planner.hpp"

namespace gpumod::policy::testing {

constexpr Bytes kMiB = Bytes{1} << 20;
constexpr Bytes kGiB = Bytes{1} << 30;

inline bool in_transit(SvcState s) {
  return s == SvcState::starting || s == SvcState::waking || s == SvcState::stopping;
}

inline bool holds_port(SvcState s) {
  return s != SvcState::stopped && s != SvcState::failed;
}

// The protection rule, restated.
inline bool is_protected(const ServiceView& s, int request_priority) {
  return in_transit(s.state) || s.pinned || s.leases > 0 || s.priority > request_priority ||
         (s.keep_alive_active && s.priority >= request_priority);
}

inline Bytes charged(const ServiceView& s) {
  switch (s.state) {
    case SvcState::starting:
    case SvcState::ready:
    case SvcState::waking:
    case SvcState::stopping:
      return s.vram;
    case SvcState::sleeping:
      return s.sleep_residual;
    default:
      return 0;
  }
}

inline ServiceView service(std::string id, SvcState state, int gpu, Bytes vram) {
  ServiceView s;
  s.id = std::move(id);
  s.state = state;
  s.gpu = gpu;
  s.vram = vram;
  return s;
}

struct Cluster {
  std::vector<GpuView> gpus;
  std::vector<ServiceView> services;
  std::vector<Bytes> outside;  // per GPU: usage by processes gpumod does not run

  int add_gpu(Bytes total, Bytes headroom = 0, Bytes outside_use = 0) {
    GpuView g;
    g.index = static_cast<int>(gpus.size());
    g.total = total;
    g.headroom = headroom;
    gpus.push_back(g);
    outside.push_back(outside_use);
    return g.index;
  }

  std::size_t add(ServiceView s) {
    services.push_back(std::move(s));
    return services.size() - 1;
  }

  ServiceView& operator[](std::size_t i) { return services[i]; }

  // ledger = sum of charges; live_free = total - ledger - outside (clamped at 0).
  void settle() {
    for (std::size_t i = 0; i < gpus.size(); ++i) {
      Bytes ledger = 0;
      for (const auto& s : services) {
        if (s.gpu == gpus[i].index) ledger += charged(s);
      }
      gpus[i].ledger = ledger;
      gpus[i].live_free = std::max<Bytes>(gpus[i].total - ledger - outside[i], 0);
    }
  }

  Plan plan_for(std::size_t target, int priority = 50) {
    settle();
    return plan(gpus, services, PlanRequest{target, priority});
  }
};

inline int gpu_pos(const std::vector<GpuView>& gpus, int index) {
  for (std::size_t i = 0; i < gpus.size(); ++i) {
    if (gpus[i].index == index) return static_cast<int>(i);
  }
  return -1;
}

// Bytes the target needs on top of what it holds now.
inline Bytes needed_by(const ServiceView& t) {
  return t.state == SvcState::sleeping ? t.vram - t.sleep_residual : t.vram;
}

// GPUs (positions) the target may be placed on.
inline std::vector<std::size_t> allowed_positions(const std::vector<GpuView>& gpus, const ServiceView& t) {
  std::vector<std::size_t> out;
  if (t.state == SvcState::sleeping) {
    const int p = gpu_pos(gpus, t.gpu);
    if (p >= 0) out.push_back(static_cast<std::size_t>(p));
    return out;
  }
  for (std::size_t i = 0; i < gpus.size(); ++i) {
    if (t.allowed_gpus.empty() ||
        std::find(t.allowed_gpus.begin(), t.allowed_gpus.end(), gpus[i].index) != t.allowed_gpus.end()) {
      out.push_back(i);
    }
  }
  return out;
}

// never_fits, restated: no allowed GPU could hold the target even when empty.
inline bool never_fits_expected(const std::vector<GpuView>& gpus, const ServiceView& t) {
  for (const std::size_t p : allowed_positions(gpus, t)) {
    if (gpus[p].total - gpus[p].headroom >= t.vram) return false;
  }
  return true;
}

// Replays `p` on copies of the GPUs. Returns "" when every check passes, else what failed.
// `skip` lets a test drop one action (by position) to check minimality.
inline std::string replay(std::vector<GpuView> gpus, std::vector<ServiceView> services,
                          const PlanRequest& req, const Plan& p,
                          std::size_t skip = static_cast<std::size_t>(-1)) {
  const ServiceView target = services[req.target];
  const Bytes need = needed_by(target);
  bool waited = false;
  bool finished = false;
  std::vector<char> touched(services.size(), 0);
  for (std::size_t a = 0; a < p.actions.size(); ++a) {
    if (a == skip) continue;
    const Action& act = p.actions[a];
    if (finished) return "action after start/wake";
    const int gp = gpu_pos(gpus, act.gpu);
    if (gp < 0) return "action on unknown GPU " + std::to_string(act.gpu);
    GpuView& g = gpus[static_cast<std::size_t>(gp)];
    switch (act.kind) {
      case ActionKind::sleep:
      case ActionKind::stop: {
        if (waited) return "eviction after wait_free";
        if (act.service >= services.size() || act.service == req.target) return "eviction of the target";
        ServiceView& s = services[act.service];
        if (touched[act.service] != 0) return "service " + s.id + " evicted twice";
        touched[act.service] = 1;
        if (s.gpu != act.gpu) return "eviction of " + s.id + " names the wrong GPU";
        if (is_protected(s, req.priority)) return "protected service " + s.id + " touched";
        Bytes frees = 0;
        if (act.kind == ActionKind::sleep) {
          if (s.state != SvcState::ready || !s.can_sleep)
            return "sleep of " + s.id + " which cannot sleep now";
          if (target.port != 0 && s.port == target.port) return "port sharer " + s.id + " slept, not stopped";
          frees = s.vram - s.sleep_residual;
          s.state = SvcState::sleeping;
        } else {
          if (s.state != SvcState::ready && s.state != SvcState::sleeping)
            return "stop of " + s.id + " in wrong state";
          frees = charged(s);
          s.state = SvcState::stopped;
        }
        g.ledger -= frees;
        g.live_free += frees;  // once the driver has released it
        break;
      }
      case ActionKind::wait_free: {
        if (waited) return "two wait_free actions";
        waited = true;
        if (act.bytes != need + g.headroom) return "wait_free bytes differ from need + headroom";
        if (g.live_free < act.bytes)
          return "wait_free can never be satisfied on GPU " + std::to_string(g.index);
        if (std::min(g.live_free, g.total - g.ledger) - g.headroom < need) {
          return "effective free after evictions below need on GPU " + std::to_string(g.index);
        }
        break;
      }
      case ActionKind::start:
      case ActionKind::wake: {
        if (!waited) return "start/wake without wait_free";
        if (act.service != req.target) return "start/wake of another service";
        if ((act.kind == ActionKind::wake) != (target.state == SvcState::sleeping))
          return "start vs wake mismatch";
        const auto allowed = allowed_positions(gpus, target);
        if (std::find(allowed.begin(), allowed.end(), static_cast<std::size_t>(gp)) == allowed.end()) {
          return "target placed on a GPU it may not use";
        }
        g.ledger += need;
        g.live_free -= need;
        if (g.ledger > g.total - g.headroom) return "ledger over-committed on GPU " + std::to_string(g.index);
        if (g.live_free < g.headroom) return "live free below headroom on GPU " + std::to_string(g.index);
        services[req.target].state = SvcState::ready;
        services[req.target].gpu = g.index;
        if (p.gpu != g.index) return "Plan::gpu differs from the start GPU";
        finished = true;
        break;
      }
    }
  }
  if (!finished) return "no start/wake";
  if (target.port != 0) {
    for (std::size_t i = 0; i < services.size(); ++i) {
      if (i != req.target && services[i].port == target.port && holds_port(services[i].state)) {
        return "port sharer " + services[i].id + " left holding port " + std::to_string(target.port);
      }
    }
  }
  return "";
}

}  // namespace gpumod::policy::testing
