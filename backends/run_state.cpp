#include "backends/run_state.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <system_error>

#include <spdlog/spdlog.h>

namespace gpumod::backends {

// FNV-1a over length-prefixed fields: stable across runs and builds (std::hash is not).
std::string hash_argv(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env) {
  std::uint64_t h = 1469598103934665603ULL;
  auto mix = [&h](const std::string& s) {
    std::string field = std::to_string(s.size()) + ":" + s;
    for (unsigned char c : field) {
      h ^= c;
      h *= 1099511628211ULL;
    }
  };
  for (const auto& a : argv) mix(a);
  mix("\x01env");
  for (const auto& [k, v] : env) {
    mix(k);
    mix(v);
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

namespace run_state {

namespace fs = std::filesystem;

std::optional<ProcStat> parse_proc_stat(const std::string& text) {
  // "pid (comm) S ppid pgrp ..." where comm may contain anything, so split at the LAST ')'.
  auto open = text.find('(');
  auto close = text.rfind(')');
  if (open == std::string::npos || close == std::string::npos || close < open) return std::nullopt;
  ProcStat st;
  try {
    st.pid = std::stoi(text.substr(0, open));
  } catch (const std::exception&) {
    return std::nullopt;
  }
  std::istringstream rest(text.substr(close + 1));
  std::vector<std::string> f;  // f[0] is field 3 (state)
  std::string tok;
  while (rest >> tok && f.size() < 20) f.push_back(tok);
  if (f.size() < 20 || f[0].empty()) return std::nullopt;
  try {
    st.state = f[0][0];
    st.ppid = std::stoi(f[1]);
    st.pgid = std::stoi(f[2]);
    st.start_time = std::stoull(f[19]);  // field 22
  } catch (const std::exception&) {
    return std::nullopt;
  }
  return st;
}

std::optional<ProcStat> read_proc_stat(int pid) {
  if (pid <= 0) return std::nullopt;
  // read(2), not an ifstream: a process that exits between open and read makes the read fail
  // with ESRCH, which libstdc++'s filebuf turns into an exception out of an istreambuf_iterator
  // (seen under load: it ended a runner test with std::terminate).
  const std::string path = "/proc/" + std::to_string(pid) + "/stat";
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  std::string text;
  std::array<char, 1024> buf{};
  for (;;) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    text.append(buf.data(), static_cast<std::size_t>(n));
  }
  ::close(fd);
  if (text.empty()) return std::nullopt;
  return parse_proc_stat(text);
}

bool same_process_alive(int pid, std::uint64_t start_time) {
  auto st = read_proc_stat(pid);
  if (!st || st->state == 'Z' || st->state == 'X') return false;
  return start_time == 0 || st->start_time == start_time;
}

std::vector<int> pids_in_group(int pgid) {
  std::vector<int> out;
  if (pgid <= 0) return out;
  std::error_code ec;
  for (fs::directory_iterator it("/proc", ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.empty() || !std::all_of(name.begin(), name.end(), [](char c) { return c >= '0' && c <= '9'; }))
      continue;
    auto st = read_proc_stat(std::stoi(name));
    if (st && st->pgid == pgid && st->state != 'Z' && st->state != 'X') out.push_back(st->pid);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<int> pids_in_cgroup(const std::string& control_group) {
  std::vector<int> out;
  if (control_group.empty()) return out;
  for (const char* root : {"/sys/fs/cgroup", "/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd"}) {
    std::ifstream in(std::string(root) + control_group + "/cgroup.procs");
    if (!in) continue;
    int pid = 0;
    while (in >> pid) out.push_back(pid);
    break;
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

Result<void> write_file_atomic(const fs::path& path, const std::string& content) {
  std::error_code ec;
  fs::create_directories(path.parent_path(), ec);
  if (ec) return make_error("cannot create " + path.parent_path().string() + ": " + ec.message());
  const fs::path tmp = path.string() + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return make_error("cannot write " + tmp.string() + ": " + std::strerror(errno));
  const char* p = content.data();
  std::size_t left = content.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      std::string err = std::strerror(errno);
      ::close(fd);
      ::unlink(tmp.c_str());
      return make_error("cannot write " + tmp.string() + ": " + err);
    }
    p += n;
    left -= static_cast<std::size_t>(n);
  }
  // No fsync (of the file or the directory): the record only has to survive a daemon crash
  // or restart, and the page cache outlives those. After a power loss the services are gone
  // too, and a torn or missing record just means nothing to adopt. The fsyncs cost several
  // ms on every start (bench/README.md "HTTP", scheduler overhead).
  if (::close(fd) != 0) {
    std::string err = std::strerror(errno);
    ::unlink(tmp.c_str());
    return make_error("cannot flush " + tmp.string() + ": " + err);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    std::string err = std::strerror(errno);
    ::unlink(tmp.c_str());
    return make_error("cannot rename " + tmp.string() + " to " + path.string() + ": " + err);
  }
  return {};
}

Result<void> check_service_id(const std::string& id) {
  if (id.empty()) return make_error("service id is empty");
  if (id.front() == '.' || id.find('/') != std::string::npos || id.find('\0') != std::string::npos)
    return make_error("service id '" + id + "' cannot be used as a file name (no '/', no leading '.')");
  return {};
}

std::string to_json(const Record& r) {
  nlohmann::json j;
  j["runner"] = r.runner;
  j["service_id"] = r.info.service_id;
  j["pid"] = r.info.pid;
  j["pgid"] = r.info.pgid;
  j["start_time"] = r.info.start_time;
  j["argv_hash"] = r.info.argv_hash;
  j["unit"] = r.info.unit;
  j["log_path"] = r.log_path.string();
  j["argv"] = r.argv;
  return j.dump(2) + "\n";
}

Result<Record> from_json(const std::string& text) {
  try {
    auto j = nlohmann::json::parse(text);
    Record r;
    r.runner = j.at("runner").get<std::string>();
    r.info.service_id = j.at("service_id").get<std::string>();
    r.info.pid = j.value("pid", 0);
    r.info.pgid = j.value("pgid", 0);
    r.info.start_time = j.value("start_time", std::uint64_t{0});
    r.info.argv_hash = j.value("argv_hash", std::string());
    r.info.unit = j.value("unit", std::string());
    r.log_path = j.value("log_path", std::string());
    r.argv = j.value("argv", std::vector<std::string>());
    return r;
  } catch (const std::exception& e) {
    return make_error(std::string("bad runner state record: ") + e.what());
  }
}

Result<void> save_record(const fs::path& file, const Record& r) {
  return write_file_atomic(file, to_json(r));
}

std::vector<std::pair<fs::path, Record>> load_records(const fs::path& dir, const std::string& runner) {
  std::vector<std::pair<fs::path, Record>> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const auto& p = it->path();
    if (p.extension() != ".json" || !it->is_regular_file()) continue;
    std::ifstream in(p);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto rec = from_json(text);
    if (!rec) {
      spdlog::warn("runner state {}: {} (left in place)", p.string(), rec.error());
      continue;
    }
    if (rec->runner == runner) out.emplace_back(p, std::move(rec.value()));
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  return out;
}

}  // namespace run_state
}  // namespace gpumod::backends
