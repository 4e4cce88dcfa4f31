// Command rendering: the argv and environment for a preset that gives no explicit `cmd`,
// built from its driver and `unit_vars` the way the predecessor's presets expect
// (llama.cpp server / router, vLLM serve), and the systemd unit file gpumod would install.
#pragma once

#include <chrono>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "backends/runner.hpp"
#include "base/result.hpp"
#include "config/config.hpp"

namespace gpumod::backends {

struct RenderedCommand {
  std::vector<std::string> argv;
  std::map<std::string, std::string> env;  // includes CUDA_VISIBLE_DEVICES
  std::filesystem::path working_dir;       // from unit_vars.working_dir (fastapi); empty => runner default
};

// gpu: the index the planner chose. An explicit `cmd` is used as is (plus env).
Result<RenderedCommand> render_command(const config::Preset& preset, int gpu);
// What a runner starts for `preset` on `gpu`: the rendered command (argv, env, working dir),
// GPUMOD_SIM_DIR=`sim_dir` for engines on the simulated GPU, stdout and stderr to
// `log_dir`/<id>.log, and the preset's unit for runner: systemd. The daemon's one way to build it.
Result<LaunchSpec> launch_spec(const config::Preset& preset, int gpu, const std::filesystem::path& log_dir,
                               const std::filesystem::path& sim_dir);
// gpu < 0: no GPU chosen, CUDA_VISIBLE_DEVICES is left alone. The planner's choice wins over
// a CUDA_VISIBLE_DEVICES in the preset's env (the VRAM ledger depends on it).
// A complete unit file text (for `gpumod service unit ID`); stop_timeout becomes TimeoutStopSec.
Result<std::string> render_unit_file(const config::Preset& preset, int gpu,
                                     std::chrono::seconds stop_timeout = std::chrono::seconds(10));

// argv[0] found the way execvp finds it, but against the PATH the service will run with: `env`'s
// PATH, else gpumod's own, else /usr/local/bin:/usr/bin:/bin. A name with a slash is taken as
// given; an empty PATH entry is the current directory. Found names come back absolute (a
// systemd unit needs that, and a child that changes directory must not lose its binary). The
// error says the name and that it was not found in PATH. Both runners use it.
Result<std::string> find_executable(const std::string& name, const std::map<std::string, std::string>& env);

// Split a command line the way a POSIX shell splits words, without running one: whitespace
// separates, '...' is literal, inside "..." a backslash escapes only backslash, double quote,
// dollar and backquote, outside quotes a backslash escapes any next character. Unbalanced
// quotes or a trailing backslash are errors.
Result<std::vector<std::string>> split_args(const std::string& text);
// Quote one word for a unit file (systemd.syntax(7)): double quotes with C escapes when needed,
// "%%" for '%'; for_exec (ExecStart=) also writes '$' as "$$" and a lone ";" as "\;".
std::string systemd_quote(const std::string& word, bool for_exec = true);

}  // namespace gpumod::backends
