// Checks that need the whole config: ids unique, modes consistent, GPU constraints satisfiable,
// the API not exposed without a token.
#include <algorithm>
#include <map>

#include "config/parse.hpp"
#include "config/unit_vars.hpp"

namespace gpumod::config::detail {
namespace {

std::string at(const SourceLoc& loc) {
  return loc.file + ":" + std::to_string(loc.line);
}

int key_line(const Preset& p, const std::string& key) {
  auto it = p.key_locs.find(key);
  return it != p.key_locs.end() ? it->second.line : p.loc.line;
}

int key_line(const Mode& m, const std::string& key) {
  auto it = m.key_locs.find(key);
  return it != m.key_locs.end() ? it->second.line : m.loc.line;
}

void preset_error(Diagnostics& diag, const PresetEntry& e, const std::string& key,
                  const std::string& message) {
  diag.error(e.preset.loc.file, key_line(e.preset, key), e.prefix + key, message);
}

void check_unique_ids(const CheckInput& in, Diagnostics& diag) {
  std::map<std::string, const Preset*> presets;
  for (const auto& e : *in.presets) {
    auto [it, inserted] = presets.emplace(e.preset.id, &e.preset);
    if (!inserted) {
      preset_error(diag, e, "id",
                   "duplicate preset id '" + e.preset.id + "': also defined at " + at(it->second->loc) +
                       "; expected each preset id once");
    }
  }
  std::map<std::string, const Mode*> modes;
  for (const auto& e : *in.modes) {
    auto [it, inserted] = modes.emplace(e.mode.id, &e.mode);
    if (!inserted) {
      diag.error(e.mode.loc.file, key_line(e.mode, "id"), e.prefix + "id",
                 "duplicate mode id '" + e.mode.id + "': also defined at " + at(it->second->loc) +
                     "; expected each mode id once");
    }
  }
  // Aliases are names clients ask for: each must lead to exactly one service.
  std::map<std::string, const Preset*> alias_owner;
  for (const auto& e : *in.presets) {
    for (const auto& alias : e.preset.aliases) {
      auto id_it = presets.find(alias);
      if (id_it != presets.end() && id_it->second->id != e.preset.id) {
        preset_error(diag, e, "aliases",
                     "alias '" + alias + "' is the id of another preset (" + at(id_it->second->loc) +
                         "); expected a name no other service uses");
        continue;
      }
      auto [it, inserted] = alias_owner.emplace(alias, &e.preset);
      if (!inserted && it->second->id != e.preset.id) {
        preset_error(diag, e, "aliases",
                     "alias '" + alias + "' is also an alias of preset '" + it->second->id + "' (" +
                         at(it->second->loc) + "); expected a name no other service uses");
      }
    }
  }
}

void check_modes(const CheckInput& in, Diagnostics& diag) {
  std::map<std::string, const Preset*> by_id;
  std::vector<std::string> ids;
  for (const auto& e : *in.presets) {
    if (by_id.emplace(e.preset.id, &e.preset).second) ids.push_back(e.preset.id);
  }
  for (const auto& e : *in.modes) {
    const Mode& m = e.mode;
    std::map<int, const Preset*> port_owner;
    for (std::size_t i = 0; i < m.services.size(); ++i) {
      const std::string key = "services[" + std::to_string(i) + "]";
      const int line = key_line(m, key);
      const std::string& id = m.services[i];
      auto it = by_id.find(id);
      if (it == by_id.end()) {
        std::string known =
            ids.size() <= 12 ? join(ids, ", ") : join({ids.begin(), ids.begin() + 12}, ", ") + ", ...";
        diag.error(m.loc.file, line, e.prefix + key,
                   "mode '" + m.id + "' names service '" + id +
                       "', but no preset has that id; expected one of: " +
                       (known.empty() ? "(no presets loaded)" : known));
        continue;
      }
      const Preset& p = *it->second;
      if (p.port == 0) continue;  // its own port error is already reported
      auto [owner, inserted] = port_owner.emplace(p.port, &p);
      if (!inserted && owner->second->id != p.id) {
        diag.error(m.loc.file, line, e.prefix + key,
                   "services '" + owner->second->id + "' (" + at(owner->second->loc) + ") and '" + p.id +
                       "' (" + at(p.loc) + ") both use port " + std::to_string(p.port) +
                       "; expected the services of one mode on different ports");
      }
    }
  }
}

// Which GPUs a preset may use: its own list, else the daemon's `use`, else all.
std::vector<int> allowed_gpus(const Preset& p, const DaemonSettings& d, std::size_t gpu_count) {
  if (!p.gpus.empty()) return p.gpus;
  if (!d.gpus.empty()) return d.gpus;
  std::vector<int> all;
  for (std::size_t i = 0; i < gpu_count; ++i) all.push_back(static_cast<int>(i));
  return all;
}

void check_gpus(const CheckInput& in, Diagnostics& diag) {
  const DaemonFile& df = *in.daemon;
  const DaemonSettings& d = df.settings;
  // The simulated GPUs are the only capacities known before the daemon runs: check against them
  // when they are used (probe sim) or spelled out as the fallback of probe auto. With NVML the
  // real cards are only known at run time, where the planner rejects what never fits.
  const bool sim_known = d.probe == ProbeKind::sim || (d.probe == ProbeKind::auto_detect && df.sim_given);
  const std::size_t sim_count = d.sim_gpus.size();
  if (sim_known) {
    for (std::size_t i = 0; i < d.gpus.size(); ++i) {
      if (static_cast<std::size_t>(d.gpus[i]) >= sim_count) {
        diag.error(d.loc.file, df.gpus_use_line, "gpus.use[" + std::to_string(i) + "]",
                   "GPU " + std::to_string(d.gpus[i]) + " is not configured; expected an index below " +
                       std::to_string(sim_count) + " (gpus.sim lists " + std::to_string(sim_count) + ")");
      }
    }
  }
  for (const auto& e : *in.presets) {
    const Preset& p = e.preset;
    bool gpus_ok = true;
    for (int g : p.gpus) {
      if (!d.gpus.empty() && std::find(d.gpus.begin(), d.gpus.end(), g) == d.gpus.end()) {
        std::vector<std::string> use;
        for (int u : d.gpus) use.push_back(std::to_string(u));
        preset_error(diag, e, "gpus",
                     "GPU " + std::to_string(g) +
                         " is not among the GPUs gpumod may use; expected one of gpus.use: [" +
                         join(use, ", ") + "]");
        gpus_ok = false;
      } else if (sim_known && static_cast<std::size_t>(g) >= sim_count) {
        preset_error(diag, e, "gpus",
                     "GPU " + std::to_string(g) + " is not configured; expected an index below " +
                         std::to_string(sim_count) + " (the simulated GPUs in gpus.sim)");
        gpus_ok = false;
      }
    }
    if (!sim_known || !gpus_ok || p.vram_mb <= 0) continue;
    std::int64_t best = -1;
    int best_gpu = -1;
    for (int g : allowed_gpus(p, d, sim_count)) {
      if (g < 0 || static_cast<std::size_t>(g) >= sim_count) continue;
      const std::int64_t usable = d.sim_gpus[static_cast<std::size_t>(g)].memory_mb - d.policy.headroom_mb;
      if (usable > best) {
        best = usable;
        best_gpu = g;
      }
    }
    if (best_gpu >= 0 && p.vram_mb > best) {
      const SimGpu& gpu = d.sim_gpus[static_cast<std::size_t>(best_gpu)];
      preset_error(diag, e, "vram_mb",
                   "needs " + std::to_string(p.vram_mb) +
                       " MB, more than any GPU it may use offers: the largest is GPU " +
                       std::to_string(best_gpu) + " ('" + gpu.name + "', " + std::to_string(gpu.memory_mb) +
                       " MB minus " + std::to_string(d.policy.headroom_mb) + " MB headroom = " +
                       std::to_string(best) + " MB); expected at most " + std::to_string(best) + " MB");
    }
  }
  if (!sim_known) return;
  // A mode whose services together exceed every simulated GPU can never be fully up.
  std::int64_t total = 0;
  for (const auto& g : d.sim_gpus) total += g.memory_mb - d.policy.headroom_mb;
  for (const auto& e : *in.modes) {
    std::int64_t sum = 0;
    for (const auto& id : e.mode.services) {
      for (const auto& pe : *in.presets) {
        if (pe.preset.id == id) {
          sum += pe.preset.vram_mb;
          break;
        }
      }
    }
    if (sum > total) {
      diag.warning(e.mode.loc.file, key_line(e.mode, "services"), e.prefix + "services",
                   "mode '" + e.mode.id + "' needs " + std::to_string(sum) + " MB together, more than the " +
                       std::to_string(total) +
                       " MB all simulated GPUs offer after headroom; it can never be fully up");
    }
  }
}

void check_listen(const CheckInput& in, Diagnostics& diag) {
  const DaemonSettings& d = in.daemon->settings;
  if (!is_loopback_host(d.listen_host) && !d.api_token) {
    diag.error(in.listen_file, in.listen_line, "listen",
               "'" + d.listen_host +
                   "' is not a loopback address and no api_token is set; expected api_token "
                   "(or api_token_file) before the API may listen beyond this host");
  }
  if (d.listen_port == 0) return;
  for (const auto& e : *in.presets) {
    if (e.preset.port == d.listen_port) {
      preset_error(diag, e, "port",
                   "port " + std::to_string(e.preset.port) + " is gpumod's own listen port (" +
                       in.listen_file + "); expected another port");
    }
  }
}

void warn_unused_unit_vars(const CheckInput& in, Diagnostics& diag) {
  for (const auto& e : *in.presets) {
    const Preset& p = e.preset;
    const auto& used = unit_vars_used_by(p.driver);
    for (const auto& [name, value] : p.unit_vars) {
      if (used.count(name) != 0) continue;
      const std::vector<std::string> names(used.begin(), used.end());
      diag.warning(p.loc.file, key_line(p, "unit_vars." + name), e.prefix + "unit_vars." + name,
                   std::string("not used by the ") + to_string(p.driver) +
                       " command renderer (it reads: " + join(names, ", ") + ")");
    }
  }
}

}  // namespace

void cross_check(const CheckInput& in, Diagnostics& diag) {
  check_unique_ids(in, diag);
  check_modes(in, diag);
  check_gpus(in, diag);
  check_listen(in, diag);
  warn_unused_unit_vars(in, diag);
}

}  // namespace gpumod::config::detail
