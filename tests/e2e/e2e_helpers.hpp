// Shared expectations over /status for the end-to-end suites.
#pragma once

#include <string>

#include "tests/e2e/daemon_fixture.hpp"
#include "tests/support/run_command.hpp"

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

using gpumod::testing::run_command;

}  // namespace gpumod::e2e
