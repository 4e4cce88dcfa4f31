// SystemdUserManager: a private `systemd --user` manager for one test (RAII).
//
// It gets its own 0700 XDG_RUNTIME_DIR (mkdtemp), XDG_CONFIG_HOME (unit files go to
// config_home()/systemd/user), and, where the machine allows it, its own cgroup, so tests
// running in parallel never see each other's units. While it lives, this process's
// XDG_RUNTIME_DIR, DBUS_SESSION_BUS_ADDRESS and XDG_CONFIG_HOME point at it, so
// sd_bus_open_user() and `systemctl --user` reach it; the old values come back on teardown.
// Teardown: SIGTERM to the manager (which stops its units), wait, SIGKILL if it must.
//
// Use: SystemdUserManager m; if (!m.ok()) GTEST_SKIP() << m.error();
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace gpumod::testing {

class SystemdUserManager {
 public:
  SystemdUserManager();
  ~SystemdUserManager();
  SystemdUserManager(const SystemdUserManager&) = delete;
  SystemdUserManager& operator=(const SystemdUserManager&) = delete;

  // False when no manager could be started here; error() says why (for GTEST_SKIP).
  [[nodiscard]] bool ok() const { return ok_; }
  [[nodiscard]] const std::string& error() const { return error_; }

  [[nodiscard]] const std::filesystem::path& runtime_dir() const { return runtime_dir_; }
  [[nodiscard]] const std::filesystem::path& config_home() const { return config_home_; }
  // Where `systemctl --user daemon-reload` looks for unit files.
  [[nodiscard]] std::filesystem::path unit_dir() const { return config_home_ / "systemd" / "user"; }
  [[nodiscard]] pid_t manager_pid() const { return pid_; }
  // XDG_RUNTIME_DIR, DBUS_SESSION_BUS_ADDRESS, XDG_CONFIG_HOME for child processes.
  [[nodiscard]] std::map<std::string, std::string> env() const;

  // Runs `systemctl --user ARGS...` against this manager (no shell); returns exit status and
  // combined output.
  struct CommandResult {
    int status = -1;
    std::string output;
  };
  CommandResult systemctl(const std::vector<std::string>& args) const;

 private:
  void start();
  void stop();
  [[nodiscard]] bool bus_answers() const;

  bool ok_ = false;
  std::string error_;
  pid_t pid_ = -1;
  std::filesystem::path base_dir_;  // mkdtemp; holds runtime/, config/ and the manager's log
  std::filesystem::path runtime_dir_;
  std::filesystem::path config_home_;
  std::filesystem::path log_path_;
  std::vector<std::filesystem::path> cgroups_;  // created for the manager; removed on teardown
  std::map<std::string, std::optional<std::string>> saved_env_;
};

}  // namespace gpumod::testing
