// Presets (one service each) and modes: the predecessor's keys plus gpumod's own.
#include <algorithm>
#include <cctype>
#include <limits>

#include "config/parse.hpp"

namespace gpumod::config::detail {
namespace {

constexpr std::int64_t kMaxInt = std::numeric_limits<std::int64_t>::max();

const std::vector<std::string> kPresetKeys = {"id",
                                              "name",
                                              "driver",
                                              "port",
                                              "vram_mb",
                                              "context_size",
                                              "kv_cache_per_1k",
                                              "model_id",
                                              "model_path",
                                              "health_endpoint",
                                              "startup_timeout",
                                              "supports_sleep",
                                              "sleep_mode",
                                              "unit_template",
                                              "unit_vars",
                                              "runner",
                                              "cmd",
                                              "env",
                                              "priority",
                                              "pinned",
                                              "keep_alive",
                                              "gpus",
                                              "aliases",
                                              "models",
                                              "sleep_vram_mb",
                                              "sleep_url",
                                              "wake_url"};
const std::vector<std::string> kPresetRequired = {"id", "driver", "port", "vram_mb"};
const std::vector<std::string> kModeKeys = {"id", "name", "description", "services"};

const std::vector<std::string> kDrivers = {"vllm", "llamacpp", "fastapi", "docker", "generic"};
const std::vector<std::string> kSleepModes = {"none", "l1", "l2", "router"};
const std::vector<std::string> kRunners = {"process", "systemd"};

const char* kIdRule = "letters, digits, '.', '_' or '-', starting with a letter or digit";

bool valid_id(const std::string& id) {
  if (id.empty() || id.size() > 128 || std::isalnum(static_cast<unsigned char>(id[0])) == 0) return false;
  return std::all_of(id.begin(), id.end(), [](unsigned char ch) {
    return std::isalnum(ch) != 0 || ch == '.' || ch == '_' || ch == '-';
  });
}

Driver driver_from(const std::string& s) {
  if (s == "vllm") return Driver::vllm;
  if (s == "llamacpp") return Driver::llamacpp;
  if (s == "fastapi") return Driver::fastapi;
  if (s == "docker") return Driver::docker;
  return Driver::generic;
}

SleepMode sleep_mode_from(const std::string& s) {
  if (s == "l1") return SleepMode::l1;
  if (s == "l2") return SleepMode::l2;
  if (s == "router") return SleepMode::router;
  return SleepMode::none;
}

std::optional<std::string> read_id(const ReadContext& c, const YAML::Node& v, int line,
                                   const std::string& key) {
  auto id = read_string(c, v, line, key);
  if (!id) return std::nullopt;
  if (!valid_id(*id)) {
    c.error(line_of(v, line), key, std::string("expected an id of ") + kIdRule + ", got '" + *id + "'");
    return std::nullopt;
  }
  return id;
}

}  // namespace

std::optional<Preset> parse_preset(const ReadContext& c, const YAML::Node& node) {
  Preset p;
  p.loc = SourceLoc{c.file, line_of(node, 1)};
  bool id_ok = false;
  bool have_name = false;
  std::optional<bool> supports_sleep;
  std::vector<std::string> seen;

  const bool is_map = for_each_key(
      c, node, "preset keys", kPresetKeys, [&](const std::string& key, int line, const YAML::Node& v) {
        seen.push_back(key);
        p.key_locs[key] = SourceLoc{c.file, line};
        const bool required =
            std::find(kPresetRequired.begin(), kPresetRequired.end(), key) != kPresetRequired.end();
        if (v.IsNull() && !required) return;  // "key:" with no value means "not given"
        if (key == "id") {
          if (auto id = read_id(c, v, line, key)) {
            p.id = *id;
            id_ok = true;
          }
        } else if (key == "name") {
          if (auto s = read_string(c, v, line, key)) {
            p.name = *s;
            have_name = true;
          }
        } else if (key == "driver") {
          if (auto s = read_choice(c, v, line, key, kDrivers)) p.driver = driver_from(*s);
        } else if (key == "port") {
          if (auto n = read_int(c, v, line, key, 1, 65535)) p.port = static_cast<int>(*n);
        } else if (key == "vram_mb") {
          if (auto n = read_int(c, v, line, key, 1, kMaxInt)) p.vram_mb = *n;
        } else if (key == "context_size") {
          if (auto n = read_int(c, v, line, key, 1, std::numeric_limits<int>::max()))
            p.context_size = static_cast<int>(*n);
        } else if (key == "kv_cache_per_1k") {
          if (auto d = read_number(c, v, line, key, 0)) p.kv_cache_per_1k = *d;
        } else if (key == "model_id") {
          if (auto s = read_string(c, v, line, key)) p.model_id = *s;
        } else if (key == "model_path") {
          if (auto s = read_string(c, v, line, key)) {
            auto expanded = expand_env(*s, c.bin_dir);
            if (expanded) {
              p.model_path = expanded.value();
            } else {
              c.error(line_of(v, line), key, expanded.error());
            }
          }
        } else if (key == "health_endpoint") {
          if (auto s = read_string(c, v, line, key)) {
            if (s->empty() ||
                ((*s)[0] != '/' && s->rfind("http://", 0) != 0 && s->rfind("https://", 0) != 0)) {
              c.error(line_of(v, line), key,
                      "expected a path starting with '/' (or an http:// URL), got '" + *s + "'");
            } else {
              p.health_endpoint = *s;
            }
          }
        } else if (key == "startup_timeout") {
          if (auto d = read_duration(c, v, line, key, false)) {
            p.startup_timeout = std::chrono::ceil<std::chrono::seconds>(*d);  // whole seconds, rounded up
          }
        } else if (key == "supports_sleep") {
          supports_sleep = read_bool(c, v, line, key);
        } else if (key == "sleep_mode") {
          if (auto s = read_choice(c, v, line, key, kSleepModes)) p.sleep_mode = sleep_mode_from(*s);
        } else if (key == "unit_template") {
          if (auto s = read_string(c, v, line, key)) p.unit_template = *s;
        } else if (key == "unit_vars") {
          if (auto entries = read_scalar_map(c, v, line, key)) {
            for (const auto& e : *entries) {
              auto expanded = expand_env(e.value, c.bin_dir);
              if (!expanded) {
                c.error(e.line, "unit_vars." + e.key, expanded.error());
                continue;
              }
              p.unit_vars[e.key] = expanded.value();
              p.key_locs["unit_vars." + e.key] = SourceLoc{c.file, e.line};
            }
          }
        } else if (key == "runner") {
          if (auto s = read_choice(c, v, line, key, kRunners)) {
            p.runner = *s == "systemd" ? RunnerKind::systemd : RunnerKind::process;
          }
        } else if (key == "cmd") {
          if (v.IsScalar()) {
            c.error(
                line_of(v, line), key,
                "expected a list of strings (the argv; no shell is used), e.g. [\"/usr/bin/llama-server\", "
                "\"--port\", \"7070\"], got the string '" +
                    v.Scalar() + "'");
            return;
          }
          if (auto argv = read_string_list(c, v, line, key)) {
            if (argv->empty()) {
              c.error(
                  line_of(v, line), key,
                  "expected a non-empty list (the argv); leave cmd out to render the command from driver and "
                  "unit_vars");
              return;
            }
            if ((*argv)[0].empty())
              c.error(line_of(v[0], line), "cmd[0]", "expected the program to run, got ''");
            for (auto& arg : *argv) arg = expand_bin_dir(arg, c.bin_dir);
            p.cmd = std::move(*argv);
          }
        } else if (key == "env") {
          if (auto entries = read_scalar_map(c, v, line, key)) {
            for (const auto& e : *entries) p.env[e.key] = e.value;
          }
        } else if (key == "priority") {
          if (auto n = read_int(c, v, line, key, 0, 100)) p.priority = static_cast<int>(*n);
        } else if (key == "pinned") {
          if (auto b = read_bool(c, v, line, key)) p.pinned = *b;
        } else if (key == "keep_alive") {
          if (auto d = read_duration(c, v, line, key, true))
            p.keep_alive = std::chrono::ceil<std::chrono::seconds>(*d);
        } else if (key == "gpus") {
          if (auto list = read_index_list(c, v, line, key)) p.gpus = std::move(*list);
        } else if (key == "aliases" || key == "models") {
          if (auto list = read_string_list(c, v, line, key)) {
            for (std::size_t i = 0; i < list->size(); ++i) {
              if ((*list)[i].empty())
                c.error(line_of(v[i], line), key + "[" + std::to_string(i) + "]", "expected a name, got ''");
            }
            (key == "aliases" ? p.aliases : p.models) = std::move(*list);
          }
        } else if (key == "sleep_vram_mb") {
          if (auto n = read_int(c, v, line, key, 0, kMaxInt)) p.sleep_vram_mb = *n;
        } else if (key == "sleep_url" || key == "wake_url") {
          if (auto s = read_string(c, v, line, key)) (key == "sleep_url" ? p.sleep_url : p.wake_url) = *s;
        }
      });
  if (!is_map) return std::nullopt;

  auto given = [&](const std::string& key) { return std::find(seen.begin(), seen.end(), key) != seen.end(); };
  const std::map<std::string, std::string> required_hint = {
      {"id", std::string("the service's id (") + kIdRule + ")"},
      {"driver", "one of " + join(kDrivers, ", ")},
      {"port", "the port the server listens on (1..65535)"},
      {"vram_mb", "the GPU memory the service needs, in MB"}};
  for (const auto& key : kPresetRequired) {
    if (!given(key)) c.error(p.loc.line, key, "required key missing; expected " + required_hint.at(key));
  }

  // Sleep: the predecessor wrote both keys; they must agree. Without supports_sleep, sleep_mode decides.
  const int sleep_line = p.key_locs.count("sleep_mode")       ? p.key_locs["sleep_mode"].line
                         : p.key_locs.count("supports_sleep") ? p.key_locs["supports_sleep"].line
                                                              : p.loc.line;
  if (supports_sleep) {
    if (*supports_sleep && p.sleep_mode == SleepMode::none) {
      c.error(sleep_line, "sleep_mode",
              "supports_sleep is true but sleep_mode is none; expected l1, l2 or router (or supports_sleep: "
              "false)");
    } else if (!*supports_sleep && p.sleep_mode != SleepMode::none) {
      c.error(sleep_line, "sleep_mode",
              std::string("sleep_mode is ") + to_string(p.sleep_mode) +
                  " but supports_sleep is false; expected sleep_mode: none (or supports_sleep: true)");
    }
    p.supports_sleep = *supports_sleep;
  } else {
    p.supports_sleep = p.sleep_mode != SleepMode::none;
  }
  if (p.sleep_mode == SleepMode::router && given("driver") && p.driver != Driver::llamacpp) {
    c.error(
        sleep_line, "sleep_mode",
        std::string("router sleep unloads models from a llama.cpp router; expected driver llamacpp, got ") +
            to_string(p.driver));
  }
  if (p.sleep_vram_mb && p.vram_mb > 0 && *p.sleep_vram_mb > p.vram_mb) {
    c.error(p.key_locs["sleep_vram_mb"].line, "sleep_vram_mb",
            "expected at most vram_mb (" + std::to_string(p.vram_mb) + "), got " +
                std::to_string(*p.sleep_vram_mb));
  }
  if ((p.driver == Driver::vllm || p.driver == Driver::llamacpp) && (p.sleep_url || p.wake_url)) {
    const std::string key = p.sleep_url ? "sleep_url" : "wake_url";
    c.warning(p.key_locs[key].line, key,
              std::string("ignored: the ") + to_string(p.driver) +
                  " driver sleeps and wakes through its own protocol (sleep_url/wake_url are for generic and "
                  "fastapi)");
  }
  if (!have_name) p.name = p.id;
  if (!id_ok) return std::nullopt;
  return p;
}

std::optional<Mode> parse_mode(const ReadContext& c, const YAML::Node& node) {
  Mode m;
  m.loc = SourceLoc{c.file, line_of(node, 1)};
  bool id_ok = false;
  bool have_services = false;
  bool have_name = false;
  const bool is_map = for_each_key(
      c, node, "mode keys", kModeKeys, [&](const std::string& key, int line, const YAML::Node& v) {
        m.key_locs[key] = SourceLoc{c.file, line};
        if (key == "id") {
          if (auto id = read_id(c, v, line, key)) {
            m.id = *id;
            id_ok = true;
          }
        } else if (key == "name") {
          if (v.IsNull()) return;
          if (auto s = read_string(c, v, line, key)) {
            m.name = *s;
            have_name = true;
          }
        } else if (key == "description") {
          if (v.IsNull()) return;
          if (auto s = read_string(c, v, line, key)) m.description = *s;
        } else if (key == "services") {
          have_services = true;
          if (v.IsNull()) return;  // an empty mode: nothing runs
          if (auto list = read_string_list(c, v, line, key)) {
            for (std::size_t i = 0; i < list->size(); ++i) {
              const std::string entry_key = "services[" + std::to_string(i) + "]";
              m.key_locs[entry_key] = SourceLoc{c.file, line_of(v[i], line)};
              const std::string& id = (*list)[i];
              // A repeat is an error, yet kept so that services[i] keeps naming the file's i-th entry.
              if (std::find(m.services.begin(), m.services.end(), id) != m.services.end()) {
                c.error(line_of(v[i], line), entry_key,
                        "service '" + id + "' is listed twice; expected each once");
              }
              m.services.push_back(id);
            }
          }
        }
      });
  if (!is_map) return std::nullopt;
  if (m.key_locs.count("id") == 0) {
    c.error(m.loc.line, "id", std::string("required key missing; expected the mode's id (") + kIdRule + ")");
  }
  if (!have_services) {
    c.error(m.loc.line, "services", "required key missing; expected a list of preset ids (may be empty: [])");
  }
  if (!have_name) m.name = m.id;
  if (!id_ok) return std::nullopt;
  return m;
}

}  // namespace gpumod::config::detail
