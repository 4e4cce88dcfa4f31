// Command rendering: the argv and environment for a preset that gives no explicit `cmd`,
// built from its driver and `unit_vars` the way the predecessor's presets expect
// (llama.cpp server / router, vLLM serve), and the systemd unit file gpumod would install.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "config/result.hpp"

namespace gpumod::backends {

struct RenderedCommand {
  std::vector<std::string> argv;
  std::map<std::string, std::string> env;  // includes CUDA_VISIBLE_DEVICES
};

// gpu: the index the planner chose. An explicit `cmd` is used as is (plus env).
Result<RenderedCommand> render_command(const config::Preset& preset, int gpu);
// A complete unit file text (for `gpumod service unit ID`).
Result<std::string> render_unit_file(const config::Preset& preset, int gpu);

}  // namespace gpumod::backends
