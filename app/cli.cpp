// The gpumod CLI: a thin client of the daemon's HTTP API (cpp-httplib client, JSON answers).
// Only `config check` works locally (it loads config files; no daemon needed).
//
// Exit codes, for scripts: 0 ok, 1 the daemon refused or the operation failed, 2 usage error,
// 3 daemon unreachable.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "app/cli.hpp"
#include "app/daemon_client.hpp"
#include "app/mcp.hpp"
#include "config/config.hpp"

namespace gpumod::app {

namespace {

using nlohmann::json;

constexpr int kOk = 0;
constexpr int kFailed = 1;
constexpr int kUsage = 2;
constexpr int kUnreachable = 3;

const char* kUsageText =
    R"(usage: gpumod [--url URL] COMMAND [ARGS]

Commands (all but `serve` and `config check` talk to a running daemon):
  serve [--config PATH] ...          run the daemon (see gpumod serve --help)
  status [--json]                    GPUs, services and the queue
  request MODEL [--priority N] [--timeout S] [--keep-alive S] [--no-wait]
                                     ask for a model; shows progress until it is ready
  service list [--json]              configured services and their state
  service start|stop|sleep|wake ID   drive one service
  service unit ID                    print the systemd unit file for a service
  service logs ID [-f] [--tail N]    the last N lines of a service's log (default 100); -f follows it
  events [--json] [--tail N] [--count N]
                                     what the scheduler decides and why, as it happens (--tail: the
                                     last N first; --count: stop after N; --json: one JSON per line)
  mode list [--json]                 configured modes (* marks the current one)
  mode status                        the current mode and its services
  mode switch ID                     switch mode: stop/sleep what it lacks, start/wake what it has
  config check [PATH]                validate a config file, directory or tree (local, no daemon)
  reload                             make the daemon re-read its config
  plan MODEL [--json]                dry run: what the scheduler would do to serve MODEL
  mcp                                an MCP server on stdin/stdout for coding agents (docs/mcp.md)

Options:
  --url URL    the daemon (default $GPUMOD_URL, else http://127.0.0.1:7979)
  -h, --help   this text
Environment: GPUMOD_URL, GPUMOD_TOKEN (bearer token when the daemon requires one).
Exit codes: 0 ok, 1 refused or failed, 2 usage error, 3 daemon unreachable.
)";

int usage_error(const std::string& message) {
  std::cerr << "gpumod: " << message << "\n(run `gpumod --help` for usage)\n";
  return kUsage;
}

// ---- formatting helpers ----

std::string human_bytes(std::int64_t bytes) {
  static const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int unit = 0;
  while (std::abs(v) >= 1024.0 && unit < 4) {
    v /= 1024.0;
    ++unit;
  }
  std::ostringstream out;
  out << std::fixed << std::setprecision(unit == 0 ? 0 : 1) << v << " " << units[unit];
  return out.str();
}

std::string str_of(const json& j, const char* key, const std::string& fallback = "-") {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (j[key].is_string()) return j[key].get<std::string>().empty() ? fallback : j[key].get<std::string>();
  return j[key].dump();
}

std::int64_t int_of(const json& j, const char* key) {
  return j.contains(key) && j[key].is_number() ? j[key].get<std::int64_t>() : 0;
}

double num_of(const json& j, const char* key) {
  return j.contains(key) && j[key].is_number() ? j[key].get<double>() : 0;
}

std::string seconds_text(double s) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(s < 10 ? 1 : 0) << s << " s";
  return out.str();
}

// A plain text table: left-aligned columns, two spaces apart.
class Table {
 public:
  explicit Table(std::vector<std::string> header) { rows_.push_back(std::move(header)); }
  void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  void print(std::ostream& out) const {
    std::vector<std::size_t> width;
    for (const auto& r : rows_) {
      if (width.size() < r.size()) width.resize(r.size(), 0);
      for (std::size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], r[i].size());
    }
    for (const auto& r : rows_) {
      std::string line;
      for (std::size_t i = 0; i < r.size(); ++i) {
        line += r[i];
        if (i + 1 < r.size()) line += std::string(width[i] - r[i].size() + 2, ' ');
      }
      out << line << "\n";
    }
  }

 private:
  std::vector<std::vector<std::string>> rows_;
};

std::string percent_encode(const std::string& s) {
  return DaemonClient::percent_encode(s);
}

// ---- talking to the daemon ----

// The client, reporting an unreachable daemon on stderr (nullopt) as every command does.
class Daemon {
 public:
  Daemon(std::string url, std::optional<std::string> token) : client_(std::move(url), std::move(token)) {}

  std::optional<Reply> call(const std::string& method, const std::string& path, const std::string& body = "",
                            std::chrono::seconds read_timeout = std::chrono::seconds(30)) const {
    return reported(client_.call(method, path, body, read_timeout));
  }
  std::optional<Reply> stream(const std::string& path,
                              const std::function<bool(std::string_view data)>& on_data) const {
    return reported(client_.stream(path, on_data));
  }
  std::optional<Reply> events(
      const std::string& path,
      const std::function<bool(const std::string&, const std::string&)>& on_event) const {
    return reported(client_.events(path, on_event));
  }
  std::optional<Reply> follow_request(const std::string& id, std::chrono::steady_clock::time_point give_up,
                                      const std::function<void(const std::string&, double)>& on_state) const {
    return reported(client_.follow_request(id, give_up, on_state));
  }
  [[nodiscard]] const std::string& url() const { return client_.url(); }

 private:
  static std::optional<Reply> reported(Result<Reply> r) {
    if (r) return std::move(*r);
    std::cerr << "gpumod: " << r.error() << "\n";
    return std::nullopt;
  }
  DaemonClient client_;
};

// Prints the daemon's error message for a refused call and returns the exit code for it.
int report_refusal(const Reply& reply) {
  std::cerr << "gpumod: " << DaemonClient::error_message(reply) << " (HTTP " << reply.status << ")\n";
  if (reply.status == 401) std::cerr << "gpumod: set GPUMOD_TOKEN to the daemon's api_token\n";
  return kFailed;
}

// ---- commands ----

struct Args {
  std::vector<std::string> positional;
  bool json_output = false;
  bool no_wait = false;
  std::optional<int> priority;
  std::optional<double> timeout_s;
  std::optional<double> keep_alive_s;
  bool follow = false;                 // -f
  std::optional<std::uint64_t> tail;   // --tail N
  std::optional<std::uint64_t> count;  // --count N
};

void print_services_table(const json& services, std::ostream& out) {
  Table t({"SERVICE", "STATE", "GPU", "PORT", "VRAM", "LEASES", "PRIORITY", "LAST ERROR"});
  for (const auto& s : services) {
    const auto gpu = int_of(s, "gpu");
    t.add({str_of(s, "id"), str_of(s, "state"), gpu >= 0 ? std::to_string(gpu) : "-",
           std::to_string(int_of(s, "port")), human_bytes(int_of(s, "vram_bytes")),
           std::to_string(int_of(s, "leases")), std::to_string(int_of(s, "priority")),
           str_of(s, "last_error")});
  }
  t.print(out);
}

int cmd_status(const Daemon& d, const Args& a) {
  auto reply = d.call("GET", "/status");
  if (!reply) return kUnreachable;
  if (reply->status != 200) return report_refusal(*reply);
  if (a.json_output) {
    std::cout << reply->body.dump(2) << "\n";
    return kOk;
  }
  const auto& b = reply->body;
  const auto probe = b.value("probe", json::object());
  std::cout << "mode: " << str_of(b, "mode", "(none)") << "   probe: " << str_of(probe, "kind") << " ("
            << (probe.value("up", false) ? "up" : "DOWN") << ")   daemon: " << d.url() << "\n\n";
  Table gpus({"GPU", "NAME", "TOTAL", "USED", "FREE", "RESERVED", "EFFECTIVE FREE"});
  for (const auto& g : b.value("gpus", json::array())) {
    gpus.add({std::to_string(int_of(g, "index")), str_of(g, "name"), human_bytes(int_of(g, "total_bytes")),
              human_bytes(int_of(g, "used_bytes")), human_bytes(int_of(g, "free_bytes")),
              human_bytes(int_of(g, "ledger_bytes")), human_bytes(int_of(g, "effective_free_bytes"))});
  }
  gpus.print(std::cout);
  std::cout << "\n";
  print_services_table(b.value("services", json::array()), std::cout);
  const auto queue = b.value("queue", json::array());
  std::cout << "\nqueue: " << (queue.empty() ? "empty" : std::to_string(queue.size()) + " waiting") << "\n";
  if (!queue.empty()) {
    Table q({"REQUEST", "MODEL", "SERVICE", "STATUS", "PRIORITY", "AGE"});
    for (const auto& r : queue) {
      q.add({str_of(r, "request_id"), str_of(r, "model"), str_of(r, "service"), str_of(r, "status"),
             std::to_string(int_of(r, "priority")), seconds_text(num_of(r, "age_s"))});
    }
    q.print(std::cout);
  }
  return kOk;
}

void print_ready(const json& o, const std::string& model) {
  std::cout << model << " is ready: service " << str_of(o, "service") << " at " << str_of(o, "endpoint")
            << " on GPU " << int_of(o, "gpu") << " (waited " << seconds_text(num_of(o, "waited_s")) << ")\n";
}

int cmd_request(const Daemon& d, const Args& a) {
  if (a.positional.size() != 1) return usage_error("request needs exactly one MODEL");
  const std::string& model = a.positional[0];
  json body{{"model", model}, {"wait", false}};
  if (a.priority) body["priority"] = *a.priority;
  if (a.timeout_s) body["timeout_s"] = *a.timeout_s;
  if (a.keep_alive_s) body["keep_alive_s"] = *a.keep_alive_s;
  auto reply = d.call("POST", "/request", body.dump());
  if (!reply) return kUnreachable;
  if (reply->status == 200) {
    print_ready(reply->body, model);
    return kOk;
  }
  if (reply->status != 202) return report_refusal(*reply);
  const std::string id = str_of(reply->body, "request_id", "");
  if (a.no_wait) {
    std::cout << "queued: request " << id << " for " << model << " (follow it with GET /requests/" << id
              << ")\n";
    return kOk;
  }
  // Follow the request until it is decided, showing state and elapsed time.
  const bool tty = isatty(STDOUT_FILENO) == 1;
  const auto give_up =
      std::chrono::steady_clock::now() +
      std::chrono::milliseconds(static_cast<std::int64_t>((a.timeout_s.value_or(3600.0) + 60.0) * 1000.0));
  std::string last_state;
  auto info = d.follow_request(id, give_up, [&](const std::string& state, double elapsed) {
    if (tty) {
      std::cout << "\r\033[K" << model << ": " << state << " (" << seconds_text(elapsed) << ")" << std::flush;
    } else if (state != last_state) {
      std::cout << model << ": " << state << " (" << seconds_text(elapsed) << ")\n" << std::flush;
    }
    last_state = state;
  });
  if (tty && !last_state.empty()) std::cout << "\n";
  if (!info) return kUnreachable;
  if (info->status != 200) return report_refusal(*info);
  if (!info->body.contains("outcome") || !info->body["outcome"].is_object()) {
    std::cerr << "gpumod: gave up waiting for request " << id << " (still " << last_state << ")\n";
    return kFailed;
  }
  const auto& o = info->body["outcome"];
  if (str_of(o, "status") == "ready") {
    print_ready(o, model);
    return kOk;
  }
  std::cerr << "gpumod: " << model << ": " << str_of(o, "status") << ": " << str_of(o, "message") << " (HTTP "
            << int_of(o, "http_status") << ")\n";
  return kFailed;
}

int cmd_service(const Daemon& d, const Args& a) {
  if (a.positional.empty())
    return usage_error("service needs a subcommand: list, start, stop, sleep, wake, unit, logs");
  const std::string& sub = a.positional[0];
  if (sub == "list") {
    if (a.positional.size() != 1) return usage_error("service list takes no arguments");
    auto reply = d.call("GET", "/services");
    if (!reply) return kUnreachable;
    if (reply->status != 200) return report_refusal(*reply);
    if (a.json_output) {
      std::cout << reply->body.dump(2) << "\n";
    } else {
      print_services_table(reply->body.value("services", json::array()), std::cout);
    }
    return kOk;
  }
  const bool action = sub == "start" || sub == "stop" || sub == "sleep" || sub == "wake";
  if (!action && sub != "unit" && sub != "logs")
    return usage_error("unknown service subcommand '" + sub + "'");
  if (a.positional.size() != 2) return usage_error("service " + sub + " needs exactly one service ID");
  const std::string id = percent_encode(a.positional[1]);
  if (sub == "logs") {
    std::string path = "/services/" + id + "/logs?tail=" + std::to_string(a.tail.value_or(100));
    if (a.follow) path += "&follow=1";
    auto reply = d.stream(path, [](std::string_view data) {
      std::cout.write(data.data(), static_cast<std::streamsize>(data.size()));
      std::cout.flush();
      return true;
    });
    if (!reply) return kUnreachable;
    if (reply->status != 200) return report_refusal(*reply);
    return kOk;
  }
  if (sub == "unit") {
    auto reply = d.call("GET", "/services/" + id + "/unit");
    if (!reply) return kUnreachable;
    if (reply->status != 200) return report_refusal(*reply);
    std::cout << reply->text;
    return kOk;
  }
  auto reply = d.call("POST", "/services/" + id + "/" + sub, "", std::chrono::hours(1));
  if (!reply) return kUnreachable;
  if (reply->status != 200) return report_refusal(*reply);
  const std::string message = str_of(reply->body, "message", "");
  std::cout << sub << " " << a.positional[1] << ": ok" << (message.empty() ? "" : " (" + message + ")")
            << "\n";
  return kOk;
}

void print_list(const char* label, const json& items) {
  if (!items.is_array() || items.empty()) return;
  std::cout << "  " << label << ":";
  for (const auto& i : items) std::cout << " " << (i.is_string() ? i.get<std::string>() : i.dump());
  std::cout << "\n";
}

int cmd_mode(const Daemon& d, const Args& a) {
  if (a.positional.empty()) return usage_error("mode needs a subcommand: list, status, switch");
  const std::string& sub = a.positional[0];
  if (sub == "list" || sub == "status") {
    if (a.positional.size() != 1) return usage_error("mode " + sub + " takes no arguments");
    auto reply = d.call("GET", "/modes");
    if (!reply) return kUnreachable;
    if (reply->status != 200) return report_refusal(*reply);
    if (a.json_output && sub == "list") {
      std::cout << reply->body.dump(2) << "\n";
      return kOk;
    }
    const std::string current = str_of(reply->body, "current", "");
    if (sub == "list") {
      Table t({"", "MODE", "SERVICES", "DESCRIPTION"});
      for (const auto& m : reply->body.value("modes", json::array())) {
        std::string services;
        for (const auto& s : m.value("services", json::array()))
          services += (services.empty() ? "" : ",") + s.get<std::string>();
        t.add({m.value("current", false) ? "*" : "", str_of(m, "id"), services.empty() ? "-" : services,
               str_of(m, "description", "")});
      }
      t.print(std::cout);
      return kOk;
    }
    std::cout << "current mode: " << (current.empty() ? "(none)" : current) << "\n";
    auto status = d.call("GET", "/status");
    if (!status) return kUnreachable;
    if (status->status != 200) return report_refusal(*status);
    json in_mode = json::array();
    std::vector<std::string> wanted;
    for (const auto& m : reply->body.value("modes", json::array())) {
      if (str_of(m, "id") == current) {
        for (const auto& s : m.value("services", json::array())) wanted.push_back(s.get<std::string>());
      }
    }
    for (const auto& s : status->body.value("services", json::array())) {
      if (std::find(wanted.begin(), wanted.end(), str_of(s, "id")) != wanted.end()) in_mode.push_back(s);
    }
    if (!in_mode.empty()) print_services_table(in_mode, std::cout);
    return kOk;
  }
  if (sub == "switch") {
    if (a.positional.size() != 2) return usage_error("mode switch needs exactly one mode ID");
    auto reply =
        d.call("POST", "/modes/" + percent_encode(a.positional[1]) + "/switch", "", std::chrono::hours(1));
    if (!reply) return kUnreachable;
    const auto& b = reply->body;
    if (b.is_object() && b.contains("mode")) {
      std::cout << "mode " << str_of(b, "mode") << ": " << (b.value("ok", false) ? "ok" : "FAILED") << " in "
                << seconds_text(num_of(b, "seconds")) << "\n";
      print_list("stopped", b.value("stopped", json::array()));
      print_list("slept", b.value("slept", json::array()));
      print_list("started", b.value("started", json::array()));
      print_list("woken", b.value("woken", json::array()));
      print_list("errors", b.value("errors", json::array()));
    }
    return reply->status == 200 ? kOk : report_refusal(*reply);
  }
  return usage_error("unknown mode subcommand '" + sub + "'");
}

// One event of the daemon's SSE stream as a line: its time, kind, and message.
void print_event(const std::string& data, bool as_json) {
  if (as_json) {
    std::cout << data << "\n";
    return;
  }
  const json e = json::parse(data, nullptr, false);
  if (!e.is_object()) {
    std::cout << data << "\n";
    return;
  }
  std::string time = str_of(e, "time", "");
  if (time.size() >= 23) time = time.substr(11, 12);  // HH:MM:SS.mmm of the UTC stamp
  std::cout << time << "  " << str_of(e, "kind") << "  " << str_of(e, "message", "") << "\n";
}

int cmd_events(const Daemon& d, const Args& a) {
  if (!a.positional.empty()) return usage_error("events takes no arguments");
  std::string path = "/events";
  if (a.tail) path += "?tail=" + std::to_string(*a.tail);
  std::uint64_t printed = 0;
  auto reply = d.events(path, [&](const std::string& kind, const std::string& body) {
    print_event(body, a.json_output);
    std::cout.flush();
    return !(kind != "dropped" && a.count && ++printed >= *a.count);
  });
  if (!reply) return kUnreachable;
  if (reply->status != 200) return report_refusal(*reply);
  return kOk;
}

int cmd_reload(const Daemon& d, const Args& a) {
  if (!a.positional.empty()) return usage_error("reload takes no arguments");
  auto reply = d.call("POST", "/reload", "", std::chrono::minutes(5));
  if (!reply) return kUnreachable;
  if (reply->status != 200) return report_refusal(*reply);
  std::cout << "reloaded: " << str_of(reply->body, "message", "ok") << "\n";
  print_list("added", reply->body.value("added", json::array()));
  print_list("removed", reply->body.value("removed", json::array()));
  print_list("changed", reply->body.value("changed", json::array()));
  return kOk;
}

int cmd_plan(const Daemon& d, const Args& a) {
  if (a.positional.size() != 1) return usage_error("plan needs exactly one MODEL");
  auto reply = d.call("GET", "/plan?model=" + percent_encode(a.positional[0]));
  if (!reply) return kUnreachable;
  if (reply->status != 200) return report_refusal(*reply);
  if (a.json_output) {
    std::cout << reply->body.dump(2) << "\n";
    return kOk;
  }
  const auto& b = reply->body;
  std::cout << "plan for " << a.positional[0] << " (service " << str_of(b, "service")
            << "): " << str_of(b, "outcome");
  if (int_of(b, "gpu") >= 0 && b.contains("gpu")) std::cout << " on GPU " << int_of(b, "gpu");
  std::cout << "\n";
  int n = 0;
  for (const auto& step : b.value("steps", json::array()))
    std::cout << "  " << ++n << ". " << step.get<std::string>() << "\n";
  if (n == 0) std::cout << "  (nothing to do)\n";
  const std::string reason = str_of(b, "reason", "");
  if (!reason.empty()) std::cout << "why: " << reason << "\n";
  return kOk;
}

int cmd_config_check(const Args& a) {
  if (a.positional.size() > 2 || a.positional.empty() || a.positional[0] != "check") {
    return usage_error("usage: gpumod config check [PATH]");
  }
  std::vector<std::pair<std::filesystem::path, config::LoadResult>> results;
  if (a.positional.size() == 2) {
    results = config::check_tree(a.positional[1]);
  } else {
    results.emplace_back("(embedded default)", config::embedded_default());
  }
  std::size_t errors = 0;
  std::size_t warnings = 0;
  for (const auto& [path, result] : results) {
    std::size_t local_errors = 0;
    for (const auto& diag : result.diagnostics) {
      if (diag.severity == config::Diagnostic::Severity::warning) {
        std::cout << diag.str() << " (warning)\n";
        ++warnings;
      } else {
        std::cout << diag.str() << "\n";
        ++local_errors;
      }
    }
    errors += local_errors;
    if (result.ok()) {
      std::cout << path.string() << ": ok (" << result.config->presets.size() << " services, "
                << result.config->modes.size() << " modes)\n";
    } else {
      std::cout << path.string() << ": " << std::max<std::size_t>(local_errors, 1) << " error(s)\n";
      if (local_errors == 0) {
        std::cout << result.error_text() << "\n";
        ++errors;
      }
    }
  }
  if (results.size() > 1) {
    std::cout << results.size() << " configs checked: " << errors << " error(s), " << warnings
              << " warning(s)\n";
  }
  return errors == 0 ? kOk : kFailed;
}

// Parses a number flag value; nullopt (and a message) when it is not one.
std::optional<double> number_arg(const std::string& flag, const std::string& value) {
  try {
    std::size_t used = 0;
    double v = std::stod(value, &used);
    if (used == value.size()) return v;
  } catch (const std::exception&) {
  }
  std::cerr << "gpumod: " << flag << " needs a number, got '" << value << "'\n";
  return std::nullopt;
}

}  // namespace

int run_cli(const std::vector<std::string>& argv) {
  std::string url = "http://127.0.0.1:7979";
  if (const char* env = std::getenv("GPUMOD_URL"); env != nullptr && *env != '\0') url = env;
  std::optional<std::string> token;
  if (const char* env = std::getenv("GPUMOD_TOKEN"); env != nullptr && *env != '\0') token = env;

  Args a;
  std::string command;
  for (std::size_t i = 0; i < argv.size(); ++i) {
    const std::string& arg = argv[i];
    auto value = [&](const std::string& flag) -> std::optional<std::string> {
      if (i + 1 >= argv.size()) return std::nullopt;
      (void)flag;
      return argv[++i];
    };
    if (arg == "-h" || arg == "--help" || (command.empty() && arg == "help")) {
      std::cout << kUsageText;
      return kOk;
    }
    if (arg == "--url" || arg.rfind("--url=", 0) == 0) {
      auto v = arg == "--url" ? value(arg) : std::optional<std::string>(arg.substr(6));
      if (!v) return usage_error("--url needs a value such as http://127.0.0.1:7979");
      url = *v;
    } else if (arg == "--json") {
      a.json_output = true;
    } else if (arg == "--no-wait") {
      a.no_wait = true;
    } else if (arg == "-f" || arg == "--follow") {
      a.follow = true;
    } else if (arg == "--tail" || arg == "--count") {
      auto v = value(arg);
      if (!v) return usage_error(arg + " needs a value");
      auto n = number_arg(arg, *v);
      if (!n) return kUsage;
      if (*n < 0 || *n > 1e12 || *n != static_cast<double>(static_cast<std::uint64_t>(*n)))
        return usage_error(arg + " must be a whole number of 0 or more");
      (arg == "--tail" ? a.tail : a.count) = static_cast<std::uint64_t>(*n);
    } else if (arg == "--priority" || arg == "--timeout" || arg == "--keep-alive") {
      auto v = value(arg);
      if (!v) return usage_error(arg + " needs a value");
      auto n = number_arg(arg, *v);
      if (!n) return kUsage;
      if (arg == "--priority") {
        if (*n < 0 || *n > 100 || *n != static_cast<int>(*n)) return usage_error("--priority must be 0..100");
        a.priority = static_cast<int>(*n);
      } else if (*n <= 0 && arg == "--timeout") {
        return usage_error("--timeout must be greater than 0 seconds");
      } else if (arg == "--timeout") {
        a.timeout_s = *n;
      } else {
        if (*n < 0) return usage_error("--keep-alive must be 0 or more seconds");
        a.keep_alive_s = *n;
      }
    } else if (arg.size() > 1 && arg[0] == '-') {
      return usage_error("unknown option '" + arg + "'");
    } else if (command.empty()) {
      command = arg;
    } else {
      a.positional.push_back(arg);
    }
  }
  if (command.empty()) {
    std::cerr << kUsageText;
    return kUsage;
  }
  if (url.rfind("http://", 0) != 0 && url.rfind("https://", 0) != 0) {
    return usage_error("--url must start with http:// or https://, got '" + url + "'");
  }
  while (url.size() > 8 && url.back() == '/') url.pop_back();

  if (command == "config") return cmd_config_check(a);
  if (command == "mcp") {
    if (!a.positional.empty()) return usage_error("mcp takes no arguments");
    return run_mcp(url, token, std::cin, std::cout);
  }
  const Daemon daemon(url, token);
  if (command == "status")
    return a.positional.empty() ? cmd_status(daemon, a) : usage_error("status takes no arguments");
  if (command == "request") return cmd_request(daemon, a);
  if (command == "service") return cmd_service(daemon, a);
  if (command == "mode") return cmd_mode(daemon, a);
  if (command == "reload") return cmd_reload(daemon, a);
  if (command == "events") return cmd_events(daemon, a);
  if (command == "plan") return cmd_plan(daemon, a);
  return usage_error("unknown command '" + command + "'");
}

}  // namespace gpumod::app
