#include "scheduler/effects.hpp"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "backends/run_state.hpp"

namespace gpumod::scheduler {

const char* to_string(Effect::Kind k) {
  switch (k) {
    case Effect::Kind::start:
      return "start";
    case Effect::Kind::check_health:
      return "check_health";
    case Effect::Kind::activate:
      return "activate";
    case Effect::Kind::sleep:
      return "sleep";
    case Effect::Kind::wake:
      return "wake";
    case Effect::Kind::stop:
      return "stop";
    case Effect::Kind::poll:
      return "poll";
    case Effect::Kind::verify:
      return "verify";
    case Effect::Kind::persist:
      return "persist";
  }
  return "unknown";
}

EffectRunner::EffectRunner(const Deps& deps, std::filesystem::path state_dir)
    : deps_(deps), state_dir_(std::move(state_dir)) {}

backends::Runner* EffectRunner::runner(const config::Preset& p) {
  return p.runner == config::RunnerKind::systemd ? deps_.systemd_runner : deps_.process_runner;
}

backends::Driver* EffectRunner::driver(const Effect& e) {
  std::lock_guard<std::mutex> lock(drivers_mu_);
  auto& slot = drivers_[e.service];
  if (slot.first != e.preset || !slot.second) {  // first use, or the preset changed on reload
    slot.first = e.preset;
    slot.second =
        deps_.make_driver ? std::shared_ptr<backends::Driver>(deps_.make_driver(*e.preset)) : nullptr;
  }
  return slot.second.get();
}

OpDone EffectRunner::run(const Effect& e, const backends::Runner::StopSignalled& stop_signalled) {
  OpDone d;
  d.op = e.op;
  auto fail = [&](std::string msg) {
    d.ok = false;
    d.message = std::move(msg);
    return d;
  };
  if (!e.preset) return fail("no preset for " + e.service);
  const config::Preset& p = *e.preset;
  try {
    switch (e.kind) {
      case Effect::Kind::start: {
        backends::Runner* r = runner(p);
        if (r == nullptr)
          return fail(std::string("no ") + config::to_string(p.runner) + " runner is available");
        if (backends::Driver* drv = driver(e)) {
          if (auto pre = drv->preflight(e.gpu_free_bytes, e.gpu_total_bytes); !pre) return fail(pre.error());
        }
        if (deps_.port_listeners && p.port > 0) {
          if (const auto held = deps_.port_listeners(p.port, {}); !held.empty()) {
            return fail("port " + std::to_string(p.port) + " is in use by " + backends::describe(held) +
                        ", which gpumod did not start; stop it or give '" + p.id + "' another port");
          }
        }
        if (!deps_.make_launch) return fail("no launch builder configured");
        auto spec = deps_.make_launch(p, e.gpu);
        if (!spec) return fail("cannot build the command: " + spec.error());
        auto run = r->start(*spec);
        if (!run) return fail(run.error());
        d.run = *run;
        return d;
      }
      case Effect::Kind::check_health:
      case Effect::Kind::verify: {
        backends::Driver* drv = driver(e);
        if (drv == nullptr) return fail("no driver for " + e.service);
        const auto h = drv->health();
        d.health = h.health;
        d.health_detail = h.detail;
        if (e.kind == Effect::Kind::check_health && h.health == backends::Health::ready) {
          if (auto stranger = foreign_listener(p); !stranger.empty()) return fail(stranger);
        }
        if (e.kind == Effect::Kind::verify && h.health == backends::Health::ready && p.can_sleep()) {
          auto s = drv->is_sleeping();
          d.sleeping = s.ok() && *s;
        }
        return d;
      }
      case Effect::Kind::activate:
      case Effect::Kind::sleep:
      case Effect::Kind::wake: {
        backends::Driver* drv = driver(e);
        if (drv == nullptr) return fail("no driver for " + e.service);
        Result<void> r = e.kind == Effect::Kind::activate ? drv->activate(e.timeout)
                         : e.kind == Effect::Kind::sleep  ? drv->sleep()
                                                          : drv->wake();
        if (!r) return fail(r.error());
        return d;
      }
      case Effect::Kind::stop: {
        backends::Runner* r = runner(p);
        if (r == nullptr)
          return fail(std::string("no ") + config::to_string(p.runner) + " runner is available");
        if (auto s = r->stop(e.service, e.timeout, stop_signalled); !s) return fail(s.error());
        return d;
      }
      case Effect::Kind::poll:
      case Effect::Kind::persist:
        return fail("not an operation");
    }
  } catch (const std::exception& ex) {
    return fail(std::string("backend error: ") + ex.what());
  }
  return fail("unknown effect");
}

std::string EffectRunner::foreign_listener(const config::Preset& p) {
  if (!deps_.port_listeners || p.port <= 0 || p.runner != config::RunnerKind::process) return "";
  backends::Runner* r = runner(p);
  if (r == nullptr) return "";
  const std::vector<int> own = r->pids(p.id);
  const auto held = deps_.port_listeners(p.port, own);
  if (held.empty()) return "";  // no listener to be seen (another namespace, say): nothing to judge
  for (const auto& l : held) {
    if (std::find(own.begin(), own.end(), l.pid) != own.end()) return "";
  }
  return "port " + std::to_string(p.port) + " answers, but it is held by " + backends::describe(held) +
         ", not by a process of '" + p.id + "'; gpumod will not call a stranger ready";
}

PollDone EffectRunner::poll(const Effect& e) {
  PollDone d;
  d.op = e.op;
  try {
    if (deps_.probe != nullptr) {
      d.sample = deps_.probe->sample();
    } else {
      d.sample = Error{"no GPU probe"};
    }
    for (const auto& p : e.services) {
      backends::Runner* r = runner(*p);
      if (r == nullptr) continue;
      if (auto exit = r->poll_exit(p->id)) d.exits.emplace_back(p->id, *exit);
      d.pids[p->id] = r->pids(p->id);
    }
  } catch (const std::exception& ex) {
    d.sample = Error{std::string("probe error: ") + ex.what()};
  }
  return d;
}

Result<void> EffectRunner::persist(const std::string& text) {
  if (state_dir_.empty()) return {};
  return backends::run_state::write_file_atomic(state_file(), text);
}

std::string read_state_file(const std::filesystem::path& state_dir) {
  std::ifstream f(state_dir / "scheduler.json");
  if (!f) return "";
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace gpumod::scheduler
