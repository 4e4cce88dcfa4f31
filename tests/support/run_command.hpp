// run_command(): runs a shell command line from a test and captures what it prints. Tests may
// use a shell (arguments must already be quoted); gpumod itself never does.
#pragma once

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

namespace gpumod::testing {

struct CommandResult {
  int exit_code = -1;  // -1 when it could not run or did not exit normally
  std::string output;  // stdout and stderr together
};

inline CommandResult run_command(const std::string& command_line) {
  CommandResult result;
  FILE* pipe = ::popen((command_line + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return result;
  std::array<char, 4096> buffer{};
  std::size_t n = 0;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0) result.output.append(buffer.data(), n);
  const int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

}  // namespace gpumod::testing
