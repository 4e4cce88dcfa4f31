// The daemon file: listen address, state/log directories, API token, GPUs, policy tuning, and
// where (or inline) the presets and modes are.
#include <fstream>
#include <limits>
#include <sstream>

#include "config/parse.hpp"

namespace gpumod::config::detail {
namespace {

namespace fs = std::filesystem;
constexpr std::int64_t kMaxInt = std::numeric_limits<std::int64_t>::max();

const std::vector<std::string> kDaemonKeys = {
    "listen", "state_dir",   "log_dir",   "api_token", "api_token_file", "systemd_bus", "gpus",
    "policy", "presets_dir", "modes_dir", "presets",   "modes",          "watch"};
const std::vector<std::string> kGpuKeys = {"probe", "use", "sim", "sim_release_lag"};
const std::vector<std::string> kSimKeys = {"name", "memory_mb"};
const std::vector<std::string> kPolicyKeys = {
    "headroom_mb",        "vram_release_timeout", "vram_poll_interval", "health_poll_interval",
    "idle_poll_interval", "stop_grace",           "queue_max",          "default_request_timeout",
    "aging_interval",     "default_keep_alive",   "max_body_bytes",     "stall_timeout"};

// A path from the daemon file: $VAR / ~ expanded, relative to the file's directory.
std::optional<fs::path> read_path(const ReadContext& c, const YAML::Node& v, int line,
                                  const std::string& key) {
  auto s = read_string(c, v, line, key);
  if (!s) return std::nullopt;
  if (s->empty()) {
    c.error(line_of(v, line), key, "expected a path, got ''");
    return std::nullopt;
  }
  auto expanded = expand_env(*s, c.bin_dir);
  if (!expanded) {
    c.error(line_of(v, line), key, expanded.error());
    return std::nullopt;
  }
  fs::path p = expanded.value();
  if (p.is_relative()) p = c.base_dir / p;
  return p.lexically_normal();
}

void parse_gpus(const ReadContext& outer, const YAML::Node& node, DaemonFile& out) {
  DaemonSettings& d = out.settings;
  ReadContext c = outer;
  c.prefix = outer.prefix + "gpus.";
  for_each_key(
      c, node, "GPU settings (probe, use, sim, sim_release_lag)", kGpuKeys,
      [&](const std::string& key, int line, const YAML::Node& v) {
        const std::string& full = key;
        if (key == "probe") {
          if (auto s = read_choice(c, v, line, full, {"auto", "nvml", "sim"})) {
            d.probe = *s == "nvml" ? ProbeKind::nvml : *s == "sim" ? ProbeKind::sim : ProbeKind::auto_detect;
          }
        } else if (key == "use") {
          out.gpus_use_line = line;
          if (v.IsNull()) return;
          if (auto list = read_index_list(c, v, line, full)) d.gpus = std::move(*list);
        } else if (key == "sim") {
          if (!v.IsSequence() || v.size() == 0) {
            c.error(
                line_of(v, line), full,
                "expected a non-empty list of simulated GPUs such as [{name: sim0, memory_mb: 24576}], got " +
                    describe(v));
            return;
          }
          std::vector<SimGpu> gpus;
          for (std::size_t i = 0; i < v.size(); ++i) {
            const std::string entry = full + "[" + std::to_string(i) + "]";
            SimGpu gpu;
            gpu.name = "gpumod simulated GPU " + std::to_string(i);
            bool has_memory = false;
            ReadContext entry_ctx = c;
            entry_ctx.prefix = c.prefix + entry + ".";  // gpus.sim[i].
            const bool is_map =
                for_each_key(entry_ctx, v[i], "simulated GPU keys (name, memory_mb)", kSimKeys,
                             [&](const std::string& k, int l, const YAML::Node& val) {
                               if (k == "name") {
                                 if (auto s = read_string(entry_ctx, val, l, k)) gpu.name = *s;
                               } else if (k == "memory_mb") {
                                 has_memory = true;
                                 if (auto n = read_int(entry_ctx, val, l, k, 1, kMaxInt)) gpu.memory_mb = *n;
                               }
                             });
            if (is_map && !has_memory) {
              entry_ctx.error(line_of(v[i], line), "memory_mb",
                              "required key missing; expected the GPU's memory in MB");
            }
            gpus.push_back(gpu);
          }
          d.sim_gpus = std::move(gpus);
          out.sim_given = true;
        } else if (key == "sim_release_lag") {
          if (auto ms = read_duration(c, v, line, full, true)) d.sim_release_lag = *ms;
        }
      });
}

void parse_policy(const ReadContext& outer, const YAML::Node& node, PolicySettings& p) {
  ReadContext c = outer;
  c.prefix = outer.prefix + "policy.";
  for_each_key(
      c, node, "policy settings", kPolicyKeys, [&](const std::string& key, int line, const YAML::Node& v) {
        const std::string& full = key;
        auto duration = [&](std::chrono::milliseconds& field, bool allow_zero) {
          if (auto ms = read_duration(c, v, line, full, allow_zero)) field = *ms;
        };
        if (key == "headroom_mb") {
          if (auto n = read_int(c, v, line, full, 0, kMaxInt)) p.headroom_mb = *n;
        } else if (key == "queue_max") {
          if (auto n = read_int(c, v, line, full, 1, 1'000'000)) p.queue_max = static_cast<std::size_t>(*n);
        } else if (key == "max_body_bytes") {
          if (auto n = read_int(c, v, line, full, 1024, kMaxInt)) p.max_body_bytes = *n;
        } else if (key == "vram_release_timeout") {
          duration(p.vram_release_timeout, false);
        } else if (key == "vram_poll_interval") {
          duration(p.vram_poll_interval, false);
        } else if (key == "health_poll_interval") {
          duration(p.health_poll_interval, false);
        } else if (key == "idle_poll_interval") {
          duration(p.idle_poll_interval, false);
        } else if (key == "stop_grace") {
          duration(p.stop_grace, false);
        } else if (key == "default_request_timeout") {
          duration(p.default_request_timeout, false);
        } else if (key == "aging_interval") {
          duration(p.aging_interval, false);
        } else if (key == "stall_timeout") {
          // Above the loop's idle turn (0.5 s) with room to spare, or idle would look stuck.
          if (auto ms = read_duration(c, v, line, full, false)) {
            if (*ms < std::chrono::seconds(2)) {
              c.error(line, full, "must be at least 2s (the scheduler loop turns every 0.5 s when idle)");
            } else {
              p.stall_timeout = *ms;
            }
          }
        } else if (key == "default_keep_alive") {
          if (auto ms = read_duration(c, v, line, full, true)) {
            p.default_keep_alive = std::chrono::ceil<std::chrono::seconds>(*ms);
          }
        }
      });
}

std::optional<std::string> read_token_file(const ReadContext& c, const fs::path& path, int line) {
  std::ifstream in(path);
  if (!in) {
    c.error(line, "api_token_file", "cannot read '" + path.string() + "'; expected a file holding the token");
    return std::nullopt;
  }
  std::stringstream buf;
  buf << in.rdbuf();
  std::string token = buf.str();
  const auto first = token.find_first_not_of(" \t\r\n");
  const auto last = token.find_last_not_of(" \t\r\n");
  if (first == std::string::npos) {
    c.error(line, "api_token_file", "'" + path.string() + "' is empty; expected the token");
    return std::nullopt;
  }
  return token.substr(first, last - first + 1);
}

}  // namespace

void parse_daemon(const ReadContext& c, const YAML::Node& root, DaemonFile& out) {
  DaemonSettings& d = out.settings;
  d.loc = SourceLoc{c.file, line_of(root, 1)};
  if (root.IsNull()) return;  // an empty daemon file: all defaults
  int token_line = 0;
  int token_file_line = 0;
  for_each_key(c, root, "daemon settings", kDaemonKeys,
               [&](const std::string& key, int line, const YAML::Node& v) {
                 if (key == "listen") {
                   out.listen_line = line;
                   auto s = read_string(c, v, line, key);
                   if (!s) return;
                   auto hp = parse_host_port(*s);
                   if (!hp) {
                     c.error(line_of(v, line), key, hp.error());
                     return;
                   }
                   d.listen_host = hp.value().host;
                   d.listen_port = hp.value().port;
                 } else if (key == "watch") {
                   if (auto b = read_bool(c, v, line, key)) d.watch = *b;
                 } else if (key == "state_dir") {
                   if (auto p = read_path(c, v, line, key)) {
                     d.state_dir = *p;
                     out.state_dir_given = true;
                   }
                 } else if (key == "log_dir") {
                   if (auto p = read_path(c, v, line, key)) {
                     d.log_dir = *p;
                     out.log_dir_given = true;
                   }
                 } else if (key == "api_token") {
                   token_line = line;
                   auto s = read_string(c, v, line, key);
                   if (!s) return;
                   if (s->empty()) {
                     c.error(line_of(v, line), key, "expected a non-empty token");
                     return;
                   }
                   d.api_token = *s;
                 } else if (key == "api_token_file") {
                   token_file_line = line;
                   if (auto p = read_path(c, v, line, key)) {
                     if (auto token = read_token_file(c, *p, line_of(v, line))) d.api_token = *token;
                   }
                 } else if (key == "systemd_bus") {
                   if (auto s = read_choice(c, v, line, key, {"user", "system"})) d.systemd_bus = *s;
                 } else if (key == "gpus") {
                   parse_gpus(c, v, out);
                 } else if (key == "policy") {
                   if (!v.IsNull()) parse_policy(c, v, d.policy);
                 } else if (key == "presets_dir") {
                   out.presets_dir_line = line;
                   out.presets_dir = read_path(c, v, line, key);
                 } else if (key == "modes_dir") {
                   out.modes_dir_line = line;
                   out.modes_dir = read_path(c, v, line, key);
                 } else if (key == "presets" || key == "modes") {
                   if (v.IsNull()) return;
                   if (!v.IsSequence()) {
                     c.error(line_of(v, line), key,
                             "expected a list of " + key +
                                 " (mappings with the same keys as their files), got " + describe(v));
                     return;
                   }
                   for (std::size_t i = 0; i < v.size(); ++i) {
                     ReadContext entry = c;
                     entry.prefix = c.prefix + key + "[" + std::to_string(i) + "].";
                     if (key == "presets") {
                       if (auto p = parse_preset(entry, v[i]))
                         out.presets.push_back(PresetEntry{std::move(*p), entry.prefix});
                     } else {
                       if (auto m = parse_mode(entry, v[i]))
                         out.modes.push_back(ModeEntry{std::move(*m), entry.prefix});
                     }
                   }
                 }
               });
  if (token_line > 0 && token_file_line > 0) {
    c.error(token_file_line, "api_token_file",
            "both api_token (line " + std::to_string(token_line) +
                ") and api_token_file are given; expected one");
  }
}

}  // namespace gpumod::config::detail
