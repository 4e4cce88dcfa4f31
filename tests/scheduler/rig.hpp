// A test rig around SchedulerCore: the fakes, a ManualClock, and an inline executor that runs
// every effect the core emits (through the real EffectRunner) and feeds the completion back,
// until the core is quiet. Time only moves when a test says so.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "scheduler/core.hpp"
#include "scheduler/effects.hpp"
#include "tests/scheduler/fakes.hpp"

namespace gpumod::scheduler::testing {

using namespace std::chrono_literals;

inline config::Preset preset(const std::string& id, std::int64_t vram_mb, int port, int priority = 50) {
  config::Preset p;
  p.id = id;
  p.name = id;
  p.driver = config::Driver::generic;
  p.port = port;
  p.vram_mb = vram_mb;
  p.priority = priority;
  p.model_id = id + "-model";
  p.startup_timeout = std::chrono::seconds(30);
  return p;
}

inline config::Preset sleepy(config::Preset p, std::int64_t residual_mb) {
  p.supports_sleep = true;
  p.sleep_mode = config::SleepMode::l1;
  p.sleep_vram_mb = residual_mb;
  return p;
}

inline config::Mode mode(const std::string& id, std::vector<std::string> services) {
  config::Mode m;
  m.id = id;
  m.name = id;
  m.services = std::move(services);
  return m;
}

inline config::Config make_config(std::vector<config::Preset> presets, std::vector<config::Mode> modes = {}) {
  config::Config c;
  c.presets = std::move(presets);
  c.modes = std::move(modes);
  c.source = "test";
  c.daemon.policy.headroom_mb = 0;
  return c;
}

class Rig {
 public:
  Rig(config::Config cfg, std::vector<std::int64_t> gpu_totals, exporter::Metrics* metrics = nullptr)
      : world(std::move(gpu_totals)), runner(world), probe(world) {
    for (const auto& p : cfg.presets) {
      Behavior b;
      b.bytes = p.vram_mb * kMiB;
      b.sleep_bytes = p.sleep_residual_mb() * kMiB;
      world.set_behavior(p.id, b);
    }
    deps.clock = &clock;
    deps.probe = &probe;
    deps.process_runner = &runner;
    deps.make_driver = [this](const config::Preset& p) { return std::make_unique<FakeDriver>(world, p.id); };
    deps.make_launch = [](const config::Preset& p, int gpu) -> Result<backends::LaunchSpec> {
      backends::LaunchSpec s;
      s.service_id = p.id;
      s.argv = {"fake-server", p.id};
      s.env["GPUMOD_TEST_GPU"] = std::to_string(gpu);
      return s;
    };
    exec = std::make_unique<EffectRunner>(deps, "");
    core = std::make_unique<SchedulerCore>(std::move(cfg), metrics);
    core->tick(now());  // first poll: learn the GPUs
    settle();
  }

  TimePoint now() const { return clock.now(); }

  // Run effects until the core emits none.
  void settle() {
    for (int round = 0; round < 100; ++round) {
      CoreOutput out = core->take_output();
      for (auto& c : out.requests) outcomes[c.request_id] = c.outcome;
      for (auto& a : out.actions) actions[a.token] = a.result;
      for (auto& m : out.modes) modes[m.token] = m.result;
      for (auto& r : out.reloads) reloads[r.token] = r.result;
      for (auto& e : out.events) events.push_back(std::move(e));
      if (out.effects.empty()) return;
      for (const auto& e : out.effects) {
        effects_seen.push_back(e.kind);
        switch (e.kind) {
          case Effect::Kind::poll:
            core->on_poll_done(exec->poll(e), now());
            break;
          case Effect::Kind::persist:
            persisted = e.text;
            break;
          default:
            if (hold_ops) {
              held.push_back(e);
            } else {
              core->on_op_done(exec->run(e), now());
            }
            break;
        }
      }
    }
    FAIL() << "core did not settle";
  }

  // Advance time in steps, ticking and settling after each.
  void run_for(Clock::Duration total, Clock::Duration step = 50ms) {
    for (Clock::Duration t{}; t < total; t += step) {
      clock.advance(step);
      core->tick(now());
      settle();
    }
  }
  // Advance until pred() holds (or `limit` passes). Returns whether it held.
  bool run_until(const std::function<bool()>& pred, Clock::Duration limit = 120s,
                 Clock::Duration step = 50ms) {
    for (Clock::Duration t{}; t < limit; t += step) {
      if (pred()) return true;
      clock.advance(step);
      core->tick(now());
      settle();
    }
    return pred();
  }

  void submit(const std::string& id, const std::string& model, std::optional<int> priority = std::nullopt,
              std::optional<std::chrono::milliseconds> timeout = std::nullopt, bool lease = false) {
    RequestSpec s;
    s.request_id = id;
    s.model = model;
    s.priority = priority;
    s.timeout = timeout;
    s.hold_lease = lease;
    core->submit(std::move(s), now());
    settle();
  }
  // A lease through the service's gate, as the shell's fast path takes it (nothing while the
  // gate is closed).
  std::optional<LeaseId> gate_lease(const std::string& svc) {
    const auto slot = core->gates().slot_of(svc);
    if (!slot) return std::nullopt;
    return core->gates().acquire(*slot);
  }
  // Gives a gate lease back as the shell does: an emptied gate the core waits for is reported.
  void give_back(LeaseId lease) {
    const auto r = core->gates().release(lease);
    if (r.notify) core->on_gate_drained(r.slot, now());
    settle();
  }
  LeaseGate& gate(const std::string& svc) { return *core->gates().gate(core->gates().slot_of(svc).value()); }

  bool done(const std::string& id) const { return outcomes.count(id) != 0; }
  const RequestOutcome& outcome(const std::string& id) { return outcomes.at(id); }
  bool ready(const std::string& svc) const { return core->state_of(svc) == policy::SvcState::ready; }
  policy::SvcState state(const std::string& svc) const { return core->state_of(svc); }

  std::uint64_t action(const std::string& svc, ServiceAction a) {
    const std::uint64_t t = next_token++;
    core->service_action(t, svc, a, now());
    settle();
    return t;
  }
  std::uint64_t switch_mode(const std::string& mode) {
    const std::uint64_t t = next_token++;
    core->switch_mode(t, mode, now());
    settle();
    return t;
  }
  std::uint64_t reload(const config::LoadResult& r) {
    const std::uint64_t t = next_token++;
    core->reload(t, r, now());
    settle();
    return t;
  }

  ManualClock clock;
  FakeWorld world;
  FakeRunner runner;
  FakeProbe probe;
  Deps deps;
  std::unique_ptr<EffectRunner> exec;
  std::unique_ptr<SchedulerCore> core;
  std::map<std::string, RequestOutcome> outcomes;
  std::map<std::uint64_t, ActionResult> actions;
  std::map<std::uint64_t, ModeResult> modes;
  std::map<std::uint64_t, ReloadResult> reloads;
  std::vector<SchedEvent> events;  // every event the core reported, in order
  std::vector<Effect::Kind> effects_seen;
  std::string persisted;
  bool hold_ops = false;  // keep operations instead of running them (to look at them)
  std::vector<Effect> held;
  std::uint64_t next_token = 1;
};

}  // namespace gpumod::scheduler::testing
