// Shared expectations over /status for the end-to-end suites.
#pragma once

#include <sys/wait.h>

#include <cstdio>
#include <string>

#include "tests/e2e/daemon_fixture.hpp"

namespace gpumod::e2e {

// The service entry from /status, or null json when absent.
inline json service_status(const Daemon& d, const std::string& id) {
  auto st = d.get("/status").js();
  if (!st.is_object()) return json();
  for (const auto& s : st["services"]) {
    if (s.value("id", "") == id) return s;
  }
  return json();
}

inline std::string service_state(const Daemon& d, const std::string& id) {
  auto s = service_status(d, id);
  return s.is_object() ? s.value("state", "") : std::string("<missing>");
}

inline constexpr std::int64_t kMiB = 1024 * 1024;

struct CommandOutput {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

// Runs a command line (tests may use a shell; gpumod itself never does).
inline CommandOutput run_command(const std::string& cmd) {
  CommandOutput out;
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (p == nullptr) return out;
  char buf[4096];
  std::size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.output.append(buf, n);
  const int status = ::pclose(p);
  out.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return out;
}

}  // namespace gpumod::e2e
