// The configuration model: daemon settings, presets (services) and modes, plus loading and
// validation. Every later stage reads these plain structs; only config/ parses YAML.
//
// Layout on disk (the predecessor's): a directory holding `presets/**/*.yaml` (one preset per
// file), `modes/*.yaml` (one mode per file) and optionally `gpumod.yaml` (daemon settings).
// A single daemon file may instead name `presets_dir` / `modes_dir`, or carry inline
// `presets:` / `modes:` lists.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "base/result.hpp"

namespace gpumod::config {

// What kind of server a preset runs; decides health, sleep and command rendering.
enum class Driver { vllm, llamacpp, fastapi, generic, docker };
// How the process lives.
enum class RunnerKind { process, systemd };
// How a service sleeps: none, vLLM level 1 / level 2, or llama.cpp router unload.
enum class SleepMode { none, l1, l2, router };
enum class ProbeKind { auto_detect, nvml, sim };

const char* to_string(Driver d);
const char* to_string(RunnerKind r);
const char* to_string(SleepMode s);
const char* to_string(ProbeKind p);

// Where a value came from, so every error can name file, line and key.
struct SourceLoc {
  std::string file;
  int line = 0;  // 1-based; 0 when unknown (embedded default)
};

// The keys a service is launched and driven with. A reload that changes any of them restarts
// the service (the running process was started with the old ones); every other preset key
// applies at once. A key added here is compared by the defaulted ==, so none can be forgotten.
// (p) marks a key of the predecessor's format, (g) one of gpumod's own.
struct LaunchSettings {
  Driver driver = Driver::generic;               // (p)
  int port = 0;                                  // (p)
  std::int64_t vram_mb = 0;                      // (p)
  std::optional<int> context_size;               // (p)
  std::string model_id;                          // (p)
  std::string model_path;                        // (p)
  std::string health_endpoint = "/health";       // (p)
  std::chrono::seconds startup_timeout{120};     // (p)
  bool supports_sleep = false;                   // (p)
  SleepMode sleep_mode = SleepMode::none;        // (p)
  std::string unit_template;                     // (p) a systemd unit name (may hold "%i"-style vars)
  std::map<std::string, std::string> unit_vars;  // (p) open map, $VAR / $HOME expanded at load
  RunnerKind runner = RunnerKind::process;       // (g)
  std::vector<std::string> cmd;                  // (g) explicit argv; empty => rendered from driver
  std::map<std::string, std::string> env;        // (g)
  std::vector<int> gpus;                         // (g) allowed GPU indexes; empty => any
  std::vector<std::string> models;               // (g) models a llama.cpp router serves
  std::optional<std::int64_t> sleep_vram_mb;     // (g) memory still held while asleep (residual)
  std::optional<std::string> sleep_url;          // (g) generic/fastapi: POST to sleep
  std::optional<std::string> wake_url;           // (g) generic/fastapi: POST to wake

  bool operator==(const LaunchSettings&) const = default;
};

struct Preset : LaunchSettings {
  std::string id;                                  // (p)
  std::string name;                                // (p)
  std::optional<double> kv_cache_per_1k;           // (p)
  int priority = 50;                               // (g) higher wins; 0..100
  bool pinned = false;                             // (g) never evicted
  std::optional<std::chrono::seconds> keep_alive;  // (g) idle time before it may be slept/stopped
  std::vector<std::string> aliases;                // (g) other names that resolve to this service

  SourceLoc loc;
  std::map<std::string, SourceLoc> key_locs;  // per key, for later cross-check messages

  [[nodiscard]] bool can_sleep() const { return supports_sleep && sleep_mode != SleepMode::none; }
  // The residual a sleeping service still holds: explicit sleep_vram_mb, else a per-mode
  // default (l1 keeps ~10%, l2 and router keep ~2% of declared memory).
  [[nodiscard]] std::int64_t sleep_residual_mb() const;
};

struct Mode {
  std::string id;
  std::string name;
  std::string description;
  std::vector<std::string> services;
  SourceLoc loc;
  std::map<std::string, SourceLoc> key_locs;  // per key and per entry ("services[1]")
};

struct SimGpu {
  std::string name = "gpumod simulated GPU";
  std::int64_t memory_mb = 24576;
};

struct PolicySettings {
  std::int64_t headroom_mb = 512;                             // kept free on every GPU
  std::chrono::milliseconds vram_release_timeout{120000};     // wait for the driver to free
  std::chrono::milliseconds vram_poll_interval{5};            // while a start waits for memory
  std::chrono::milliseconds health_poll_interval{5};          // while starting / waking
  std::chrono::milliseconds idle_poll_interval{2000};         // when nothing is moving
  std::chrono::milliseconds stop_grace{10000};                // SIGTERM -> SIGKILL
  std::size_t queue_max = 1024;                               // bounded admission queue
  std::chrono::milliseconds default_request_timeout{300000};  // deadline when a request gives none
  std::chrono::milliseconds aging_interval{30000};            // +1 effective priority per interval
  std::chrono::seconds default_keep_alive{0};                 // 0 => evictable as soon as idle
  std::int64_t max_body_bytes = 8 * 1024 * 1024;              // HTTP body limit
  // The scheduler loop not turning for this long is a stall: /healthz answers 503 and the
  // systemd watchdog is no longer pinged (so systemd restarts the daemon).
  std::chrono::milliseconds stall_timeout{10000};
};

struct DaemonSettings {
  std::string listen_host = "127.0.0.1";
  int listen_port = 7979;
  std::filesystem::path state_dir;  // default: $GPUMOD_STATE_DIR, $XDG_STATE_HOME/gpumod,
                                    // ~/.local/state/gpumod, or /var/lib/gpumod as root without HOME
  std::filesystem::path log_dir;    // default: <state_dir>/logs
  ProbeKind probe = ProbeKind::auto_detect;
  std::vector<SimGpu> sim_gpus = {SimGpu{}};     // used when the probe is sim
  std::chrono::milliseconds sim_release_lag{0};  // sim: memory lingers this long after exit
  std::vector<int> gpus;                         // GPU indexes gpumod may use; empty => all
  std::optional<std::string> api_token;          // bearer token; required for non-loopback bind
  std::string systemd_bus = "user";              // "user" or "system"
  bool watch = false;                            // reload when a config file changes (serve --watch)
  PolicySettings policy;
  SourceLoc loc;
};

struct Diagnostic {
  enum class Severity { error, warning };
  Severity severity = Severity::error;
  std::string file;
  int line = 0;
  std::string key;      // dotted path of the offending key, e.g. "unit_vars.port" or "services[2]"
  std::string message;  // what is wrong and what was expected
  // "file:line: key: message" (the form every CLI and API error uses); warnings read
  // "file:line: key: warning: message". The line is left out when 0, the key when empty.
  [[nodiscard]] std::string str() const;
};

struct Config {
  DaemonSettings daemon;
  std::vector<Preset> presets;
  std::vector<Mode> modes;
  std::vector<Diagnostic> warnings;
  std::string source;  // what was loaded ("embedded default" or a path)
  // The folders the config was read from, what `watch` watches: the daemon file's folder or the
  // config directory (that folder only), and the folders of presets and modes (with their
  // subfolders). Empty for the embedded default.
  struct WatchedDir {
    std::filesystem::path path;
    bool recursive = false;
  };
  std::vector<WatchedDir> watched_dirs;

  [[nodiscard]] const Preset* find_preset(const std::string& id) const;
  [[nodiscard]] const Mode* find_mode(const std::string& id) const;
  // Resolve a model name: service id, then model_id, then alias, then a router's models.
  [[nodiscard]] const Preset* resolve_model(const std::string& model) const;
};

struct LoadResult {
  std::optional<Config> config;         // set when there are no errors
  std::vector<Diagnostic> diagnostics;  // errors and warnings, in file order
  [[nodiscard]] bool ok() const { return config.has_value(); }
  [[nodiscard]] std::string error_text() const;  // all errors, one per line
};

struct LoadOptions {
  std::optional<std::string> listen;               // "HOST:PORT" override
  std::optional<std::filesystem::path> state_dir;  // override
  // Expands ${GPUMOD_BIN_DIR}. Default: $GPUMOD_BIN_DIR, else the directory of /proc/self/exe
  // (in a build tree, <build>/tools/test-engine when that holds the engine and exe's dir does not).
  std::filesystem::path bin_dir;
};

// Load a daemon file, or a directory with presets/, modes/ and optionally gpumod.yaml.
LoadResult load(const std::filesystem::path& path, const LoadOptions& opts = {});
// The built-in demo: one simulated 24 GiB GPU and a few services run by the bundled test engine.
LoadResult embedded_default(const LoadOptions& opts = {});
// Parse from a string (tests); `name` is used as the file name in diagnostics.
LoadResult load_daemon_string(const std::string& yaml, const std::string& name, const LoadOptions& opts = {});
// A whole config given as text (tests, the fuzzer): the daemon file and preset and mode files,
// read as if the latter lay in presets/ and modes/ beside it. Names are the file names in
// diagnostics; relative paths in them resolve against the current directory.
struct ConfigTexts {
  std::string daemon;
  std::string daemon_name = "gpumod.yaml";
  std::vector<std::pair<std::string, std::string>> presets;  // (file name, text)
  std::vector<std::pair<std::string, std::string>> modes;
};
LoadResult load_texts(const ConfigTexts& texts, const LoadOptions& opts = {});

// `gpumod config check PATH`: when PATH is itself a config (a daemon file, or a directory with
// presets/, modes/ or gpumod.yaml) this is [{PATH, load(PATH)}]; otherwise every config found in
// the directories below PATH is loaded (a config's own subdirectories are not searched again).
// Finding none is one entry with an error.
std::vector<std::pair<std::filesystem::path, LoadResult>> check_tree(const std::filesystem::path& path,
                                                                     const LoadOptions& opts = {});
// True for a directory holding presets/, modes/ or gpumod.yaml.
bool is_config_dir(const std::filesystem::path& path);

// "500ms", "90s", "3m", "1h", "1m30s", or a plain number of seconds ("90", "0.5").
Result<std::chrono::milliseconds> parse_duration(const std::string& text);
struct HostPort {
  std::string host;
  int port = 0;  // 0: any free port (tests)
};
// "HOST:PORT" or "[IPv6]:PORT".
Result<HostPort> parse_host_port(const std::string& text);
// localhost, an IPv4 address in 127.0.0.0/8, and ::1 (also as "[::1]"): the one rule for
// `config check` and for serve's refusal to listen beyond this host without a token.
bool is_loopback_host(std::string_view host);

}  // namespace gpumod::config
