// The gpumod CLI: every subcommand except `serve` is a thin client of the daemon's HTTP API.
#pragma once

#include <string>
#include <vector>

namespace gpumod::app {

// args excludes the program name. Returns the process exit code:
// 0 ok, 1 the daemon refused or the operation failed, 2 usage error, 3 daemon unreachable.
int run_cli(const std::vector<std::string>& args);

}  // namespace gpumod::app
