// `gpumod serve`: load the config, build the backends, run the scheduler and the HTTP API
// until SIGTERM/SIGINT; SIGHUP reloads. Talks to systemd (READY=1, STATUS=, WATCHDOG=1)
// when started as a Type=notify unit.
#pragma once

#include <string>
#include <vector>

namespace gpumod::app {

int run_serve(const std::vector<std::string>& args);

}  // namespace gpumod::app
