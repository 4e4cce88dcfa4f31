// Property tests over randomised clusters. Every property draws its clusters from its own fixed
// seed (std::mt19937_64), so a failure reproduces exactly; the failing case number and cluster
// are printed. 21,000 cases in total.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "cluster.hpp"
#include "policy/planner.hpp"

namespace gpumod::policy {
namespace {

using testing::charged;
using testing::holds_port;
using testing::is_protected;
using testing::kGiB;
using testing::kMiB;

constexpr int kCasesPerProperty = 3000;

struct Case {
  std::vector<GpuView> gpus;
  std::vector<ServiceView> services;
  PlanRequest request;
};

std::string dump(const Case& c) {
  std::string out = "request target=" + std::to_string(c.request.target) +
                    " priority=" + std::to_string(c.request.priority) + "\n";
  for (const auto& g : c.gpus) {
    out += "gpu " + std::to_string(g.index) + " total=" + std::to_string(g.total / kMiB) +
           " live_free=" + std::to_string(g.live_free / kMiB) + " ledger=" + std::to_string(g.ledger / kMiB) +
           " headroom=" + std::to_string(g.headroom / kMiB) + " (MiB)\n";
  }
  for (std::size_t i = 0; i < c.services.size(); ++i) {
    const auto& s = c.services[i];
    out += "svc " + std::to_string(i) + " " + s.id + " " + to_string(s.state) +
           " gpu=" + std::to_string(s.gpu) + " vram=" + std::to_string(s.vram / kMiB) +
           " residual=" + std::to_string(s.sleep_residual / kMiB) + " sleep=" + std::to_string(s.can_sleep) +
           " prio=" + std::to_string(s.priority) + " pinned=" + std::to_string(s.pinned) +
           " leases=" + std::to_string(s.leases) + " keep=" + std::to_string(s.keep_alive_active) +
           " used=" + std::to_string(s.last_used) + " port=" + std::to_string(s.port) + " allowed=";
    for (const int a : s.allowed_gpus) out += std::to_string(a) + ",";
    out += "\n";
  }
  return out;
}

// A random but self-consistent cluster: services are placed only where their charge fits the
// ledger; some GPUs carry usage from outside gpumod; priorities, ports and costs collide often
// so that tie-breaking and the port rule are exercised.
Case random_case(std::mt19937_64& rng, int max_services) {
  auto pick = [&rng](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  auto chance = [&rng](int percent) { return std::uniform_int_distribution<int>(0, 99)(rng) < percent; };
  Case c;
  const int gpu_count = chance(50) ? 1 : pick(2, 3);
  static constexpr Bytes kTotals[] = {8 * kGiB, 16 * kGiB, 24 * kGiB, 24 * kGiB};
  std::vector<Bytes> outside(static_cast<std::size_t>(gpu_count), 0);
  for (int g = 0; g < gpu_count; ++g) {
    GpuView v;
    v.index = g;
    v.total = kTotals[pick(0, 3)];
    v.headroom = chance(50) ? 0 : kMiB * 256 * pick(1, 8);
    if (chance(20)) outside[static_cast<std::size_t>(g)] = kMiB * 512 * pick(1, 16);
    c.gpus.push_back(v);
  }
  // Weighted: mostly ready and sleeping services (the ones evictions are made of).
  static constexpr SvcState kStates[] = {
      SvcState::stopped,  SvcState::stopped,  SvcState::stopped,  SvcState::failed,   SvcState::ready,
      SvcState::ready,    SvcState::ready,    SvcState::ready,    SvcState::ready,    SvcState::ready,
      SvcState::ready,    SvcState::ready,    SvcState::sleeping, SvcState::sleeping, SvcState::sleeping,
      SvcState::sleeping, SvcState::sleeping, SvcState::starting, SvcState::waking,   SvcState::stopping};
  static constexpr int kPriorities[] = {10, 30, 50, 50, 70, 90};
  static constexpr int kPorts[] = {0, 0, 0, 7070, 7070, 8000};
  std::vector<Bytes> ledger(static_cast<std::size_t>(gpu_count), 0);
  const int n = pick(1, max_services);
  for (int i = 0; i < n; ++i) {
    ServiceView s;
    s.id = "s" + std::to_string(i);
    s.vram = kMiB * 512 * pick(1, chance(5) ? 64 : 24);  // mostly 0.5-12 GiB, a few huge
    s.can_sleep = chance(50);
    s.sleep_residual = s.can_sleep ? kMiB * 256 * pick(0, 4) : 0;
    if (s.sleep_residual > s.vram) s.sleep_residual = s.vram;
    s.priority = kPriorities[pick(0, 5)];
    s.pinned = chance(8);
    s.leases = chance(12) ? pick(1, 3) : 0;
    s.keep_alive_active = chance(15);
    s.last_used = pick(0, 20);
    s.cold_start_s = pick(1, 6) * 10.0;
    s.wake_s = pick(1, 4) * 0.5;
    s.port = kPorts[pick(0, 5)];
    if (chance(25)) {
      for (int g = 0; g < gpu_count; ++g) {
        if (chance(50)) s.allowed_gpus.push_back(g);
      }
      if (s.allowed_gpus.empty() && chance(50)) s.allowed_gpus.push_back(pick(0, gpu_count));  // maybe absent
    }
    s.state = kStates[pick(0, 19)];
    if (s.state == SvcState::sleeping && !s.can_sleep) s.state = SvcState::ready;
    if (s.state != SvcState::stopped && s.state != SvcState::failed) {
      // Place it on a GPU where its charge fits; if none does, it is stopped.
      const int g = pick(0, gpu_count - 1);
      const Bytes charge = charged(s);
      const auto gp = static_cast<std::size_t>(g);
      if (ledger[gp] + charge <= c.gpus[gp].total) {
        s.gpu = g;
        ledger[gp] += charge;
      } else {
        s.state = SvcState::stopped;
      }
    }
    if (s.state == SvcState::failed && chance(50)) s.gpu = pick(0, gpu_count - 1);
    c.services.push_back(s);
  }
  for (int g = 0; g < gpu_count; ++g) {
    const auto gp = static_cast<std::size_t>(g);
    c.gpus[gp].ledger = ledger[gp];
    c.gpus[gp].live_free = std::max<Bytes>(c.gpus[gp].total - ledger[gp] - outside[gp], 0);
  }
  // Targets are mostly ones that need a plan.
  std::vector<std::size_t> plannable;
  for (std::size_t i = 0; i < c.services.size(); ++i) {
    const SvcState st = c.services[i].state;
    if (st == SvcState::stopped || st == SvcState::failed || st == SvcState::sleeping) plannable.push_back(i);
  }
  if (!plannable.empty() && chance(90)) {
    c.request.target = plannable[static_cast<std::size_t>(pick(0, static_cast<int>(plannable.size()) - 1))];
  } else {
    c.request.target = static_cast<std::size_t>(pick(0, n - 1));
  }
  static constexpr int kRequestPriorities[] = {30, 50, 70, 90, 100};
  c.request.priority = kRequestPriorities[pick(0, 4)];
  return c;
}

bool needs_plan(const ServiceView& t) {
  return t.state == SvcState::stopped || t.state == SvcState::failed || t.state == SvcState::sleeping;
}

bool port_blocked(const Case& c) {
  const ServiceView& t = c.services[c.request.target];
  if (t.port == 0) return false;
  for (std::size_t i = 0; i < c.services.size(); ++i) {
    const auto& s = c.services[i];
    if (i != c.request.target && s.port == t.port && holds_port(s.state) &&
        is_protected(s, c.request.priority)) {
      return true;
    }
  }
  return false;
}

// Exhaustive: is there any set of evictions (each candidate: untouched, slept, or stopped) on some
// allowed GPU that makes room, with the port sharers stopped?
bool brute_force_feasible(const Case& c, bool allow_stops = true) {
  const ServiceView& t = c.services[c.request.target];
  if (port_blocked(c)) return false;
  const Bytes need = testing::needed_by(t);
  for (const std::size_t gp : testing::allowed_positions(c.gpus, t)) {
    const GpuView& g = c.gpus[gp];
    if (g.total - g.headroom < t.vram) continue;
    Bytes base = std::min(g.live_free, g.total - g.ledger) - g.headroom;
    // Options per candidate: what sleeping / stopping it frees.
    std::vector<std::vector<Bytes>> options;
    for (std::size_t i = 0; i < c.services.size(); ++i) {
      const auto& s = c.services[i];
      if (i == c.request.target || s.gpu != g.index) continue;
      if (t.port != 0 && s.port == t.port && holds_port(s.state)) {
        base += charged(s);  // forced stop
        continue;
      }
      if (s.state != SvcState::ready && s.state != SvcState::sleeping) continue;
      if (is_protected(s, c.request.priority)) continue;
      std::vector<Bytes> opt = {0};
      if (allow_stops) opt.push_back(charged(s));
      if (s.state == SvcState::ready && s.can_sleep) opt.push_back(s.vram - s.sleep_residual);
      options.push_back(opt);
    }
    std::vector<std::size_t> choice(options.size(), 0);
    while (true) {
      Bytes freed = 0;
      for (std::size_t k = 0; k < options.size(); ++k) freed += options[k][choice[k]];
      if (base + freed >= need) return true;
      std::size_t k = 0;
      while (k < options.size() && ++choice[k] == options[k].size()) choice[k++] = 0;
      if (k == options.size()) break;
    }
  }
  return false;
}

template <typename Check>
void for_random_cases(std::uint64_t seed, int max_services, Check check) {
  std::mt19937_64 rng(seed);
  for (int n = 0; n < kCasesPerProperty; ++n) {
    const Case c = random_case(rng, max_services);
    const Plan p = plan(c.gpus, c.services, c.request);
    const std::string failure = check(c, p);
    if (!failure.empty()) {
      FAIL() << "case " << n << " (seed " << seed << "): " << failure << "\noutcome " << to_string(p.outcome)
             << ": " << p.reason << "\n"
             << dump(c);
    }
  }
}

// (1) Replaying a plan never over-commits a GPU: after the evictions the effective free covers
// the need, and after the start the ledger stays within total - headroom.
TEST(PlannerProperties, NeverOverCommitsAnyGpu) {
  int plans = 0;
  for_random_cases(0x5eed0001, 8, [&](const Case& c, const Plan& p) -> std::string {
    if (p.outcome != Outcome::plan) return "";
    ++plans;
    return testing::replay(c.gpus, c.services, c.request, p);
  });
  EXPECT_GT(plans, kCasesPerProperty / 4);  // the generator must actually produce plans
}

// (2) No sleep or stop of a protected service, ever.
TEST(PlannerProperties, NeverTouchesAProtectedService) {
  for_random_cases(0x5eed0002, 8, [](const Case& c, const Plan& p) -> std::string {
    for (const auto& a : p.actions) {
      if (a.kind != ActionKind::sleep && a.kind != ActionKind::stop) continue;
      if (a.service == c.request.target) return "target evicted";
      if (is_protected(c.services[a.service], c.request.priority)) {
        return "protected " + c.services[a.service].id + " touched";
      }
    }
    if (p.outcome != Outcome::plan && !p.actions.empty()) return "actions on a non-plan outcome";
    return "";
  });
}

// (3) Minimal: dropping any single eviction leaves a plan that no longer works.
TEST(PlannerProperties, DroppingAnyEvictionMakesThePlanInfeasible) {
  int evictions = 0;
  for_random_cases(0x5eed0003, 8, [&](const Case& c, const Plan& p) -> std::string {
    if (p.outcome != Outcome::plan) return "";
    for (std::size_t a = 0; a < p.actions.size(); ++a) {
      if (p.actions[a].kind != ActionKind::sleep && p.actions[a].kind != ActionKind::stop) continue;
      ++evictions;
      if (testing::replay(c.gpus, c.services, c.request, p, a).empty()) {
        return "eviction of " + c.services[p.actions[a].service].id + " is not needed";
      }
    }
    return "";
  });
  EXPECT_GT(evictions, kCasesPerProperty / 8);
}

bool same_plan(const Plan& a, const Plan& b) {
  if (a.outcome != b.outcome || a.gpu != b.gpu || a.reason != b.reason ||
      a.actions.size() != b.actions.size()) {
    return false;
  }
  for (std::size_t i = 0; i < a.actions.size(); ++i) {
    const Action& x = a.actions[i];
    const Action& y = b.actions[i];
    if (x.kind != y.kind || x.service != y.service || x.gpu != y.gpu || x.bytes != y.bytes) return false;
  }
  return true;
}

// (4) Deterministic: the same input gives an identical plan, also from a separate copy.
TEST(PlannerProperties, IsDeterministic) {
  for_random_cases(0x5eed0004, 8, [](const Case& c, const Plan& p) -> std::string {
    const Case copy = c;
    if (!same_plan(p, plan(c.gpus, c.services, c.request))) return "second call differs";
    if (!same_plan(p, plan(copy.gpus, copy.services, copy.request))) return "call on a copy differs";
    return "";
  });
}

// (5) never_fits exactly when no allowed GPU could hold the target even empty.
TEST(PlannerProperties, NeverFitsExactlyWhenNoAllowedGpuCouldHoldIt) {
  int never = 0;
  for_random_cases(0x5eed0005, 8, [&](const Case& c, const Plan& p) -> std::string {
    const ServiceView& t = c.services[c.request.target];
    if (!needs_plan(t))
      return p.outcome == Outcome::never_fits ? "never_fits for a target that needs no plan" : "";
    const bool expected = testing::never_fits_expected(c.gpus, t);
    never += expected ? 1 : 0;
    if (expected != (p.outcome == Outcome::never_fits)) {
      return expected ? "should be never_fits" : "never_fits although an allowed GPU could hold it";
    }
    return "";
  });
  EXPECT_GT(never, 10);
}

// (6) Every other holder of the target's port is stopped (never slept, never left running),
// or the answer is not a plan.
TEST(PlannerProperties, PortSharersAreStopped) {
  int sharers = 0;
  for_random_cases(0x5eed0006, 8, [&](const Case& c, const Plan& p) -> std::string {
    const ServiceView& t = c.services[c.request.target];
    if (t.port == 0) return "";
    if (port_blocked(c) && p.outcome == Outcome::plan)
      return "plan although a protected service holds the port";
    if (p.outcome != Outcome::plan) return "";
    for (std::size_t i = 0; i < c.services.size(); ++i) {
      const auto& s = c.services[i];
      if (i == c.request.target || s.port != t.port || !holds_port(s.state)) continue;
      ++sharers;
      bool stopped = false;
      for (const auto& a : p.actions) {
        if (a.service != i || (a.kind != ActionKind::sleep && a.kind != ActionKind::stop)) continue;
        if (a.kind == ActionKind::sleep) return "port sharer " + s.id + " slept";
        stopped = true;
      }
      if (!stopped) return "port sharer " + s.id + " left running";
    }
    return "";
  });
  EXPECT_GT(sharers, 50);
}

// (7) Complete: whenever some set of evictions would make room (exhaustive search over small
// clusters), the planner returns a plan, and it never returns a plan where none exists. Also:
// when sleeps alone could make room on some allowed GPU, the plan stops nothing optional.
TEST(PlannerProperties, FindsAPlanWheneverBruteForceDoes) {
  int feasible = 0;
  int infeasible = 0;
  int sleep_only = 0;
  for_random_cases(0x5eed0007, 6, [&](const Case& c, const Plan& p) -> std::string {
    const ServiceView& t = c.services[c.request.target];
    if (!needs_plan(t)) return "";
    if (testing::never_fits_expected(c.gpus, t)) return "";
    const bool exists = brute_force_feasible(c);
    (exists ? feasible : infeasible) += 1;
    if (exists && p.outcome != Outcome::plan)
      return "brute force finds a plan, planner says " + std::string(to_string(p.outcome));
    if (!exists && p.outcome != Outcome::wait)
      return "no plan exists, planner says " + std::string(to_string(p.outcome));
    // Sleep before stop: when sleeping alone can make room somewhere, nothing is stopped
    // except the port sharers, which must be.
    if (exists && brute_force_feasible(c, /*allow_stops=*/false)) {
      ++sleep_only;
      for (const auto& a : p.actions) {
        if (a.kind == ActionKind::stop && (t.port == 0 || c.services[a.service].port != t.port)) {
          return "stopped " + c.services[a.service].id + " although sleeping alone makes room";
        }
      }
    }
    return "";
  });
  EXPECT_GT(feasible, 100);
  EXPECT_GT(infeasible, 100);
  EXPECT_GT(sleep_only, 100);
}

// Two more properties a user relies on: the plan's shape (evictions, one wait_free for
// need + headroom, then the start/wake) and that nothing is evicted when the target already fits.
TEST(PlannerProperties, PlansHaveTheDocumentedShape) {
  for_random_cases(0x5eed0008, 8, [](const Case& /*c*/, const Plan& p) -> std::string {
    if (p.outcome != Outcome::plan) return "";
    const auto n = p.actions.size();
    if (n < 2) return "too few actions";
    if (p.actions[n - 2].kind != ActionKind::wait_free) return "wait_free not second to last";
    const ActionKind last = p.actions[n - 1].kind;
    if (last != ActionKind::start && last != ActionKind::wake) return "last action is not start/wake";
    if (p.actions[n - 1].gpu != p.gpu || p.actions[n - 2].gpu != p.gpu) return "actions not on Plan::gpu";
    return "";
  });
}

TEST(PlannerProperties, NoEvictionWhenTheTargetAlreadyFitsSomewhere) {
  for_random_cases(0x5eed0009, 8, [](const Case& c, const Plan& p) -> std::string {
    const ServiceView& t = c.services[c.request.target];
    if (p.outcome != Outcome::plan || t.port != 0) return "";  // port stops are forced
    const Bytes need = testing::needed_by(t);
    bool fits_now = false;
    for (const std::size_t gp : testing::allowed_positions(c.gpus, t)) {
      const GpuView& g = c.gpus[gp];
      fits_now = fits_now || std::min(g.live_free, g.total - g.ledger) - g.headroom >= need;
    }
    if (fits_now && p.actions.size() != 2) return "evicted although the target fits without eviction";
    return "";
  });
}

// Sanity check of the test's own generator: it yields every kind of answer.
TEST(PlannerProperties, GeneratorCoversEveryOutcome) {
  std::mt19937_64 rng(0x5eed000a);
  int seen[5] = {0, 0, 0, 0, 0};
  for (int n = 0; n < kCasesPerProperty; ++n) {
    const Case c = random_case(rng, 8);
    ++seen[static_cast<int>(plan(c.gpus, c.services, c.request).outcome)];
  }
  for (int i = 0; i < 5; ++i) EXPECT_GT(seen[i], 0) << to_string(static_cast<Outcome>(i));
}

}  // namespace
}  // namespace gpumod::policy
