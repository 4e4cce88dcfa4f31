#include "tests/support/systemd_user_manager.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <system_error>
#include <thread>

extern char** environ;  // NOLINT(readability-redundant-declaration)

namespace gpumod::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr auto kStartDeadline = 20s;  // generous: slow CI machines
constexpr auto kStopDeadline = 20s;

std::string read_all(const fs::path& p) {
  std::ifstream in(p);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::optional<fs::path> find_systemd_binary() {
  for (const char* p : {"/lib/systemd/systemd", "/usr/lib/systemd/systemd"}) {
    if (::access(p, X_OK) == 0) return fs::path(p);
  }
  return std::nullopt;
}

// The cgroup directories (one per mounted hierarchy systemd uses) holding this process.
std::vector<fs::path> own_cgroup_dirs() {
  std::vector<fs::path> dirs;
  std::ifstream in("/proc/self/cgroup");
  std::string line;
  const bool pure_v2 = fs::exists("/sys/fs/cgroup/cgroup.controllers");
  while (std::getline(in, line)) {
    auto c1 = line.find(':');
    auto c2 = line.find(':', c1 + 1);
    if (c1 == std::string::npos || c2 == std::string::npos) continue;
    const std::string controllers = line.substr(c1 + 1, c2 - c1 - 1);
    const std::string path = line.substr(c2 + 1);
    if (controllers.empty()) {
      fs::path root = pure_v2 ? "/sys/fs/cgroup" : "/sys/fs/cgroup/unified";
      if (fs::exists(root / "cgroup.procs")) dirs.push_back(root.string() + (path == "/" ? "" : path));
    } else if (controllers == "name=systemd" && !pure_v2) {
      dirs.push_back(std::string("/sys/fs/cgroup/systemd") + (path == "/" ? "" : path));
    }
  }
  return dirs;
}

bool call_version(sd_bus* bus) {
  sd_bus_error err = SD_BUS_ERROR_NULL;
  char* version = nullptr;
  int r = sd_bus_get_property_string(bus, "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
                                     "org.freedesktop.systemd1.Manager", "Version", &err, &version);
  sd_bus_error_free(&err);
  std::free(version);
  return r >= 0;
}

}  // namespace

SystemdUserManager::SystemdUserManager() {
  start();
}

SystemdUserManager::~SystemdUserManager() {
  stop();
}

std::map<std::string, std::string> SystemdUserManager::env() const {
  return {{"XDG_RUNTIME_DIR", runtime_dir_.string()},
          {"DBUS_SESSION_BUS_ADDRESS", "unix:path=" + (runtime_dir_ / "bus").string()},
          {"XDG_CONFIG_HOME", config_home_.string()}};
}

bool SystemdUserManager::bus_answers() const {
  bool answered = false;
  sd_bus* bus = nullptr;
  if (sd_bus_open_user(&bus) >= 0) answered = call_version(bus);
  sd_bus_flush_close_unref(bus);
  if (answered) return true;
  // No session bus (no dbus-daemon): the manager's private socket is enough for gpumod.
  bus = nullptr;
  const std::string addr = "unix:path=" + (runtime_dir_ / "systemd" / "private").string();
  if (sd_bus_new(&bus) >= 0 && sd_bus_set_address(bus, addr.c_str()) >= 0 && sd_bus_start(bus) >= 0)
    answered = call_version(bus);
  sd_bus_flush_close_unref(bus);
  return answered;
}

void SystemdUserManager::start() {
  auto binary = find_systemd_binary();
  if (!binary) {
    error_ = "systemd is not installed (no /lib/systemd/systemd)";
    return;
  }
  std::error_code ec;
  // systemd --user insists on a system booted with systemd; this marker is what it checks.
  fs::create_directories("/run/systemd/system", ec);

  std::string tmpl = (fs::temp_directory_path(ec) / "gpumod-systemd.XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) {
    error_ = std::string("mkdtemp: ") + std::strerror(errno);
    return;
  }
  base_dir_ = tmpl;
  runtime_dir_ = base_dir_ / "runtime";
  config_home_ = base_dir_ / "config";
  log_path_ = base_dir_ / "manager.log";
  fs::create_directories(runtime_dir_, ec);
  fs::create_directories(unit_dir(), ec);
  fs::permissions(runtime_dir_, fs::perms::owner_all, ec);
  fs::permissions(base_dir_, fs::perms::owner_all, ec);

  // Point this process at the manager (sd_bus_open_user and systemctl read these).
  for (const auto& [k, v] : env()) {
    const char* old = std::getenv(k.c_str());
    saved_env_[k] = old ? std::optional<std::string>(old) : std::nullopt;
    ::setenv(k.c_str(), v.c_str(), 1);
  }

  // Its own cgroup (best effort): otherwise the manager treats our cgroup as its root and
  // parallel managers would share one unit tree.
  const std::string leaf = "gpumod-test-" + std::to_string(::getpid()) + "-" + base_dir_.filename().string();
  std::vector<std::string> procs_files;
  for (const auto& dir : own_cgroup_dirs()) {
    fs::path cg = dir / leaf;
    if (fs::create_directory(cg, ec)) {
      cgroups_.push_back(cg);
      procs_files.push_back((cg / "cgroup.procs").string());
    }
  }

  // Everything the child needs, prepared before fork.
  std::vector<std::string> env_strings;
  for (char** e = environ; e && *e; ++e) {
    std::string kv = *e;
    std::string key = kv.substr(0, kv.find('='));
    if (key == "NOTIFY_SOCKET" || key == "LISTEN_FDS" || key == "LISTEN_PID" || key == "MANAGERPID") continue;
    env_strings.push_back(kv);
  }
  std::vector<char*> envp;
  envp.reserve(env_strings.size() + 1);
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string bin = binary->string();
  std::string user_flag = "--user";
  char* argv[] = {bin.data(), user_flag.data(), nullptr};
  int log_fd = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  const pid_t parent = ::getpid();

  pid_ = ::fork();
  if (pid_ < 0) {
    error_ = std::string("fork: ") + std::strerror(errno);
    if (log_fd >= 0) ::close(log_fd);
    return;
  }
  if (pid_ == 0) {
    // Test-only: the manager must not outlive a crashed test binary.
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(1);
    ::setsid();
    for (const auto& f : procs_files) {
      int fd = ::open(f.c_str(), O_WRONLY | O_CLOEXEC);
      if (fd >= 0) {
        ssize_t ignored = ::write(fd, "0", 1);
        (void)ignored;
        ::close(fd);
      }
    }
    if (log_fd >= 0) {
      ::dup2(log_fd, STDOUT_FILENO);
      ::dup2(log_fd, STDERR_FILENO);
    }
    if (::chdir("/") != 0) ::_exit(1);
    ::execve(argv[0], argv, envp.data());
    ::_exit(127);
  }
  if (log_fd >= 0) ::close(log_fd);

  const auto deadline = std::chrono::steady_clock::now() + kStartDeadline;
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      error_ = "systemd --user exited during startup (wait status " + std::to_string(status) +
               "); its log:\n" + read_all(log_path_);
      return;
    }
    if (fs::exists(runtime_dir_ / "systemd" / "private") && bus_answers()) {
      ok_ = true;
      return;
    }
    std::this_thread::sleep_for(20ms);
  }
  error_ = "systemd --user did not answer on its bus within 20 s; its log:\n" + read_all(log_path_);
}

void SystemdUserManager::stop() {
  if (pid_ > 0) {
    ::kill(pid_, SIGTERM);  // a user manager stops its units and exits
    const auto deadline = std::chrono::steady_clock::now() + kStopDeadline;
    bool gone = false;
    while (!gone && std::chrono::steady_clock::now() < deadline) {
      gone = ::waitpid(pid_, nullptr, WNOHANG) == pid_;
      if (!gone) std::this_thread::sleep_for(20ms);
    }
    if (!gone) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    pid_ = -1;
  }
  std::error_code ec;
  for (const auto& cg : cgroups_) {
    // Anything still in the manager's cgroup tree is a leftover of the test: kill it, then
    // remove the (now empty) directories deepest first.
    std::vector<fs::path> dirs;
    for (fs::recursive_directory_iterator it(cg, ec), end; !ec && it != end; it.increment(ec))
      if (it->is_directory(ec)) dirs.push_back(it->path());
    dirs.push_back(cg);
    for (const auto& d : dirs) {
      std::ifstream procs(d / "cgroup.procs");
      int p = 0;
      while (procs >> p)
        if (p > 0) ::kill(p, SIGKILL);
    }
    std::sort(dirs.begin(), dirs.end(),
              [](const fs::path& a, const fs::path& b) { return a.string().size() > b.string().size(); });
    for (const auto& d : dirs) {
      for (int attempt = 0; attempt < 50 && ::rmdir(d.c_str()) != 0 && errno == EBUSY; ++attempt)
        std::this_thread::sleep_for(20ms);
    }
  }
  cgroups_.clear();
  for (const auto& [k, v] : saved_env_) {
    if (v) {
      ::setenv(k.c_str(), v->c_str(), 1);
    } else {
      ::unsetenv(k.c_str());
    }
  }
  saved_env_.clear();
  if (!base_dir_.empty()) fs::remove_all(base_dir_, ec);
}

SystemdUserManager::CommandResult SystemdUserManager::systemctl(const std::vector<std::string>& args) const {
  CommandResult result;
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return result;
  std::vector<std::string> words{"systemctl", "--user", "--no-pager"};
  words.insert(words.end(), args.begin(), args.end());
  std::vector<char*> argv;
  argv.reserve(words.size() + 1);
  for (auto& w : words) argv.push_back(w.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDERR_FILENO);
  pid_t pid = 0;
  int r = ::posix_spawnp(&pid, "systemctl", &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(fds[1]);
  if (r == 0) {
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fds[0], buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR))
      if (n > 0) result.output.append(buf, static_cast<std::size_t>(n));
    int status = 0;
    ::waitpid(pid, &status, 0);
    result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  ::close(fds[0]);
  return result;
}

}  // namespace gpumod::testing
