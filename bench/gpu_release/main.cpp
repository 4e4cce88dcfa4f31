// gpumod-gpu-release: on a machine with an NVIDIA GPU, shows
//   1. what the NVML probe reads (uuid, name, memory, utilization, temperature, power);
//   2. that the CUDA test engine's memory appears in NVML's process list under its pid, and
//      that gpumod attributes it to the service owning that pid;
//   3. how long the driver takes to free a service's VRAM after SIGTERM and after a vLLM
//      level-1 sleep, and how long gpumod's own release wait takes to notice it.
// It runs a real `gpumod serve` (probe nvml, three test-engine services sized so that only one
// fits at a time) and, next to it, a 1 ms NVML poller built on the project's own probe.
// See docs/gpu-release.md for the method and the numbers.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "backends/gpu_probe.hpp"
#include "backends/http_client.hpp"
#include "base/clock.hpp"
#include "bench/gpu_release/daemon_process.hpp"
#include "bench/gpu_release/nvml_watch.hpp"
#include "bench/gpu_release/stats.hpp"

namespace gpumod::gpu_release {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
constexpr std::int64_t kMiB = std::int64_t{1024} * 1024;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

struct Options {
  std::string gpumod;
  std::string engine;
  fs::path out;
  int runs = 12;
  std::int64_t vram_mb = 8192;
  std::int64_t residual_mb = 1024;
  std::chrono::microseconds watch_interval{1000};
  // A dry run without a GPU: the daemon and the watcher use the simulated GPU (80 GiB) that the
  // test engine charges through files. It checks the harness's logic, not the driver.
  bool simulate = false;
};

void usage() {
  std::cerr << "usage: gpumod-gpu-release --gpumod PATH --engine PATH --out DIR\n"
               "                          [--runs N] [--vram-mb N] [--residual-mb N] [--watch-us N]\n"
               "  --gpumod     the gpumod binary (run as `gpumod serve`)\n"
               "  --engine     gpumod-test-engine built with CUDA\n"
               "  --out        directory for config.yaml, daemon.log, runs.csv, summary.md\n"
               "  --runs       measurements per kind (SIGTERM, level-1 sleep); default 12\n"
               "  --vram-mb    memory each test engine allocates; default 8192\n"
               "  --residual-mb  memory the sleeping engine keeps; default 1024\n"
               "  --watch-us   NVML poll interval of the harness; default 1000\n"
               "  --simulate   dry run on gpumod's simulated GPU instead of NVML (no GPU needed)\n";
}

std::optional<Options> parse(int argc, char** argv) {
  Options o;
  const std::vector<std::string> args(argv + 1, argv + argc);
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--simulate") {
      o.simulate = true;
      continue;
    }
    if (i + 1 >= args.size()) return std::nullopt;
    const std::string& v = args[++i];
    try {
      if (a == "--gpumod") {
        o.gpumod = v;
      } else if (a == "--engine") {
        o.engine = v;
      } else if (a == "--out") {
        o.out = v;
      } else if (a == "--runs") {
        o.runs = std::stoi(v);
      } else if (a == "--vram-mb") {
        o.vram_mb = std::stoll(v);
      } else if (a == "--residual-mb") {
        o.residual_mb = std::stoll(v);
      } else if (a == "--watch-us") {
        o.watch_interval = std::chrono::microseconds(std::stoll(v));
      } else {
        return std::nullopt;
      }
    } catch (const std::exception&) {
      return std::nullopt;
    }
  }
  if (o.gpumod.empty() || o.engine.empty() || o.out.empty() || o.runs < 1 || o.vram_mb <= o.residual_mb ||
      o.residual_mb < 0) {
    return std::nullopt;
  }
  // The daemon runs the engine from its own working directory: make the paths absolute.
  o.gpumod = fs::absolute(o.gpumod).string();
  o.engine = fs::absolute(o.engine).string();
  o.out = fs::absolute(o.out);
  return o;
}

double ms(Clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

std::string mib(std::int64_t bytes) {
  return std::to_string(bytes / kMiB) + " MiB";
}

std::string fixed(double v, int decimals = 1) {
  if (std::isnan(v)) return "";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

// A port nothing listens on now (the kernel's pick for port 0).
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&  // NOLINT: sockets API
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {  // NOLINT: sockets API
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

// spdlog's default pattern starts with "[YYYY-mm-dd HH:MM:SS.mmm]" in local time.
std::optional<std::chrono::system_clock::time_point> spdlog_time(const std::string& line) {
  std::tm tm{};
  int millis = 0;
  if (line.size() < 25 || line[0] != '[') return std::nullopt;
  if (std::sscanf(line.c_str(), "[%d-%d-%d %d:%d:%d.%d]", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
                  &tm.tm_min, &tm.tm_sec, &millis) != 7) {
    return std::nullopt;
  }
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  tm.tm_isdst = -1;
  const std::time_t t = std::mktime(&tm);
  if (t == -1) return std::nullopt;
  return std::chrono::system_clock::from_time_t(t) + std::chrono::milliseconds(millis);
}

// --- section 1: the probe -------------------------------------------------------------------

std::string describe_sample(const backends::ProbeSample& s) {
  std::ostringstream out;
  out << "| GPU | uuid | name | total | used | free | utilization | temperature | power |\n"
         "|---|---|---|---|---|---|---|---|---|\n";
  for (const auto& g : s.gpus) {
    out << "| " << g.index << " | " << g.uuid << " | " << g.name << " | " << mib(g.total_bytes) << " | "
        << mib(g.used_bytes) << " | " << mib(g.free_bytes) << " | "
        << (g.utilization_ratio ? fixed(*g.utilization_ratio * 100, 0) + " %" : "n/a") << " | "
        << (g.temperature_celsius ? fixed(*g.temperature_celsius, 0) + " °C" : "n/a") << " | "
        << (g.power_watts ? fixed(*g.power_watts, 1) + " W" : "n/a") << " |\n";
  }
  out << "\nprocesses (NVML compute processes): ";
  if (s.processes.empty()) out << "none";
  for (const auto& p : s.processes)
    out << "\n- GPU " << p.gpu << ": pid " << p.pid << ", " << mib(p.used_bytes);
  out << "\n";
  return out.str();
}

// --- the daemon's config ----------------------------------------------------------------------

struct Layout {
  std::int64_t headroom_mb = 0;
  double gpu_mem_util = 0;
  std::map<std::string, int> ports;
};

std::string yaml_quote(const std::string& s) {
  return json(s).dump();
}  // JSON strings are YAML strings

std::string preset_yaml(const Options& o, const Layout& l, const std::string& id, bool sleeps) {
  const int port = l.ports.at(id);
  std::ostringstream y;
  y << "  - id: " << id << "\n"
    << "    driver: vllm\n"
    << "    port: " << port << "\n"
    << "    vram_mb: " << o.vram_mb << "\n"
    << "    startup_timeout: 120\n"
    << "    unit_vars: {gpu_mem_util: " << fixed(l.gpu_mem_util, 2) << "}\n";
  if (sleeps) y << "    sleep_mode: l1\n    sleep_vram_mb: " << o.residual_mb << "\n";
  y << "    cmd: [" << yaml_quote(o.engine) << ", \"--port\", \"" << port << "\", \"--protocol\", \"vllm\", "
    << "\"--model\", \"" << id << "\", \"--vram-mb\", \"" << o.vram_mb << "\", \"--load-ms\", \"100\"";
  if (sleeps) y << ", \"--wake-ms\", \"0\", \"--sleep-residual-mb\", \"" << o.residual_mb << "\"";
  y << "]\n";
  return y.str();
}

std::string config_yaml(const Options& o, const Layout& l, const fs::path& state_dir) {
  std::ostringstream y;
  y << "# Written by gpumod-gpu-release. headroom_mb is chosen so that exactly one test engine fits:\n"
       "# the release wait then really depends on the evicted engine's memory coming back.\n"
    << "listen: \"127.0.0.1:0\"\n"
    << "state_dir: " << yaml_quote(state_dir.string()) << "\n"
    << (o.simulate ? "gpus:\n  probe: sim\n  sim: [{name: simulated, memory_mb: 81920}]\n"
                   : "gpus:\n  probe: nvml\n")
    << "policy:\n"
    << "  headroom_mb: " << l.headroom_mb << "\n"
    << "  stop_grace: 10s\n"
    << "  default_keep_alive: 0\n"
    << "presets:\n"
    << preset_yaml(o, l, "term-a", false) << preset_yaml(o, l, "term-b", false)
    << preset_yaml(o, l, "sleeper", true);
  return y.str();
}

// --- talking to the daemon --------------------------------------------------------------------

class Api {
 public:
  explicit Api(int port) : client_("127.0.0.1", port, std::chrono::seconds(180)) {}

  backends::http::Reply request(const std::string& model) const {
    return client_.post("/request", json{{"model", model}}.dump());
  }
  backends::http::Reply post(const std::string& path) const { return client_.post(path, "{}"); }

  std::optional<json> service(const std::string& id) const {
    const auto r = client_.get("/services/" + id);
    if (!r.ok()) return std::nullopt;
    try {
      return json::parse(r.body);
    } catch (const std::exception&) {
      return std::nullopt;
    }
  }

  int pid_of(const std::string& id) const {
    const auto s = service(id);
    if (!s || !s->contains("pid") || !(*s)["pid"].is_number_integer()) return 0;
    return (*s)["pid"].get<int>();
  }

  // gpumod_vram_release_wait_seconds {sum, count} for gpu="0".
  std::pair<double, double> release_wait() const {
    const auto r = client_.get("/metrics");
    double sum = kNaN;
    double count = kNaN;
    if (!r.ok()) return {sum, count};
    std::istringstream in(r.body);
    std::string line;
    while (std::getline(in, line)) {
      if (line.find("gpu=\"0\"") == std::string::npos) continue;
      const auto value = [&] { return std::strtod(line.substr(line.rfind(' ') + 1).c_str(), nullptr); };
      if (line.rfind("gpumod_vram_release_wait_seconds_sum{", 0) == 0) sum = value();
      if (line.rfind("gpumod_vram_release_wait_seconds_count{", 0) == 0) count = value();
    }
    return {sum, count};
  }

  std::string metric_lines(const std::string& prefix, const std::string& must_contain) const {
    const auto r = client_.get("/metrics");
    std::string out;
    if (!r.ok()) return out;
    std::istringstream in(r.body);
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind(prefix, 0) == 0 && line.find(must_contain) != std::string::npos) out += line + "\n";
    }
    return out;
  }

 private:
  backends::http::Client client_;
};

// --- one measured switch ------------------------------------------------------------------------

struct Step {
  std::string kind;  // "sigterm", "sleep", "sigterm+wake"
  std::string target;
  std::string evicted;
  std::string action;  // what the planner must do to `evicted`: "stop" or "sleep"
  bool target_wakes = false;
};

struct RunResult {
  Step step;
  int pid = 0;
  double evict_to_nvml_free_ms = kNaN;   // SIGTERM or sleep request -> first NVML sample showing free
  double evict_to_exit_ms = kNaN;        // SIGTERM -> the runner saw the process group gone
  double evict_to_pid_gone_ms = kNaN;    // SIGTERM -> pid absent from NVML's process list
  double nvml_free_to_notice_ms = kNaN;  // NVML showed it -> gpumod's release wait ended
  double release_wait_ms = kNaN;         // gpumod_vram_release_wait_seconds (this wait)
  double watch_gap_ms = kNaN;            // spacing of the two NVML samples around the free moment
  double request_ms = kNaN;              // POST /request round trip
  double log_pipe_lag_ms = kNaN;         // receipt of the "evicting" line minus its own timestamp
  bool notice_from_log = false;
  bool already_free = false;
  std::string error;
};

class Harness {
 public:
  Harness(const Options& o, const Layout& l, DaemonProcess& d, const Api& api, const NvmlWatch& w)
      : opts_(o), layout_(l), daemon_(d), api_(api), watch_(w) {}

  RunResult measure(const Step& step) {
    RunResult r;
    r.step = step;
    r.pid = api_.pid_of(step.evicted);
    const auto [sum0, count0] = api_.release_wait();
    const std::size_t from = daemon_.size();
    const auto t0 = Clock::now();
    const auto reply = api_.request(step.target);
    const auto t1 = Clock::now();
    r.request_ms = ms(t1 - t0);
    if (!reply.ok()) {
      r.error = "POST /request " + step.target + ": " + backends::http::describe("POST", "/request", reply);
      return r;
    }
    const auto evict_i =
        daemon_.wait_for("evicting " + step.evicted + " (" + step.action + ") on GPU 0 for " + step.target,
                         from, Clock::now() + std::chrono::seconds(5));
    if (!evict_i) {
      r.error =
          "no 'evicting " + step.evicted + " (" + step.action + ")' line: the planner did something else";
      return r;
    }
    const LogLine evict = daemon_.line(*evict_i);
    if (const auto stamp = spdlog_time(evict.text)) r.log_pipe_lag_ms = ms(evict.received_wall - *stamp);
    // The line the scheduler logs when its release wait ends and it issues the start or wake.
    const auto start_i =
        daemon_.wait_for(std::string(step.target_wakes ? "waking " : "starting ") + step.target + " on GPU 0",
                         *evict_i, Clock::now() + std::chrono::milliseconds(2000));
    // (A plain index + flag: GCC 12 at -O3 misreports an optional built in a ?: as uninitialized.)
    std::size_t stopped_at = 0;
    bool stopped_seen = false;
    if (step.action == "stop") {
      if (const auto i = daemon_.wait_for("service '" + step.evicted + "' stopped", *evict_i,
                                          Clock::now() + std::chrono::seconds(2))) {
        stopped_at = *i;
        stopped_seen = true;
      }
    }
    const auto [sum1, count1] = api_.release_wait();
    if (count1 - count0 == 1) r.release_wait_ms = (sum1 - sum0) * 1000.0;

    const std::int64_t need = step.target_wakes ? opts_.vram_mb - opts_.residual_mb : opts_.vram_mb;
    const std::int64_t threshold = (need + layout_.headroom_mb) * kMiB;  // what the scheduler waits for
    const auto samples = watch_.between(evict.received - std::chrono::milliseconds(500), t1);
    const WatchSample* before = nullptr;
    const WatchSample* freed = nullptr;
    const WatchSample* prev = nullptr;
    for (const auto& s : samples) {
      if (s.begin < evict.received) {
        before = &s;
      } else if (freed == nullptr && s.free_bytes >= threshold) {
        freed = &s;
        if (prev != nullptr) r.watch_gap_ms = ms(s.begin - prev->begin);
      }
      if (r.pid > 0 && step.action == "stop" && s.begin >= evict.received &&
          std::isnan(r.evict_to_pid_gone_ms) && !s.used_by(r.pid)) {
        r.evict_to_pid_gone_ms = ms(s.begin - evict.received);
      }
      prev = &s;
    }
    r.already_free = before != nullptr && before->free_bytes >= threshold;
    if (stopped_seen) r.evict_to_exit_ms = ms(daemon_.line(stopped_at).received - evict.received);
    if (freed == nullptr) {
      r.error = "NVML never showed " + mib(threshold) + " free before the request returned";
      return r;
    }
    r.evict_to_nvml_free_ms = ms(freed->begin - evict.received);
    if (start_i) {
      r.notice_from_log = true;
      r.nvml_free_to_notice_ms = ms(daemon_.line(*start_i).received - freed->begin);
    }
    return r;
  }

 private:
  const Options& opts_;
  const Layout& layout_;
  DaemonProcess& daemon_;
  const Api& api_;
  const NvmlWatch& watch_;
};

std::string csv(const std::vector<RunResult>& runs) {
  std::ostringstream out;
  out << "kind,evicted,target,pid,evict_to_nvml_free_ms,evict_to_exit_ms,evict_to_pid_gone_ms,"
         "nvml_free_to_notice_ms,notice_source,release_wait_ms,watch_gap_ms,request_ms,log_pipe_lag_ms,"
         "already_free,error\n";
  for (const auto& r : runs) {
    out << r.step.kind << ',' << r.step.evicted << ',' << r.step.target << ',' << r.pid << ','
        << fixed(r.evict_to_nvml_free_ms, 3) << ',' << fixed(r.evict_to_exit_ms, 3) << ','
        << fixed(r.evict_to_pid_gone_ms, 3) << ',' << fixed(r.nvml_free_to_notice_ms, 3) << ','
        << (r.notice_from_log ? "log" : "histogram") << ',' << fixed(r.release_wait_ms, 3) << ','
        << fixed(r.watch_gap_ms, 3) << ',' << fixed(r.request_ms, 1) << ',' << fixed(r.log_pipe_lag_ms, 1)
        << ',' << (r.already_free ? "yes" : "no") << ',' << json(r.error).dump() << '\n';
  }
  return out.str();
}

std::vector<double> column(const std::vector<RunResult>& runs, const std::string& kind,
                           double RunResult::*field) {
  std::vector<double> v;
  for (const auto& r : runs) {
    if (r.step.kind == kind && r.error.empty() && !std::isnan(r.*field)) v.push_back(r.*field);
  }
  return v;
}

std::string summary_tables(const std::vector<RunResult>& runs) {
  std::ostringstream out;
  const std::string head = "| measurement (ms) | n | min | median | p90 | max |\n|---|---|---|---|---|---|\n";
  out << "### SIGTERM (service stopped; next service starts)\n\n"
      << head
      << table_row("SIGTERM → NVML shows the memory free",
                   summarize(column(runs, "sigterm", &RunResult::evict_to_nvml_free_ms)))
      << "\n"
      << table_row("SIGTERM → pid gone from NVML's process list",
                   summarize(column(runs, "sigterm", &RunResult::evict_to_pid_gone_ms)))
      << "\n"
      << table_row("SIGTERM → runner saw the process group exit",
                   summarize(column(runs, "sigterm", &RunResult::evict_to_exit_ms)))
      << "\n"
      << table_row("NVML free → gpumod noticed (release wait ended)",
                   summarize(column(runs, "sigterm", &RunResult::nvml_free_to_notice_ms)))
      << "\n"
      << table_row("gpumod release wait (histogram)",
                   summarize(column(runs, "sigterm", &RunResult::release_wait_ms)))
      << "\n"
      << table_row("NVML sample spacing at the free moment",
                   summarize(column(runs, "sigterm", &RunResult::watch_gap_ms)), 2)
      << "\n"
      << "\n### Level-1 sleep (service sleeps; next service starts)\n\n"
      << head
      << table_row("sleep request → NVML shows the memory free",
                   summarize(column(runs, "sleep", &RunResult::evict_to_nvml_free_ms)))
      << "\n"
      << table_row("NVML free → gpumod noticed (release wait ended)",
                   summarize(column(runs, "sleep", &RunResult::nvml_free_to_notice_ms)))
      << "\n"
      << table_row("gpumod release wait (histogram)",
                   summarize(column(runs, "sleep", &RunResult::release_wait_ms)))
      << "\n"
      << table_row("NVML sample spacing at the free moment",
                   summarize(column(runs, "sleep", &RunResult::watch_gap_ms)), 2)
      << "\n"
      << "\n### SIGTERM, then the sleeping service wakes\n\n"
      << head
      << table_row("SIGTERM → NVML shows the memory free",
                   summarize(column(runs, "sigterm+wake", &RunResult::evict_to_nvml_free_ms)))
      << "\n"
      << table_row("NVML free → gpumod noticed (release wait ended)",
                   summarize(column(runs, "sigterm+wake", &RunResult::nvml_free_to_notice_ms)))
      << "\n"
      << table_row("gpumod release wait (histogram)",
                   summarize(column(runs, "sigterm+wake", &RunResult::release_wait_ms)))
      << "\n";
  std::vector<double> lags;
  for (const auto& r : runs) {
    if (!std::isnan(r.log_pipe_lag_ms)) lags.push_back(r.log_pipe_lag_ms);
  }
  const auto lag = summarize(lags);
  out << "\nLog line receipt minus the line's own spdlog timestamp (ms resolution): " << table_row("", lag)
      << "\n";
  return out.str();
}

int run(const Options& opts) {
  std::error_code ec;
  fs::create_directories(opts.out, ec);
  std::ostringstream report;

  // 1. The probe.
  const fs::path state_dir = opts.out / "state";
  fs::remove_all(state_dir, ec);
  const auto make_probe = [&]() -> Result<std::unique_ptr<backends::GpuProbe>> {
    if (!opts.simulate) return backends::make_nvml_probe();
    return backends::make_sim_probe({config::SimGpu{"simulated", 81920}}, state_dir / "sim",
                                    std::chrono::milliseconds(0), SystemClock::instance());
  };
  auto probe = make_probe();
  if (!probe) {
    std::cerr << "NVML probe: " << probe.error() << "\n";
    return 1;
  }
  auto first = probe.value()->sample();
  if (!first || first->gpus.empty()) {
    std::cerr << "NVML sample failed: " << (first ? std::string("no GPU") : first.error()) << "\n";
    return 1;
  }
  report << "## 1. NVML probe (backends::make_nvml_probe)\n\n" << describe_sample(*first) << "\n";
  std::cout << report.str() << std::flush;
  const backends::GpuSample gpu0 = first->gpus.front();

  // Size the daemon's headroom so that the wait threshold sits half an engine below the idle
  // free memory: with one engine loaded it is not met, once that engine's memory is back it is.
  Layout layout;
  layout.headroom_mb = (gpu0.free_bytes - 3 * opts.vram_mb * kMiB / 2) / kMiB;
  if (layout.headroom_mb < 0) {
    std::cerr << "the GPU has too little free memory for two " << opts.vram_mb << " MiB engines\n";
    return 1;
  }
  layout.gpu_mem_util =
      std::ceil(100.0 * static_cast<double>(opts.vram_mb * kMiB) / static_cast<double>(gpu0.total_bytes)) /
      100.0;
  for (const char* id : {"term-a", "term-b", "sleeper"}) layout.ports[id] = free_port();
  const fs::path config_path = opts.out / "config.yaml";
  std::ofstream(config_path) << config_yaml(opts, layout, state_dir);

  // The 1 ms poller (its own NVML handle, as an outside observer).
  auto watch_probe = make_probe();
  if (!watch_probe) {
    std::cerr << "NVML probe for the watcher: " << watch_probe.error() << "\n";
    return 1;
  }
  NvmlWatch watch(std::move(watch_probe.value()), gpu0.index, opts.watch_interval);

  auto spawned = DaemonProcess::spawn({opts.gpumod, "serve", "--config", config_path.string(), "--log-level",
                                       "info", "--stop-services-on-exit",
                                       // Notice times come from when a log line arrives: unbatched.
                                       "--log-each-line"},
                                      opts.out / "daemon.log");
  if (!spawned) {
    std::cerr << spawned.error() << "\n";
    return 1;
  }
  DaemonProcess& daemon = *spawned.value();
  const auto listening =
      daemon.wait_for("listening on http://127.0.0.1:", 0, Clock::now() + std::chrono::seconds(30));
  if (!listening) {
    std::cerr << "the daemon did not start; see " << (opts.out / "daemon.log") << "\n";
    return 1;
  }
  const std::string text = daemon.line(*listening).text;
  const int api_port = std::atoi(text.substr(text.rfind(':') + 1).c_str());
  const Api api(api_port);
  std::cerr << "daemon pid " << daemon.pid() << " on port " << api_port << "; headroom " << layout.headroom_mb
            << " MiB\n";

  std::vector<RunResult> runs;
  int exit_code = 0;
  auto cleanup = [&] {
    for (const char* id : {"term-a", "term-b", "sleeper"}) api.post(std::string("/services/") + id + "/stop");
    daemon.terminate(std::chrono::seconds(30));
  };

  // 2. Attribution: the first engine's memory under its pid, in NVML and in gpumod.
  {
    const std::size_t from = daemon.size();
    const auto reply = api.request("term-a");
    if (!reply.ok()) {
      std::cerr << "first start failed: " << backends::http::describe("POST", "/request", reply) << "\n";
      cleanup();
      return 1;
    }
    const int pid = api.pid_of("term-a");
    std::string engine_first_line;
    if (const auto started = daemon.find("service 'term-a' started: pid", from)) {
      const std::string line = daemon.line(*started).text;
      const auto at = line.rfind(", log ");
      if (at != std::string::npos) std::getline(std::ifstream(line.substr(at + 6)), engine_first_line);
    }
    // gpumod's measured figure comes from its own probe samples: give it a few idle polls.
    std::optional<json> svc;
    for (int i = 0; i < 100; ++i) {
      svc = api.service("term-a");
      if (svc && svc->contains("measured_bytes") && (*svc)["measured_bytes"].is_number()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    const auto now = Clock::now();
    const auto samples = watch.between(now - std::chrono::seconds(1), now);
    std::ostringstream a;
    a << "## 2. The CUDA test engine's memory, attributed to its pid\n\n"
      << "engine's first stderr line: `" << engine_first_line << "`\n\n"
      << "gpumod `GET /services/term-a`: pid " << pid << ", state "
      << (svc ? (*svc).value("state", std::string("?")) : "?") << ", declared "
      << (svc ? mib((*svc).value("vram_bytes", std::int64_t{0})) : "?") << ", measured "
      << (svc && (*svc)["measured_bytes"].is_number() ? mib((*svc)["measured_bytes"].get<std::int64_t>())
                                                      : std::string("null"))
      << "\n\n";
    if (!samples.empty()) {
      const auto& s = samples.back();
      a << "NVML process list on GPU " << gpu0.index << " at the same moment:";
      for (const auto& [p, used] : s.processes) {
        a << "\n- pid " << p << ": " << mib(used) << (p == pid ? "  ← term-a's engine" : "");
      }
      a << "\n\nNVML shows pid " << pid << (s.used_by(pid) ? "" : " NOT") << " in its list.\n";
    }
    a << "\n```\n" << api.metric_lines("gpumod_service_vram_measured_bytes", "term-a") << "```\n\n";
    std::cout << a.str() << std::flush;
    report << a.str();
    if (!opts.simulate && engine_first_line.find("real VRAM: yes") == std::string::npos) {
      std::cerr
          << "the test engine does not allocate real VRAM; the release measurements would mean nothing\n";
      exit_code = 1;
    }
  }

  // 3. The measured switches.
  if (exit_code == 0) {
    Harness harness(opts, layout, daemon, api, watch);
    std::vector<Step> steps;
    std::string current = "term-a";
    for (int i = 0; i < opts.runs; ++i) {
      const std::string next = current == "term-a" ? "term-b" : "term-a";
      steps.push_back({"sigterm", next, current, "stop", false});
      current = next;
    }
    steps.push_back({"sigterm", "sleeper", current, "stop", false});  // the sleeper's cold start
    for (int i = 0; i < opts.runs; ++i) {
      steps.push_back({"sleep", "term-b", "sleeper", "sleep", false});
      steps.push_back({"sigterm+wake", "sleeper", "term-b", "stop", true});
    }
    for (const auto& step : steps) {
      runs.push_back(harness.measure(step));
      const auto& r = runs.back();
      std::cerr << step.kind << " " << step.evicted << " -> " << step.target << ": "
                << (r.error.empty() ? "free after " + fixed(r.evict_to_nvml_free_ms, 2) + " ms, noticed +" +
                                          fixed(r.nvml_free_to_notice_ms, 2) + " ms, wait " +
                                          fixed(r.release_wait_ms, 2) + " ms"
                                    : "FAILED: " + r.error)
                << "\n";
    }
  }
  cleanup();

  const auto costs = summarize(watch.sample_costs_us());
  std::ostringstream m;
  m << "## 3. Release times (engine " << opts.vram_mb << " MiB, sleep residual " << opts.residual_mb
    << " MiB, daemon headroom " << layout.headroom_mb << " MiB, policy.vram_poll_interval at its default)\n\n"
    << summary_tables(runs) << "\nHarness NVML poller: " << watch.count() << " samples, " << watch.errors()
    << " errors, every " << opts.watch_interval.count()
    << " µs; one sample() call (µs): " << table_row("", costs) << "\n";
  std::size_t failed = 0;
  for (const auto& r : runs) {
    if (!r.error.empty()) ++failed;
    if (r.already_free)
      m << "\nnote: " << r.step.kind << " " << r.step.evicted
        << ": the memory showed free before the eviction\n";
  }
  m << "\nruns: " << runs.size() << ", failed: " << failed << "\n";
  std::cout << m.str() << std::flush;
  report << m.str();
  std::ofstream(opts.out / "runs.csv") << csv(runs);
  std::ofstream(opts.out / "summary.md") << report.str();
  return exit_code != 0 ? exit_code : (failed > 0 ? 3 : 0);
}

}  // namespace
}  // namespace gpumod::gpu_release

int main(int argc, char** argv) {
  const auto opts = gpumod::gpu_release::parse(argc, argv);
  if (!opts) {
    gpumod::gpu_release::usage();
    return 2;
  }
  return gpumod::gpu_release::run(*opts);
}
