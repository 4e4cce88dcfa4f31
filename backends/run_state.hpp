// Private helpers shared by the runners: reading /proc, atomic state files, log tails.
// Not part of the backends' public interface (runner.hpp is).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "backends/runner.hpp"
#include "base/result.hpp"

namespace gpumod::backends::run_state {

// The fields of /proc/<pid>/stat gpumod cares about.
struct ProcStat {
  int pid = 0;
  char state = '?';  // R, S, D, Z, T, ...
  int ppid = 0;
  int pgid = 0;
  std::uint64_t start_time = 0;  // field 22, clock ticks since boot
};

// Parse the text of a /proc/<pid>/stat file (exposed for tests: comm may hold spaces and ')').
std::optional<ProcStat> parse_proc_stat(const std::string& text);
// nullopt when the process does not exist (or vanished while being read).
std::optional<ProcStat> read_proc_stat(int pid);
// True when pid exists, is not a zombie, and (when start_time != 0) started at start_time.
bool same_process_alive(int pid, std::uint64_t start_time);
// Every live (non-zombie) process whose process group is pgid.
std::vector<int> pids_in_group(int pgid);
// Every pid listed in a cgroup's cgroup.procs (path as systemd's ControlGroup property:
// "/app.slice/x.service"); tries the v2 and v1 mount points.
std::vector<int> pids_in_cgroup(const std::string& control_group);

// write tmp + rename: a crash of the daemon leaves the old or the new file, never half. Not
// fsynced: runner state only has to outlive the daemon, not a power loss (docs/runners.md).
Result<void> write_file_atomic(const std::filesystem::path& path, const std::string& content);
// Service ids become file names: refuse what could escape the state dir.
Result<void> check_service_id(const std::string& id);

// One persisted record per service under <state_dir>/runners/.
struct Record {
  std::string runner;  // "process" or "systemd"
  RunInfo info;
  std::filesystem::path log_path;
  std::vector<std::string> argv;
};

std::string to_json(const Record& r);
Result<Record> from_json(const std::string& text);
Result<void> save_record(const std::filesystem::path& file, const Record& r);
// All parseable records in dir whose `runner` field equals `runner` (unparseable files are
// logged and skipped, never deleted: a person may want to look at them).
std::vector<std::pair<std::filesystem::path, Record>> load_records(const std::filesystem::path& dir,
                                                                   const std::string& runner);

// The live services of one runner, looked up from calls on different threads. S has a
// `record_file` member: its persisted record, removed when the service is forgotten.
template <typename S>
class ServiceTable {
 public:
  std::shared_ptr<S> find(const std::string& id) {
    std::lock_guard lock(mu_);
    auto it = services_.find(id);
    return it == services_.end() ? nullptr : it->second;
  }
  void put(const std::string& id, std::shared_ptr<S> svc) {
    std::lock_guard lock(mu_);
    services_[id] = std::move(svc);
  }
  // Removes its record file, and the entry if it is still `svc` (not a newer start).
  void forget(const std::string& id, const std::shared_ptr<S>& svc) {
    std::error_code ec;
    std::filesystem::remove(svc->record_file, ec);
    std::lock_guard lock(mu_);
    auto it = services_.find(id);
    if (it != services_.end() && it->second == svc) services_.erase(it);
  }

 private:
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<S>> services_;
};

}  // namespace gpumod::backends::run_state
