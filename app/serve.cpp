// `gpumod serve`: the daemon's wiring. Loads the config, picks the GPU probe (NVML when the
// library is present, else the simulated GPU), builds the runners and drivers, starts the
// scheduler and the HTTP API, and handles signals and the systemd notify protocol.
#include "app/serve.hpp"

#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/sinks/systemd_sink.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <future>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "api/server.hpp"
#include "app/buffered_log_sink.hpp"
#include "app/config_watch.hpp"
#include "backends/command.hpp"
#include "backends/driver.hpp"
#include "backends/gpu_probe.hpp"
#include "backends/port_owner.hpp"
#include "backends/run_state.hpp"
#include "backends/runner.hpp"
#include "config/config.hpp"
#include "exporter/metrics.hpp"
#include "scheduler/scheduler.hpp"

#ifndef GPUMOD_VERSION
#define GPUMOD_VERSION "0.0.0"
#endif

namespace gpumod::app {
namespace {

namespace fs = std::filesystem;

struct ServeOptions {
  std::optional<fs::path> config_path;
  config::LoadOptions load;
  std::string log_level = "info";
  bool stop_services_on_exit = false;
  bool log_each_line = false;
  std::optional<fs::path> port_file;
  bool watch = false;  // --watch: as `watch: true` in the daemon file
};

void print_serve_usage(std::ostream& out) {
  out << "usage: gpumod serve [--config PATH] [--listen HOST:PORT] [--state-dir DIR]\n"
         "                    [--log-level trace|debug|info|warn|error] [--stop-services-on-exit]\n"
         "                    [--log-each-line] [--port-file PATH] [--watch]\n"
         "  --config PATH   a daemon file, or a directory with presets/, modes/ and optionally gpumod.yaml;\n"
         "                  without it gpumod runs its embedded demo (simulated GPU + test engines)\n"
         "  --stop-services-on-exit  stop every service on SIGTERM/SIGINT instead of leaving them for\n"
         "                  the next daemon to adopt (the default keeps them running)\n"
         "  --log-each-line write each log line to a file or pipe as it is made (the default there\n"
         "                  batches lines every 100 ms; warnings and errors always go at once)\n"
         "  --port-file PATH once listening, write the port to PATH (with --listen HOST:0, the port the\n"
         "                  kernel picked; for scripts and tests)\n"
         "  --watch         reload when a config file changes, as `watch: true` in the daemon file does\n";
}

// Returns nullopt and prints the problem on bad arguments.
std::optional<ServeOptions> parse_args(const std::vector<std::string>& args) {
  ServeOptions opts;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&](const char* flag) -> std::optional<std::string> {
      if (i + 1 >= args.size()) {
        std::cerr << "gpumod serve: " << flag << " needs a value\n";
        return std::nullopt;
      }
      return args[++i];
    };
    if (a == "--config") {
      auto v = value("--config");
      if (!v) return std::nullopt;
      opts.config_path = *v;
    } else if (a == "--listen") {
      auto v = value("--listen");
      if (!v) return std::nullopt;
      opts.load.listen = *v;
    } else if (a == "--state-dir") {
      auto v = value("--state-dir");
      if (!v) return std::nullopt;
      opts.load.state_dir = fs::path(*v);
    } else if (a == "--log-level") {
      auto v = value("--log-level");
      if (!v) return std::nullopt;
      opts.log_level = *v;
    } else if (a == "--stop-services-on-exit") {
      opts.stop_services_on_exit = true;
    } else if (a == "--log-each-line") {
      opts.log_each_line = true;
    } else if (a == "--watch") {
      opts.watch = true;
    } else if (a == "--port-file") {
      auto v = value("--port-file");
      if (!v) return std::nullopt;
      opts.port_file = fs::path(*v);
    } else if (a == "-h" || a == "--help") {
      print_serve_usage(std::cout);
      std::exit(0);
    } else {
      std::cerr << "gpumod serve: unknown argument '" << a << "'\n";
      print_serve_usage(std::cerr);
      return std::nullopt;
    }
  }
  return opts;
}

// Under systemd, stderr is connected to the journal (JOURNAL_STREAM names its device and
// inode): log there with priorities instead of plain text.
bool stderr_is_journal() {
  const char* js = std::getenv("JOURNAL_STREAM");
  if (js == nullptr) return false;
  struct stat st {};
  if (fstat(STDERR_FILENO, &st) != 0) return false;
  unsigned long long dev = 0, ino = 0;
  if (std::sscanf(js, "%llu:%llu", &dev, &ino) != 2) return false;
  return dev == static_cast<unsigned long long>(st.st_dev) &&
         ino == static_cast<unsigned long long>(st.st_ino);
}

void setup_logging(const std::string& level, bool each_line) {
  std::shared_ptr<spdlog::logger> logger;
  if (stderr_is_journal()) {
    logger = std::make_shared<spdlog::logger>("gpumod", std::make_shared<spdlog::sinks::systemd_sink_mt>());
  } else if (isatty(STDERR_FILENO) != 0) {
    logger = spdlog::stderr_color_mt("gpumod");
  } else if (each_line) {
    // Tools that time events by when a line arrives (bench/gpu_release) need it unbatched.
    logger = spdlog::stderr_logger_mt("gpumod");
  } else {
    // A file or pipe: buffered, since the API logs a line per request (app/buffered_log_sink.hpp).
    logger = std::make_shared<spdlog::logger>("gpumod", make_buffered_stderr_sink());
  }
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(level));
}

config::LoadResult load_config(const ServeOptions& opts) {
  if (opts.config_path) return config::load(*opts.config_path, opts.load);
  return config::embedded_default(opts.load);
}

// NVML when the driver library is present (or demanded), the simulated GPU otherwise.
Result<std::unique_ptr<backends::GpuProbe>> make_probe(const config::DaemonSettings& d,
                                                       const fs::path& sim_dir) {
  using config::ProbeKind;
  if (d.probe != ProbeKind::sim) {
    auto nvml = backends::make_nvml_probe();
    if (nvml) {
      spdlog::info("GPU probe: NVML");
      return std::move(nvml.value());
    }
    if (d.probe == ProbeKind::nvml)
      return make_error("NVML probe requested but unavailable: " + nvml.error());
    spdlog::info("GPU probe: simulated ({}); NVML unavailable: {}", sim_dir.string(), nvml.error());
  }
  return backends::make_sim_probe(d.sim_gpus, sim_dir, d.sim_release_lag, SystemClock::instance());
}

// Blocks the signals we handle in every thread, so only the waiter thread sees them.
sigset_t handled_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  return set;
}

std::string gpu_summary(const scheduler::Snapshot& snap) {
  std::string s;
  for (const auto& g : snap.gpus) {
    if (!s.empty()) s += ", ";
    s += "GPU" + std::to_string(g.index) + " " + std::to_string(g.free_bytes >> 20) + "/" +
         std::to_string(g.total_bytes >> 20) + " MiB free";
  }
  return s;
}

// Fault injection for the end-to-end tests: GPUMOD_FAULT_STALL="STEP:SECONDS" makes the
// scheduler thread sleep SECONDS every time it begins a step named STEP ("mode switch", ...),
// as a stuck backend call would. Unset in normal use; a malformed value is ignored with a
// warning.
std::function<void(const char*)> stall_fault_from_env() {
  const char* spec = std::getenv("GPUMOD_FAULT_STALL");
  if (spec == nullptr || *spec == '\0') return nullptr;
  const std::string text = spec;
  const auto colon = text.rfind(':');
  double seconds = 0;
  try {
    if (colon != std::string::npos) seconds = std::stod(text.substr(colon + 1));
  } catch (const std::exception&) {
    seconds = 0;
  }
  if (colon == std::string::npos || colon == 0 || seconds <= 0) {
    spdlog::warn("GPUMOD_FAULT_STALL='{}' ignored: expected STEP:SECONDS", text);
    return nullptr;
  }
  spdlog::warn("fault injection: the scheduler thread will sleep {} s at every '{}'", seconds,
               text.substr(0, colon));
  return [step = text.substr(0, colon), seconds](const char* what) {
    if (step == what) std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  };
}

// The config serve runs on, its warnings logged; nothing (the errors printed) when it is refused.
std::optional<config::Config> load_for_serve(const ServeOptions& opts) {
  config::LoadResult loaded = load_config(opts);
  for (const auto& d : loaded.diagnostics) {
    if (d.severity == config::Diagnostic::Severity::warning) spdlog::warn("config: {}", d.str());
  }
  if (!loaded.ok()) {
    std::cerr << "gpumod serve: the configuration has errors:\n" << loaded.error_text() << "\n";
    return std::nullopt;
  }
  return std::move(*loaded.config);
}

struct Dirs {
  fs::path logs;  // one <service>.log each
  fs::path sim;   // the simulated GPU's shared state (GPUMOD_SIM_DIR)
};

std::optional<Dirs> make_dirs(const config::DaemonSettings& daemon) {
  std::error_code ec;
  fs::create_directories(daemon.state_dir, ec);
  if (ec) {
    std::cerr << "gpumod serve: cannot create state dir " << daemon.state_dir << ": " << ec.message() << "\n";
    return std::nullopt;
  }
  Dirs dirs{daemon.log_dir.empty() ? daemon.state_dir / "logs" : daemon.log_dir, daemon.state_dir / "sim"};
  fs::create_directories(dirs.logs, ec);
  fs::create_directories(dirs.sim, ec);
  return dirs;
}

// The GPU probe and the runners the scheduler drives.
struct Backends {
  std::unique_ptr<backends::GpuProbe> probe;
  std::unique_ptr<backends::Runner> process_runner;
  std::unique_ptr<backends::Runner> systemd_runner;  // null: no preset asks for it, or no bus
};

std::optional<Backends> make_backends(const config::Config& cfg, const Dirs& dirs) {
  const config::DaemonSettings& daemon = cfg.daemon;
  Backends b;
  auto probe = make_probe(daemon, dirs.sim);
  if (!probe) {
    std::cerr << "gpumod serve: " << probe.error() << "\n";
    return std::nullopt;
  }
  b.probe = std::move(*probe);
  b.process_runner = backends::make_process_runner(daemon.state_dir);
  // The systemd runner is optional: without a bus, services that ask for it fail with the reason.
  bool wants_systemd = false;
  for (const auto& p : cfg.presets) wants_systemd |= p.runner == config::RunnerKind::systemd;
  if (wants_systemd) {
    auto r = backends::make_systemd_runner(daemon.state_dir, daemon.systemd_bus != "system");
    if (r) {
      b.systemd_runner = std::move(r.value());
    } else {
      spdlog::error("systemd runner unavailable ({}); presets with runner: systemd cannot start", r.error());
    }
  }
  return b;
}

scheduler::Deps make_deps(const ServeOptions& opts, const Dirs& dirs, Backends& b,
                          exporter::Metrics& metrics) {
  scheduler::Deps deps;
  deps.metrics = &metrics;
  deps.probe = b.probe.get();
  deps.process_runner = b.process_runner.get();
  deps.systemd_runner = b.systemd_runner.get();
  deps.make_driver = [](const config::Preset& p) { return backends::make_driver(p); };
  deps.make_launch = [dirs](const config::Preset& p, int gpu) {
    return backends::launch_spec(p, gpu, dirs.logs, dirs.sim);
  };
  deps.load_config = [opts]() { return load_config(opts); };
  deps.before_step = stall_fault_from_env();
  deps.log_dir = dirs.logs;
  deps.port_listeners = backends::tcp_listeners;
  return deps;
}

// A reload asked for by SIGHUP or by `watch`. The scheduler logs what it did and reports it as an
// event, in /status and in the reload metric; a failed one keeps the running config.
void reload_and_report(scheduler::Scheduler& sched) {
  sd_notify(0, "RELOADING=1");
  sched.reload().get();
  sd_notify(0, "READY=1");
}

// The signal waiter's loop (its own thread; the signals are blocked in every other one): HUP
// reloads the config, TERM/INT stop the server (so run() returns) and end the loop.
void wait_for_signals(const sigset_t& signals, scheduler::Scheduler& sched, api::ApiServer& server,
                      std::atomic<bool>& signal_seen) {
  for (;;) {
    int sig = 0;
    if (sigwait(&signals, &sig) != 0) continue;
    if (sig == SIGHUP) {
      spdlog::info("SIGHUP: reloading configuration");
      reload_and_report(sched);
      continue;
    }
    if (sig == SIGTERM || sig == SIGINT) {
      spdlog::info("signal {}: shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
      signal_seen = true;
      server.stop();
      return;
    }
  }
}

// The scheduler's heartbeat, watched on a thread of its own: while the loop turns, systemd's
// watchdog (when the unit has WatchdogSec=) is pinged; once it has not turned for
// policy.stall_timeout the pings stop, so systemd restarts the daemon and the next one adopts
// the running services. The log says which step was stuck. /healthz follows the same LoopHealth.
class Watchdog {
 public:
  explicit Watchdog(scheduler::Scheduler& sched) : sched_(sched) {
    std::uint64_t usec = 0;
    systemd_ = sd_watchdog_enabled(0, &usec) > 0 && usec > 0;
    interval_ = std::min<std::chrono::microseconds>(std::chrono::seconds(1),
                                                    std::chrono::microseconds(systemd_ ? usec / 2 : 1000000));
    thread_ = std::thread([this] { run(); });
  }
  ~Watchdog() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

 private:
  void run() {
    bool was_stalled = false;
    std::unique_lock lock(mutex_);
    while (!stopping_) {
      const scheduler::LoopHealth h = sched_.loop_health();
      if (h.stalled && !was_stalled) {
        spdlog::error(
            "scheduler loop stalled: no turn for {} ms (policy.stall_timeout {} ms), stuck in '{}' for {} "
            "ms; "
            "/healthz answers 503{}",
            h.since_last_turn.count(), h.stall_timeout.count(), h.in_flight.empty() ? "?" : h.in_flight,
            h.in_flight_for.count(), systemd_ ? " and the systemd watchdog is no longer pinged" : "");
      } else if (!h.stalled && was_stalled) {
        spdlog::warn("scheduler loop turns again");
      }
      was_stalled = h.stalled;
      if (systemd_ && !h.stalled) {
        auto snap = sched_.snapshot();
        sd_notifyf(0, "WATCHDOG=1\nSTATUS=%s", snap ? gpu_summary(*snap).c_str() : "starting");
      }
      cv_.wait_for(lock, interval_, [this] { return stopping_; });
    }
  }

  scheduler::Scheduler& sched_;
  bool systemd_ = false;
  std::chrono::microseconds interval_{1000000};
  std::mutex mutex_;
  std::condition_variable cv_;
  bool stopping_ = false;  // guarded by mutex_
  std::thread thread_;
};

// --stop-services-on-exit: every service that runs is stopped (each bounded to 60 s).
void stop_every_service(scheduler::Scheduler& sched) {
  auto snap = sched.snapshot();
  std::vector<std::future<scheduler::ActionResult>> stops;
  for (const auto& s : snap->services) {
    if (s.state != policy::SvcState::stopped)
      stops.push_back(sched.service_action(s.id, scheduler::ServiceAction::stop));
  }
  for (auto& f : stops) {
    if (f.wait_for(std::chrono::seconds(60)) == std::future_status::ready) {
      auto r = f.get();
      if (!r.ok) spdlog::warn("stop on exit: {}", r.message);
    }
  }
}

}  // namespace

int run_serve(const std::vector<std::string>& args) {
  auto parsed = parse_args(args);
  if (!parsed) return 2;
  const ServeOptions opts = std::move(*parsed);
  setup_logging(opts.log_level, opts.log_each_line);

  const sigset_t signals = handled_signals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);  // before any thread exists
  signal(SIGPIPE, SIG_IGN);                       // a client hanging up must not kill us

  auto cfg = load_for_serve(opts);
  if (!cfg) return 1;
  const config::DaemonSettings daemon = cfg->daemon;
  spdlog::info("gpumod {} starting: config {}, {} services, {} modes, state dir {}", GPUMOD_VERSION,
               cfg->source, cfg->presets.size(), cfg->modes.size(), daemon.state_dir.string());
  const auto dirs = make_dirs(daemon);
  if (!dirs) return 1;
  exporter::Metrics metrics(exporter::BuildInfo{GPUMOD_VERSION, "unknown", "g++ " __VERSION__});
  auto backends = make_backends(*cfg, *dirs);
  if (!backends) return 1;

  scheduler::Scheduler sched(std::move(*cfg), make_deps(opts, *dirs, *backends, metrics));
  sched.start();

  api::ServerOptions server_opts;
  server_opts.host = daemon.listen_host;
  server_opts.port = daemon.listen_port;
  server_opts.api_token = daemon.api_token;
  server_opts.max_body_bytes = daemon.policy.max_body_bytes;
  api::ApiServer server(sched, metrics, server_opts);
  auto port = server.bind();
  if (!port) {
    std::cerr << "gpumod serve: " << port.error() << "\n";
    sched.stop();
    return 1;
  }
  spdlog::info("listening on http://{}:{}", daemon.listen_host, *port);
  if (opts.port_file) {
    // Written whole or not at all, so a reader never sees half a number.
    if (auto w = backends::run_state::write_file_atomic(*opts.port_file, std::to_string(*port) + "\n"); !w) {
      std::cerr << "gpumod serve: --port-file: " << w.error() << "\n";
      sched.stop();
      return 1;
    }
  }

  std::atomic<bool> signal_seen{false};
  std::thread signal_thread([&] { wait_for_signals(signals, sched, server, signal_seen); });
  std::optional<ConfigWatcher> watcher;
  if (opts.watch || daemon.watch) {
    auto running = sched.config();
    if (running->watched_dirs.empty()) {
      spdlog::warn("watch: the embedded default has no files to watch");
    } else {
      watcher.emplace(running->watched_dirs, [&sched] {
        reload_and_report(sched);
        return sched.config()->watched_dirs;
      });
    }
  }
  {
    Watchdog watchdog(sched);
    auto snap = sched.snapshot();
    const std::string status = "serving on " + daemon.listen_host + ":" + std::to_string(*port) +
                               (snap ? "; " + gpu_summary(*snap) : std::string());
    sd_notifyf(0, "READY=1\nSTATUS=%s\nMAINPID=%d", status.c_str(), static_cast<int>(getpid()));

    server.run();  // returns after server.stop()

    sd_notify(0, "STOPPING=1");
  }
  // If run() ended without a signal, the waiter still sits in sigwait: send the process the
  // shutdown signal (blocked in every thread, so only that sigwait receives it).
  if (!signal_seen) ::kill(::getpid(), SIGTERM);
  signal_thread.join();
  watcher.reset();
  if (opts.stop_services_on_exit) stop_every_service(sched);
  sched.stop();
  spdlog::info("gpumod stopped");
  return 0;
}

}  // namespace gpumod::app
