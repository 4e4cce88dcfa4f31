// The systemd runner: services as systemd units, driven over sd-bus. A preset with a `unit`
// starts that named unit; otherwise a transient unit "gpumod-<id>.service" is built from the
// rendered argv (KillMode=control-group, so every process of the service dies with it).
// Every operation opens its own bus connection: sd_bus objects are not thread-safe, and the
// runner is called from several worker threads. State: <state_dir>/runners/<id>.unit.json.
#include <signal.h>
#include <sys/stat.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-journal.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>

#include <spdlog/spdlog.h>

#include "backends/command.hpp"
#include "backends/run_state.hpp"
#include "backends/service_log.hpp"
#include "backends/runner.hpp"

namespace gpumod::backends {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr const char* kDest = "org.freedesktop.systemd1";
constexpr const char* kPath = "/org/freedesktop/systemd1";
constexpr const char* kManager = "org.freedesktop.systemd1.Manager";
constexpr const char* kUnitIface = "org.freedesktop.systemd1.Unit";
constexpr const char* kServiceIface = "org.freedesktop.systemd1.Service";
constexpr auto kJobTimeout = 60s;  // a start job of Type=exec ends once exec() is done
constexpr auto kKillWait = 10s;    // after KillUnit SIGKILL
constexpr int kJournalLines = 10;

// ---- RAII for sd-bus objects ----
struct BusClose {
  void operator()(sd_bus* b) const { sd_bus_flush_close_unref(b); }
};
using BusPtr = std::unique_ptr<sd_bus, BusClose>;
struct MsgUnref {
  void operator()(sd_bus_message* m) const { sd_bus_message_unref(m); }
};
using MsgPtr = std::unique_ptr<sd_bus_message, MsgUnref>;
struct SlotUnref {
  void operator()(sd_bus_slot* s) const { sd_bus_slot_unref(s); }
};
using SlotPtr = std::unique_ptr<sd_bus_slot, SlotUnref>;
struct JournalClose {
  void operator()(sd_journal* j) const { sd_journal_close(j); }
};
using JournalPtr = std::unique_ptr<sd_journal, JournalClose>;

class BusError {
 public:
  BusError() = default;
  ~BusError() { sd_bus_error_free(&e_); }
  BusError(const BusError&) = delete;
  BusError& operator=(const BusError&) = delete;
  sd_bus_error* get() { return &e_; }
  [[nodiscard]] bool has_name(const char* name) const { return sd_bus_error_has_name(&e_, name); }
  [[nodiscard]] std::string text(int r) const {
    if (sd_bus_error_is_set(&e_)) return std::string(e_.message ? e_.message : e_.name);
    return std::strerror(-r);
  }

 private:
  sd_bus_error e_ = SD_BUS_ERROR_NULL;
};

// systemd's unit name escaping for what is not [A-Za-z0-9:_.-]: "\xNN".
std::string escape_unit_part(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == ':' || c == '_' || c == '.' || c == '-') {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  return out;
}

struct UnitState {
  bool loaded = false;  // false: no such unit (never started, or garbage-collected)
  std::string active_state;
  std::string sub_state;
  std::string result;  // Service.Result: success, exit-code, signal, timeout, ...
  std::uint32_t main_pid = 0;
  std::int32_t exec_main_code = 0;    // CLD_EXITED / CLD_KILLED / CLD_DUMPED
  std::int32_t exec_main_status = 0;  // exit status or signal number
  std::string control_group;
};

// Everything after JobRemoved is read from here: our job's id and result.
struct JobWatch {
  std::string job_path;
  std::string result;
  bool done = false;
  std::map<std::string, std::string> early_results;  // jobs that ended before we knew the path
};

int on_job_removed(sd_bus_message* m, void* userdata, sd_bus_error* /*ret_error*/) {
  auto* w = static_cast<JobWatch*>(userdata);
  std::uint32_t id = 0;
  const char* path = nullptr;
  const char* unit = nullptr;
  const char* result = nullptr;
  if (sd_bus_message_read(m, "uoss", &id, &path, &unit, &result) < 0) return 0;
  if (!w->job_path.empty() && w->job_path == path) {
    w->result = result;
    w->done = true;
  } else if (w->job_path.empty()) {
    w->early_results[path] = result;
  }
  return 0;
}

class Bus {
 public:
  static Result<Bus> connect(bool user) {
    sd_bus* raw = nullptr;
    int r = user ? sd_bus_open_user(&raw) : sd_bus_open_system(&raw);
    if (r >= 0) return Bus(BusPtr(raw));
    std::string first = std::strerror(-r);
    if (user) {
      // Root without a session bus: `systemctl --user` uses the manager's private socket too.
      const char* rt = std::getenv("XDG_RUNTIME_DIR");
      if (rt) {
        std::string addr = std::string("unix:path=") + rt + "/systemd/private";
        raw = nullptr;
        if (sd_bus_new(&raw) >= 0) {
          BusPtr b(raw);
          if (sd_bus_set_address(b.get(), addr.c_str()) >= 0 && sd_bus_start(b.get()) >= 0)
            return Bus(std::move(b));
        }
      }
    }
    return make_error(std::string("cannot connect to the systemd ") + (user ? "user" : "system") +
                      " bus: " + first);
  }

  sd_bus* get() const { return bus_.get(); }

  // Subscribe to JobRemoved before the call that creates the job (no race).
  Result<void> watch_jobs(JobWatch* w) {
    sd_bus_slot* slot = nullptr;
    int r = sd_bus_match_signal(bus_.get(), &slot, kDest, kPath, kManager, "JobRemoved", on_job_removed, w);
    if (r < 0) return make_error(std::string("cannot watch systemd jobs: ") + std::strerror(-r));
    slot_.reset(slot);
    BusError err;
    r = sd_bus_call_method(bus_.get(), kDest, kPath, kManager, "Subscribe", err.get(), nullptr, "");
    if (r < 0 && !err.has_name("org.freedesktop.systemd1.AlreadySubscribed"))
      return make_error("systemd Subscribe failed: " + err.text(r));
    return {};
  }

  // Wait until our job ended; returns its result ("done", "failed", "timeout", ...).
  Result<std::string> wait_job(JobWatch* w, std::chrono::milliseconds limit) {
    if (auto it = w->early_results.find(w->job_path); it != w->early_results.end()) return it->second;
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!w->done) {
      int r = sd_bus_process(bus_.get(), nullptr);
      if (r < 0) return make_error(std::string("systemd bus: ") + std::strerror(-r));
      if (r > 0) continue;
      auto now = std::chrono::steady_clock::now();
      if (now >= deadline) return make_error("timed out waiting for job " + w->job_path);
      auto left = std::chrono::duration_cast<std::chrono::microseconds>(deadline - now);
      r = sd_bus_wait(bus_.get(), static_cast<std::uint64_t>(left.count()));
      if (r < 0 && r != -EINTR) return make_error(std::string("systemd bus: ") + std::strerror(-r));
    }
    return w->result;
  }

  // A manager method that returns a job object path, e.g. StartUnit(ss).
  Result<std::string> job_call(const char* method, const std::string& unit, const char* mode) {
    BusError err;
    sd_bus_message* reply = nullptr;
    int r = sd_bus_call_method(bus_.get(), kDest, kPath, kManager, method, err.get(), &reply, "ss",
                               unit.c_str(), mode);
    MsgPtr guard(reply);
    if (r < 0) return make_error(method + std::string(" ") + unit + ": " + err.text(r));
    const char* job = nullptr;
    r = sd_bus_message_read(reply, "o", &job);
    if (r < 0) return make_error(method + std::string(" ") + unit + ": bad reply");
    return std::string(job);
  }

  // A manager method taking only a unit name, e.g. ResetFailedUnit(s).
  Result<void> unit_call(const char* method, const std::string& unit) {
    BusError err;
    int r =
        sd_bus_call_method(bus_.get(), kDest, kPath, kManager, method, err.get(), nullptr, "s", unit.c_str());
    if (r < 0) return make_error(method + std::string(" ") + unit + ": " + err.text(r));
    return {};
  }

  UnitState unit_state(const std::string& unit) {
    UnitState s;
    BusError err;
    sd_bus_message* reply = nullptr;
    int r = sd_bus_call_method(bus_.get(), kDest, kPath, kManager, "GetUnit", err.get(), &reply, "s",
                               unit.c_str());
    MsgPtr guard(reply);
    const char* obj = nullptr;
    if (r < 0 || sd_bus_message_read(reply, "o", &obj) < 0) return s;
    s.loaded = true;
    const std::string path = obj;
    s.active_state = get_string(path, kUnitIface, "ActiveState");
    s.sub_state = get_string(path, kUnitIface, "SubState");
    s.result = get_string(path, kServiceIface, "Result");
    s.control_group = get_string(path, kServiceIface, "ControlGroup");
    BusError e2;
    sd_bus_get_property_trivial(bus_.get(), kDest, path.c_str(), kServiceIface, "MainPID", e2.get(), 'u',
                                &s.main_pid);
    BusError e3;
    sd_bus_get_property_trivial(bus_.get(), kDest, path.c_str(), kServiceIface, "ExecMainCode", e3.get(), 'i',
                                &s.exec_main_code);
    BusError e4;
    sd_bus_get_property_trivial(bus_.get(), kDest, path.c_str(), kServiceIface, "ExecMainStatus", e4.get(),
                                'i', &s.exec_main_status);
    return s;
  }

 private:
  explicit Bus(BusPtr b) : bus_(std::move(b)) {}

  std::string get_string(const std::string& path, const char* iface, const char* prop) {
    BusError err;
    char* value = nullptr;
    int r = sd_bus_get_property_string(bus_.get(), kDest, path.c_str(), iface, prop, err.get(), &value);
    std::string out = r >= 0 && value ? value : "";
    std::free(value);
    return out;
  }

  BusPtr bus_;
  SlotPtr slot_;
};

bool is_running_state(const std::string& active) {
  return active == "active" || active == "activating" || active == "reloading" || active == "deactivating";
}

// Last journal lines of a unit; says so (never fails) when the journal cannot be read.
std::string journal_tail(const std::string& unit, bool user) {
  sd_journal* raw = nullptr;
  int r = sd_journal_open(&raw, SD_JOURNAL_LOCAL_ONLY);
  if (r < 0) return std::string("journal unavailable: ") + std::strerror(-r);
  JournalPtr j(raw);
  const std::string match = std::string(user ? "_SYSTEMD_USER_UNIT=" : "_SYSTEMD_UNIT=") + unit;
  const std::string match2 = "UNIT=" + unit;  // the manager's own messages about the unit
  const std::string match3 = "USER_UNIT=" + unit;
  sd_journal_add_match(j.get(), match.c_str(), 0);
  sd_journal_add_disjunction(j.get());
  sd_journal_add_match(j.get(), match2.c_str(), 0);
  sd_journal_add_disjunction(j.get());
  sd_journal_add_match(j.get(), match3.c_str(), 0);
  if (sd_journal_seek_tail(j.get()) < 0) return "journal unavailable: cannot seek";
  std::vector<std::string> lines;
  while (static_cast<int>(lines.size()) < kJournalLines && sd_journal_previous(j.get()) > 0) {
    const void* data = nullptr;
    size_t len = 0;
    if (sd_journal_get_data(j.get(), "MESSAGE", &data, &len) >= 0) {
      std::string field(static_cast<const char*>(data), len);
      lines.push_back(field.substr(std::strlen("MESSAGE=")));
    }
  }
  if (lines.empty()) return "no journal entries for " + unit;
  std::string out;
  for (auto it = lines.rbegin(); it != lines.rend(); ++it) out += (out.empty() ? "" : "\n") + *it;
  return out;
}

struct Service {
  run_state::Record rec;
  fs::path record_file;
  bool transient = true;
};

class SystemdRunner final : public Runner {
 public:
  SystemdRunner(fs::path state_dir, bool user) : state_dir_(std::move(state_dir)), user_(user) {
    std::error_code ec;
    fs::create_directories(state_dir_ / "runners", ec);
  }

  const char* kind() const override { return "systemd"; }

  Result<RunInfo> start(const LaunchSpec& spec) override {
    if (auto ok = run_state::check_service_id(spec.service_id); !ok) return make_error(ok.error());
    const bool transient = spec.unit.empty();
    std::string unit = transient ? "gpumod-" + escape_unit_part(spec.service_id) + ".service" : spec.unit;
    if (!transient && unit.find('.') == std::string::npos) unit += ".service";
    if (transient && (spec.argv.empty() || spec.argv[0].empty()))
      return make_error("service '" + spec.service_id + "': empty command (argv)");
    if (running(spec.service_id))
      return make_error("service '" + spec.service_id + "' is already running (" + unit + ")");

    JobWatch watch;  // outlives the bus and its match slot, which point at it
    auto bus = Bus::connect(user_);
    if (!bus) return make_error(bus.error());
    if (auto w = bus->watch_jobs(&watch); !w) return make_error(w.error());

    fs::path log_path = spec.log_path;
    Result<std::string> job = std::string();
    if (transient) {
      (void)bus->unit_call("ResetFailedUnit", unit);  // a failed earlier run keeps the name
      auto exe = find_executable(spec.argv[0], spec.env);
      if (!exe) return make_error(exe.error());
      if (!log_path.empty()) {
        std::error_code ec;
        fs::create_directories(log_path.parent_path(), ec);
        if (auto size = fs::file_size(log_path, ec); !ec && size > 8ULL * 1024 * 1024)
          fs::rename(log_path, log_path.string() + ".1", ec);
      }
      job = start_transient(*bus, unit, *exe, spec, log_path);
    } else {
      job = bus->job_call("StartUnit", unit, "replace");
    }
    if (!job) return make_error("service '" + spec.service_id + "': " + job.error());
    watch.job_path = job.value();
    auto result = bus->wait_job(&watch, kJobTimeout);
    UnitState st = bus->unit_state(unit);
    if (!result || result.value() != "done" || !is_running_state(st.active_state)) {
      std::string msg = "service '" + spec.service_id + "': unit " + unit + " failed to start: job result " +
                        (result ? result.value() : result.error()) + ", state " +
                        (st.loaded ? st.active_state + "/" + st.sub_state : "not loaded");
      if (!st.result.empty() && st.result != "success") msg += ", service result " + st.result;
      if (st.exec_main_code != 0) msg += ", " + describe_main_exit(st);
      msg += "; journal: " + journal_tail(unit, user_);
      if (!log_path.empty()) {
        std::string tail = tail_lines(log_path, kJournalLines);
        if (!tail.empty()) msg += "; last log lines:\n" + tail;
      }
      if (transient) (void)bus->unit_call("ResetFailedUnit", unit);
      return make_error(msg);
    }

    auto svc = std::make_shared<Service>();
    svc->transient = transient;
    svc->rec.runner = "systemd";
    svc->rec.info.service_id = spec.service_id;
    svc->rec.info.unit = unit;
    svc->rec.info.pid = static_cast<int>(st.main_pid);
    if (auto ps = run_state::read_proc_stat(svc->rec.info.pid)) {
      svc->rec.info.pgid = ps->pgid;
      svc->rec.info.start_time = ps->start_time;
    }
    svc->rec.info.argv_hash = hash_argv(spec.argv, spec.env);
    svc->rec.log_path = log_path;
    svc->rec.argv = spec.argv;
    svc->record_file = state_dir_ / "runners" / (spec.service_id + ".unit.json");
    if (auto saved = run_state::save_record(svc->record_file, svc->rec); !saved)
      spdlog::error("service '{}': {} (a daemon restart will not adopt it)", spec.service_id, saved.error());
    spdlog::info("service '{}' started as {} (MainPID {})", spec.service_id, unit, st.main_pid);
    RunInfo info = svc->rec.info;
    services_.put(spec.service_id, svc);
    return info;
  }

  Result<void> stop(const std::string& service_id, std::chrono::milliseconds grace,
                    const StopSignalled& signalled) override {
    auto svc = find(service_id);
    if (!svc) return {};
    const std::string& unit = svc->rec.info.unit;
    JobWatch watch;  // outlives the bus and its match slot, which point at it
    auto bus = Bus::connect(user_);
    if (!bus) return make_error(bus.error());
    if (auto w = bus->watch_jobs(&watch); !w) return make_error(w.error());
    UnitState st = bus->unit_state(unit);
    if (st.loaded && is_running_state(st.active_state)) {
      auto job = bus->job_call("StopUnit", unit, "replace");
      if (!job) return make_error("service '" + service_id + "': " + job.error());
      watch.job_path = job.value();
      if (signalled) signalled();  // systemd sends SIGTERM as it runs the job, right away
      auto done = bus->wait_job(&watch, grace);
      if (!done) {
        spdlog::warn("service '{}': {} still stopping after {} ms, sending SIGKILL to its cgroup", service_id,
                     unit, grace.count());
        BusError err;
        int r = sd_bus_call_method(bus->get(), kDest, kPath, kManager, "KillUnit", err.get(), nullptr, "ssi",
                                   unit.c_str(), "all", SIGKILL);
        if (r < 0) spdlog::warn("KillUnit {}: {}", unit, err.text(r));
        auto killed = bus->wait_job(&watch, std::chrono::duration_cast<std::chrono::milliseconds>(kKillWait));
        if (!killed)
          return make_error("service '" + service_id + "': " + unit + " did not stop after SIGKILL");
      }
      st = bus->unit_state(unit);
      if (st.loaded && is_running_state(st.active_state))
        return make_error("service '" + service_id + "': " + unit + " is still " + st.active_state +
                          " after stop");
    }
    if (svc->transient && st.loaded && st.active_state == "failed")
      (void)bus->unit_call("ResetFailedUnit", unit);
    forget(service_id, svc);
    spdlog::info("service '{}' stopped ({})", service_id, unit);
    return {};
  }

  std::optional<ExitInfo> poll_exit(const std::string& service_id) override {
    auto svc = find(service_id);
    if (!svc) return std::nullopt;
    auto bus = Bus::connect(user_);
    if (!bus) return std::nullopt;  // cannot tell; the next poll tries again
    const std::string& unit = svc->rec.info.unit;
    UnitState st = bus->unit_state(unit);
    if (st.loaded && is_running_state(st.active_state)) return std::nullopt;
    ExitInfo exit;
    if (!st.loaded) {
      exit.message = "unit " + unit + " ended and was unloaded; its exit status is unknown";
    } else {
      if (st.exec_main_code == CLD_EXITED) {
        exit.exit_code = st.exec_main_status;
      } else if (st.exec_main_code == CLD_KILLED || st.exec_main_code == CLD_DUMPED) {
        exit.signal = st.exec_main_status;
      }
      exit.message = "unit " + unit + " is " + st.active_state + "/" + st.sub_state;
      if (!st.result.empty()) exit.message += " (result " + st.result + ")";
      if (st.exec_main_code != 0) exit.message += ", " + describe_main_exit(st);
      if (svc->transient && st.active_state == "failed") (void)bus->unit_call("ResetFailedUnit", unit);
    }
    std::string tail =
        svc->rec.log_path.empty() ? "" : tail_lines(svc->rec.log_path, kJournalLines);
    exit.message += tail.empty() ? "; journal: " + journal_tail(unit, user_) : "; last log lines:\n" + tail;
    forget(service_id, svc);
    return exit;
  }

  bool running(const std::string& service_id) override {
    auto svc = find(service_id);
    if (!svc) return false;
    auto bus = Bus::connect(user_);
    if (!bus) return false;
    UnitState st = bus->unit_state(svc->rec.info.unit);
    return st.loaded && is_running_state(st.active_state);
  }

  std::vector<int> pids(const std::string& service_id) override {
    auto svc = find(service_id);
    if (!svc) return {};
    auto bus = Bus::connect(user_);
    if (!bus) return {};
    UnitState st = bus->unit_state(svc->rec.info.unit);
    auto out = run_state::pids_in_cgroup(st.control_group);
    if (out.empty() && st.main_pid > 0) out.push_back(static_cast<int>(st.main_pid));
    return out;
  }

  std::vector<RunInfo> adopt() override {
    std::vector<RunInfo> adopted;
    auto bus = Bus::connect(user_);
    if (!bus) {
      spdlog::error("systemd runner: cannot adopt: {}", bus.error());
      return adopted;
    }
    for (auto& [file, rec] : run_state::load_records(state_dir_ / "runners", "systemd")) {
      const std::string id = rec.info.service_id;
      if (auto existing = find(id)) {
        adopted.push_back(existing->rec.info);
        continue;
      }
      UnitState st = bus->unit_state(rec.info.unit);
      const bool transient = rec.info.unit.rfind("gpumod-", 0) == 0;
      if (!st.loaded || !is_running_state(st.active_state)) {
        spdlog::info("service '{}': unit {} is {}; forgetting it", id, rec.info.unit,
                     st.loaded ? st.active_state : "gone");
        if (transient && st.loaded && st.active_state == "failed")
          (void)bus->unit_call("ResetFailedUnit", rec.info.unit);
        std::error_code ec;
        fs::remove(file, ec);
        continue;
      }
      auto svc = std::make_shared<Service>();
      svc->rec = rec;
      svc->rec.info.pid = static_cast<int>(st.main_pid);
      svc->record_file = file;
      svc->transient = transient;
      spdlog::info("service '{}': adopted unit {} (MainPID {})", id, rec.info.unit, st.main_pid);
      adopted.push_back(svc->rec.info);
      services_.put(id, std::move(svc));
    }
    return adopted;
  }

 private:
  static std::string describe_main_exit(const UnitState& st) {
    if (st.exec_main_code == CLD_EXITED)
      return "main process exited with status " + std::to_string(st.exec_main_status);
    if (st.exec_main_code == CLD_KILLED || st.exec_main_code == CLD_DUMPED)
      return "main process killed by signal " + std::to_string(st.exec_main_status);
    return "main process code " + std::to_string(st.exec_main_code);
  }

  Result<std::string> start_transient(Bus& bus, const std::string& unit, const std::string& exe,
                                      const LaunchSpec& spec, const fs::path& log_path) {
    sd_bus_message* raw = nullptr;
    int r = sd_bus_message_new_method_call(bus.get(), &raw, kDest, kPath, kManager, "StartTransientUnit");
    MsgPtr m(raw);
    if (r < 0) return make_error(std::string("StartTransientUnit: ") + std::strerror(-r));
    std::vector<std::string> env_list;
    env_list.reserve(spec.env.size());
    for (const auto& [k, v] : spec.env) {
      std::string kv = k;
      kv += '=';
      kv += v;
      env_list.push_back(std::move(kv));
    }
    auto strv = [](std::vector<std::string>& v) {
      std::vector<char*> out;
      out.reserve(v.size() + 1);
      for (auto& s : v) out.push_back(s.data());
      out.push_back(nullptr);
      return out;
    };
    std::vector<std::string> argv = spec.argv;
    auto argv_p = strv(argv);
    auto env_p = strv(env_list);
    const std::string description = "gpumod service " + spec.service_id;
    const std::string work_dir = spec.working_dir.empty() ? state_dir_.string() : spec.working_dir.string();

    r = sd_bus_message_append(m.get(), "ss", unit.c_str(), "replace");
    if (r >= 0) r = sd_bus_message_open_container(m.get(), 'a', "(sv)");
    if (r >= 0)
      r = sd_bus_message_append(m.get(), "(sv)(sv)(sv)(sv)", "Description", "s", description.c_str(), "Type",
                                "s", "exec", "KillMode", "s", "control-group", "WorkingDirectory", "s",
                                work_dir.c_str());
    // ExecStart: a(sasb) = [(path, argv, ignore_failure)]
    if (r >= 0) r = sd_bus_message_open_container(m.get(), 'r', "sv");
    if (r >= 0) r = sd_bus_message_append(m.get(), "s", "ExecStart");
    if (r >= 0) r = sd_bus_message_open_container(m.get(), 'v', "a(sasb)");
    if (r >= 0) r = sd_bus_message_open_container(m.get(), 'a', "(sasb)");
    if (r >= 0) r = sd_bus_message_open_container(m.get(), 'r', "sasb");
    if (r >= 0) r = sd_bus_message_append(m.get(), "s", exe.c_str());
    if (r >= 0) r = sd_bus_message_append_strv(m.get(), argv_p.data());
    if (r >= 0) r = sd_bus_message_append(m.get(), "b", 0);
    for (int i = 0; i < 4 && r >= 0; ++i) r = sd_bus_message_close_container(m.get());
    if (r >= 0 && !env_list.empty()) {
      r = sd_bus_message_open_container(m.get(), 'r', "sv");
      if (r >= 0) r = sd_bus_message_append(m.get(), "s", "Environment");
      if (r >= 0) r = sd_bus_message_open_container(m.get(), 'v', "as");
      if (r >= 0) r = sd_bus_message_append_strv(m.get(), env_p.data());
      for (int i = 0; i < 2 && r >= 0; ++i) r = sd_bus_message_close_container(m.get());
    }
    if (r >= 0 && !log_path.empty())
      r = sd_bus_message_append(m.get(), "(sv)(sv)", "StandardOutputFileToAppend", "s", log_path.c_str(),
                                "StandardErrorFileToAppend", "s", log_path.c_str());
    if (r >= 0) r = sd_bus_message_close_container(m.get());
    if (r >= 0) r = sd_bus_message_append(m.get(), "a(sa(sv))", 0);  // no auxiliary units
    if (r < 0)
      return make_error(std::string("cannot build StartTransientUnit for ") + unit + ": " +
                        std::strerror(-r));

    BusError err;
    sd_bus_message* reply = nullptr;
    r = sd_bus_call(bus.get(), m.get(), 0, err.get(), &reply);
    MsgPtr reply_guard(reply);
    if (r < 0) return make_error("StartTransientUnit " + unit + ": " + err.text(r));
    const char* job = nullptr;
    if (sd_bus_message_read(reply, "o", &job) < 0)
      return make_error("StartTransientUnit " + unit + ": bad reply");
    return std::string(job);
  }

  std::shared_ptr<Service> find(const std::string& id) { return services_.find(id); }
  void forget(const std::string& id, const std::shared_ptr<Service>& svc) { services_.forget(id, svc); }

  fs::path state_dir_;
  bool user_;
  run_state::ServiceTable<Service> services_;
};

}  // namespace

Result<void> systemd_daemon_reload(bool user_bus) {
  auto bus = Bus::connect(user_bus);
  if (!bus) return make_error(bus.error());
  BusError err;
  // Reload returns once the manager has re-read its unit files.
  int r = sd_bus_call_method(bus->get(), kDest, kPath, kManager, "Reload", err.get(), nullptr, "");
  if (r < 0) return make_error("systemd daemon-reload: " + err.text(r));
  return {};
}

Result<std::unique_ptr<Runner>> make_systemd_runner(const std::filesystem::path& state_dir, bool user_bus) {
  auto bus = Bus::connect(user_bus);
  if (!bus) return make_error(bus.error());
  return std::unique_ptr<Runner>(std::make_unique<SystemdRunner>(state_dir, user_bus));
}

}  // namespace gpumod::backends
