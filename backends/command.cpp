// Command rendering from driver + unit_vars (the variable names follow the predecessor's
// presets; see docs/runners.md for the table), the shell-like word splitter used for
// `extra_args`, and the unit file text for `gpumod service unit ID`.
#include "backends/command.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <sstream>

#include "backends/gpu_probe.hpp"
#include "backends/service_log.hpp"

namespace gpumod::backends {
namespace {

const char* driver_name(config::Driver d) {
  switch (d) {
    case config::Driver::vllm:
      return "vllm";
    case config::Driver::llamacpp:
      return "llamacpp";
    case config::Driver::fastapi:
      return "fastapi";
    case config::Driver::generic:
      return "generic";
    case config::Driver::docker:
      return "docker";
  }
  return "?";
}

// Reads unit_vars with errors that name the file, the preset and the key.
class Vars {
 public:
  explicit Vars(const config::Preset& p) : p_(p) {}

  [[nodiscard]] Error error(const std::string& key, const std::string& what) const {
    std::string where;
    auto loc = p_.key_locs.find(key);
    const config::SourceLoc* l = loc != p_.key_locs.end() ? &loc->second : &p_.loc;
    if (!l->file.empty()) where = l->file + (l->line > 0 ? ":" + std::to_string(l->line) : "") + ": ";
    return make_error(where + "preset '" + p_.id + "': " + key + ": " + what);
  }

  [[nodiscard]] std::optional<std::string> str(const std::string& name) const {
    auto it = p_.unit_vars.find(name);
    if (it == p_.unit_vars.end()) return std::nullopt;
    return it->second;
  }
  [[nodiscard]] std::string str_or(const std::string& name, const std::string& dflt) const {
    auto v = str(name);
    return v && !v->empty() ? *v : dflt;
  }

  // A non-negative integer (n_gpu_layers may be -1: "all layers" in llama.cpp).
  [[nodiscard]] Result<std::optional<long long>> integer(const std::string& name, long long min = 0) const {
    auto v = str(name);
    if (!v || v->empty()) return std::optional<long long>{};
    try {
      std::size_t used = 0;
      long long n = std::stoll(*v, &used);
      if (used != v->size() || n < min) throw std::invalid_argument(*v);
      return std::optional<long long>{n};
    } catch (const std::exception&) {
      return error("unit_vars." + name,
                   "expected an integer >= " + std::to_string(min) + ", got '" + *v + "'");
    }
  }

  [[nodiscard]] Result<std::optional<double>> fraction(const std::string& name) const {
    auto v = str(name);
    if (!v || v->empty()) return std::optional<double>{};
    try {
      std::size_t used = 0;
      double d = std::stod(*v, &used);
      if (used != v->size() || !(d > 0.0 && d <= 1.0)) throw std::invalid_argument(*v);
      return std::optional<double>{d};
    } catch (const std::exception&) {
      return error("unit_vars." + name, "expected a number in (0, 1], got '" + *v + "'");
    }
  }

  [[nodiscard]] Result<std::optional<bool>> boolean(const std::string& name) const {
    auto v = str(name);
    if (!v || v->empty()) return std::optional<bool>{};
    std::string s;
    for (char c : *v) s += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (s == "true" || s == "yes" || s == "on" || s == "1") return std::optional<bool>{true};
    if (s == "false" || s == "no" || s == "off" || s == "0") return std::optional<bool>{false};
    return error("unit_vars." + name, "expected true or false, got '" + *v + "'");
  }

  [[nodiscard]] Result<std::vector<std::string>> extra_args() const {
    auto v = str("extra_args");
    if (!v) return std::vector<std::string>{};
    auto words = split_args(*v);
    if (!words) return error("unit_vars.extra_args", words.error());
    return words;
  }

 private:
  const config::Preset& p_;
};

// NOLINTBEGIN(bugprone-macro-parentheses): `var` names a new variable, it cannot be parenthesised.
#define GPUMOD_TRY_ASSIGN(var, expr)                \
  auto var##_r = (expr);                            \
  if (!var##_r) return make_error(var##_r.error()); \
  auto var = std::move(var##_r.value())
// NOLINTEND(bugprone-macro-parentheses)

std::string format_double(double d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", d);
  return buf;
}

Result<std::vector<std::string>> render_llamacpp(const config::Preset& p, const Vars& vars) {
  std::vector<std::string> a{vars.str_or("binary", "llama-server")};
  if (auto dir = vars.str("models_dir"); dir && !dir->empty()) {
    // Router mode: models are loaded on request through /models/load, never at startup.
    a.insert(a.end(), {"--models-dir", *dir, "--no-models-autoload"});
    GPUMOD_TRY_ASSIGN(models_max, vars.integer("models_max", 1));
    if (models_max) a.insert(a.end(), {"--models-max", std::to_string(*models_max)});
  } else if (!p.model_path.empty()) {
    a.insert(a.end(), {"--model", p.model_path});
  } else {
    return vars.error("model_path",
                      "llamacpp needs model_path (single model) or unit_vars.models_dir (router)");
  }
  a.insert(a.end(), {"--host", vars.str_or("host", "127.0.0.1"), "--port", std::to_string(p.port)});
  if (p.context_size) {
    a.insert(a.end(), {"--ctx-size", std::to_string(*p.context_size)});
  } else {
    GPUMOD_TRY_ASSIGN(ctx, vars.integer("ctx_size", 0));
    if (ctx) a.insert(a.end(), {"--ctx-size", std::to_string(*ctx)});
  }
  GPUMOD_TRY_ASSIGN(ngl, vars.integer("n_gpu_layers", -1));
  if (ngl) a.insert(a.end(), {"--n-gpu-layers", std::to_string(*ngl)});
  GPUMOD_TRY_ASSIGN(threads, vars.integer("threads", 1));
  if (threads) a.insert(a.end(), {"--threads", std::to_string(*threads)});
  if (auto fa = vars.str("flash_attn"); fa && *fa == "auto") {
    a.insert(a.end(), {"--flash-attn", "auto"});
  } else {
    GPUMOD_TRY_ASSIGN(flash, vars.boolean("flash_attn"));
    if (flash) a.insert(a.end(), {"--flash-attn", *flash ? "on" : "off"});
  }
  GPUMOD_TRY_ASSIGN(jinja, vars.boolean("jinja"));
  if (jinja && *jinja) a.emplace_back("--jinja");
  GPUMOD_TRY_ASSIGN(extra, vars.extra_args());
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

Result<std::vector<std::string>> render_vllm(const config::Preset& p, const Vars& vars) {
  const std::string model = !p.model_id.empty() ? p.model_id : p.model_path;
  if (model.empty()) return vars.error("model_id", "vllm needs model_id or model_path");
  std::vector<std::string> a{
      vars.str_or("binary", "vllm"), "serve", model, "--host", vars.str_or("host", "127.0.0.1"), "--port",
      std::to_string(p.port)};
  GPUMOD_TRY_ASSIGN(util, vars.fraction("gpu_mem_util"));
  if (util) a.insert(a.end(), {"--gpu-memory-utilization", format_double(*util)});
  GPUMOD_TRY_ASSIGN(max_len, vars.integer("max_model_len", 1));
  if (max_len) {
    a.insert(a.end(), {"--max-model-len", std::to_string(*max_len)});
  } else if (p.context_size) {
    a.insert(a.end(), {"--max-model-len", std::to_string(*p.context_size)});
  }
  GPUMOD_TRY_ASSIGN(seqs, vars.integer("max_num_seqs", 1));
  if (seqs) a.insert(a.end(), {"--max-num-seqs", std::to_string(*seqs)});
  if (auto dtype = vars.str("dtype"); dtype && !dtype->empty()) a.insert(a.end(), {"--dtype", *dtype});
  GPUMOD_TRY_ASSIGN(eager, vars.boolean("enforce_eager"));
  if (eager && *eager) a.emplace_back("--enforce-eager");
  if (auto runner = vars.str("runner"); runner && !runner->empty()) a.insert(a.end(), {"--runner", *runner});
  GPUMOD_TRY_ASSIGN(tp, vars.integer("tensor_parallel_size", 1));
  if (tp) a.insert(a.end(), {"--tensor-parallel-size", std::to_string(*tp)});
  if (auto hf = vars.str("hf_overrides"); hf && !hf->empty()) a.insert(a.end(), {"--hf-overrides", *hf});
  if (p.supports_sleep) a.emplace_back("--enable-sleep-mode");
  GPUMOD_TRY_ASSIGN(extra, vars.extra_args());
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

Result<std::vector<std::string>> render_fastapi(const config::Preset& p, const Vars& vars) {
  auto app = vars.str("app_module");
  if (!app || app->empty())
    return vars.error("unit_vars.app_module", "fastapi needs app_module (e.g. 'server:app')");
  std::vector<std::string> a;
  if (auto bin = vars.str("binary"); bin && !bin->empty()) {
    a.push_back(*bin);  // e.g. a venv's uvicorn
  } else {
    a = {vars.str_or("python", "python3"), "-m", "uvicorn"};
  }
  a.insert(a.end(), {*app, "--host", vars.str_or("host", "127.0.0.1"), "--port", std::to_string(p.port)});
  GPUMOD_TRY_ASSIGN(extra, vars.extra_args());
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

// generic / docker: no built-in server; `binary` plus `extra_args` is the whole command.
Result<std::vector<std::string>> render_generic(const config::Preset& p, const Vars& vars) {
  auto bin = vars.str("binary");
  if (!bin || bin->empty())
    return vars.error("cmd", std::string("driver '") + driver_name(p.driver) +
                                 "' has no built-in command: give an explicit cmd (or unit_vars.binary)");
  std::vector<std::string> a{*bin};
  GPUMOD_TRY_ASSIGN(extra, vars.extra_args());
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

// Description= and WorkingDirectory= take the rest of the line verbatim (no unquoting) but
// still expand %-specifiers; a newline would end the setting.
std::string escape_specifiers(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '%') {
      out += "%%";
    } else if (c == '\n' || c == '\r') {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

Result<std::vector<std::string>> split_args(const std::string& text) {
  std::vector<std::string> words;
  std::string cur;
  bool in_word = false;
  enum { none, single, dbl } quote = none;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quote == single) {
      if (c == '\'') {
        quote = none;
      } else {
        cur += c;
      }
      continue;
    }
    if (quote == dbl) {
      if (c == '"') {
        quote = none;
      } else if (c == '\\' && i + 1 < text.size() &&
                 (text[i + 1] == '\\' || text[i + 1] == '"' || text[i + 1] == '$' || text[i + 1] == '`' ||
                  text[i + 1] == '\n')) {
        if (text[i + 1] != '\n') cur += text[i + 1];
        ++i;
      } else {
        cur += c;
      }
      continue;
    }
    if (std::isspace(static_cast<unsigned char>(c))) {
      if (in_word) words.push_back(std::move(cur));
      cur.clear();
      in_word = false;
    } else if (c == '\'') {
      quote = single;
      in_word = true;
    } else if (c == '"') {
      quote = dbl;
      in_word = true;
    } else if (c == '\\') {
      if (i + 1 >= text.size()) return make_error("trailing backslash in '" + text + "'");
      ++i;
      if (text[i] != '\n') {  // backslash-newline is a line continuation
        cur += text[i];
        in_word = true;
      }
    } else {
      cur += c;
      in_word = true;
    }
  }
  if (quote != none)
    return make_error(std::string("unbalanced ") + (quote == single ? "single" : "double") + " quote in '" +
                      text + "'");
  if (in_word) words.push_back(std::move(cur));
  return words;
}

std::string systemd_quote(const std::string& word, bool for_exec) {
  if (for_exec && word == ";") return "\\;";
  bool needs_quotes = word.empty();
  std::string body;
  for (unsigned char c : word) {
    switch (c) {
      case '"':
        body += "\\\"";
        needs_quotes = true;
        break;
      case '\\':
        body += "\\\\";
        needs_quotes = true;
        break;
      case '\n':
        body += "\\n";
        needs_quotes = true;
        break;
      case '\t':
        body += "\\t";
        needs_quotes = true;
        break;
      case '%':
        body += "%%";
        break;
      case '$':
        body += for_exec ? "$$" : "$";
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\x%02x", c);
          body += buf;
          needs_quotes = true;
        } else {
          if (c == ' ' || c == '\'' || c == ';') needs_quotes = true;
          body += static_cast<char>(c);
        }
    }
  }
  return needs_quotes ? "\"" + body + "\"" : body;
}

Result<LaunchSpec> launch_spec(const config::Preset& preset, int gpu, const std::filesystem::path& log_dir,
                               const std::filesystem::path& sim_dir) {
  auto cmd = render_command(preset, gpu);
  if (!cmd) return make_error(cmd.error());
  LaunchSpec spec;
  spec.service_id = preset.id;
  spec.argv = std::move(cmd->argv);
  spec.env = std::move(cmd->env);
  spec.env.emplace(kSimDirEnv, sim_dir.string());
  spec.log_path = service_log_path(log_dir, preset.id);
  spec.working_dir = std::move(cmd->working_dir);
  if (preset.runner == config::RunnerKind::systemd) spec.unit = preset.unit_template;
  return spec;
}

Result<RenderedCommand> render_command(const config::Preset& preset, int gpu) {
  Vars vars(preset);
  RenderedCommand out;
  if (!preset.cmd.empty()) {
    out.argv = preset.cmd;
  } else {
    const bool generic = preset.driver == config::Driver::generic || preset.driver == config::Driver::docker;
    if (preset.port <= 0 && !generic) return vars.error("port", "a port is needed to render the command");
    Result<std::vector<std::string>> argv = std::vector<std::string>{};
    switch (preset.driver) {
      case config::Driver::llamacpp:
        argv = render_llamacpp(preset, vars);
        break;
      case config::Driver::vllm:
        argv = render_vllm(preset, vars);
        break;
      case config::Driver::fastapi:
        argv = render_fastapi(preset, vars);
        break;
      case config::Driver::generic:
      case config::Driver::docker:
        argv = render_generic(preset, vars);
        break;
    }
    if (!argv) return make_error(argv.error());
    out.argv = std::move(argv.value());
    if (preset.driver == config::Driver::vllm && preset.supports_sleep) out.env["VLLM_SERVER_DEV_MODE"] = "1";
  }
  if (auto wd = vars.str("working_dir"); wd && !wd->empty() && preset.driver == config::Driver::fastapi)
    out.working_dir = *wd;
  for (const auto& [k, v] : preset.env) out.env[k] = v;
  if (gpu >= 0) out.env["CUDA_VISIBLE_DEVICES"] = std::to_string(gpu);
  return out;
}

Result<std::string> render_unit_file(const config::Preset& preset, int gpu,
                                     std::chrono::seconds stop_timeout) {
  auto cmd = render_command(preset, gpu);
  if (!cmd) return make_error(cmd.error());
  std::ostringstream u;
  std::string desc = "gpumod service " + preset.id;
  if (!preset.name.empty() && preset.name != preset.id) desc += " (" + preset.name + ")";
  u << "# Generated by gpumod for preset '" << preset.id << "'. gpumod starts and stops this unit;\n"
    << "# systemd must not restart it on its own (Restart=no).\n"
    << "[Unit]\n"
    << "Description=" << escape_specifiers(desc) << "\n"
    << "\n[Service]\n"
    << "Type=exec\n"
    << "ExecStart=";
  for (std::size_t i = 0; i < cmd->argv.size(); ++i) u << (i ? " " : "") << systemd_quote(cmd->argv[i], true);
  u << "\n";
  for (const auto& [k, v] : cmd->env) {
    std::string assignment = k;
    assignment += '=';
    assignment += v;
    u << "Environment=" << systemd_quote(assignment, false) << "\n";
  }
  if (!cmd->working_dir.empty())
    u << "WorkingDirectory=" << escape_specifiers(cmd->working_dir.string()) << "\n";
  u << "KillMode=control-group\n"
    << "TimeoutStopSec=" << stop_timeout.count() << "\n"
    << "Restart=no\n";
  return u.str();
}

Result<std::string> find_executable(const std::string& name, const std::map<std::string, std::string>& env) {
  if (name.find('/') != std::string::npos) return name;
  std::string dirs = "/usr/local/bin:/usr/bin:/bin";
  if (const auto it = env.find("PATH"); it != env.end()) {
    dirs = it->second;
  } else if (const char* own = std::getenv("PATH")) {
    dirs = own;
  }
  std::size_t pos = 0;
  for (;;) {
    const auto colon = dirs.find(':', pos);
    std::string candidate = dirs.substr(pos, colon == std::string::npos ? std::string::npos : colon - pos);
    if (candidate.empty()) candidate = ".";
    candidate += '/';
    candidate += name;
    struct stat st {};
    if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
        ::access(candidate.c_str(), X_OK) == 0) {
      std::error_code ec;
      const auto absolute = std::filesystem::absolute(candidate, ec);
      return ec ? candidate : absolute.lexically_normal().string();
    }
    if (colon == std::string::npos) break;
    pos = colon + 1;
  }
  return make_error("cannot exec '" + name + "': No such file or directory (not found in PATH)");
}

}  // namespace gpumod::backends
