#include "app/mcp.hpp"

#include <chrono>
#include <functional>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "app/daemon_client.hpp"

namespace gpumod::app {

namespace {

using nlohmann::json;

// The protocol versions this server speaks, newest first. A client asking for one of them gets
// it; any other gets the newest, and decides itself whether it can go on (the MCP handshake).
const std::vector<std::string> kProtocolVersions = {"2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"};

// JSON-RPC 2.0 error codes.
constexpr int kParseError = -32700;
constexpr int kInvalidRequest = -32600;
constexpr int kMethodNotFound = -32601;
constexpr int kInvalidParams = -32602;
constexpr int kResourceNotFound = -32002;  // MCP's code for resources/read of an unknown URI

// What a tool answers: a text for the model to read, the daemon's JSON beside it, and whether
// the call failed (MCP tool errors are results with isError, so the agent sees the message).
struct ToolResult {
  std::string text;
  json structured;  // an object, or null
  bool error = false;
};

json to_json(const ToolResult& r) {
  json out{{"content", json::array({{{"type", "text"}, {"text", r.text}}})}, {"isError", r.error}};
  if (r.structured.is_object()) out["structuredContent"] = r.structured;
  return out;
}

json schema(json properties = json::object(), std::vector<std::string> required = {}) {
  json s{{"type", "object"}, {"properties", std::move(properties)}};
  if (!required.empty()) s["required"] = required;
  return s;
}

const json kServiceId{{"type", "string"}, {"description", "the service id (as in list_services)"}};

class McpServer {
 public:
  McpServer(DaemonClient daemon, std::ostream& out) : daemon_(std::move(daemon)), out_(out) {
    define_tools();
  }

  void handle_line(const std::string& line) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) return;
    const json msg = json::parse(line, nullptr, false);
    if (msg.is_discarded()) return send_error(nullptr, kParseError, "the message is not JSON");
    if (!msg.is_object() || msg.value("jsonrpc", "") != "2.0" || !msg.contains("method") ||
        !msg["method"].is_string()) {
      // A response from the client (we send no requests) or a malformed message.
      if (msg.is_object() && (msg.contains("result") || msg.contains("error"))) return;
      return send_error(msg.is_object() && msg.contains("id") ? msg["id"] : json(nullptr), kInvalidRequest,
                        "not a JSON-RPC 2.0 request (an object with \"jsonrpc\": \"2.0\" and a \"method\")");
    }
    const std::string method = msg["method"];
    const json params = msg.contains("params") && msg["params"].is_object() ? msg["params"] : json::object();
    if (!msg.contains("id")) return;  // a notification (initialized, cancelled, ...): nothing to answer
    const json& id = msg["id"];
    if (method == "initialize") return send_result(id, initialize(params));
    if (method == "ping") return send_result(id, json::object());
    if (method == "tools/list") return send_result(id, tools_list());
    if (method == "tools/call") return tools_call(id, params);
    if (method == "resources/list") return send_result(id, resources_list());
    if (method == "resources/read") return resources_read(id, params);
    send_error(id, kMethodNotFound, "method not found: " + method);
  }

 private:
  struct Tool {
    std::string description;
    json input_schema;
    std::function<ToolResult(const json& args, const json& progress_token)> run;
  };

  // ---------- JSON-RPC ----------
  void send(const json& message) {
    out_ << message.dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
    out_.flush();
  }
  void send_result(const json& id, json result) {
    send({{"jsonrpc", "2.0"}, {"id", id}, {"result", std::move(result)}});
  }
  void send_error(const json& id, int code, const std::string& message) {
    send({{"jsonrpc", "2.0"}, {"id", id}, {"error", {{"code", code}, {"message", message}}}});
  }
  void progress(const json& token, double progress, const std::string& message) {
    if (token.is_null()) return;
    send({{"jsonrpc", "2.0"},
          {"method", "notifications/progress"},
          {"params", {{"progressToken", token}, {"progress", progress}, {"message", message}}}});
  }

  // ---------- lifecycle ----------
  static json initialize(const json& params) {
    std::string version = kProtocolVersions.front();
    const std::string asked = params.value("protocolVersion", "");
    for (const auto& v : kProtocolVersions) {
      if (v == asked) version = v;
    }
    return {
        {"protocolVersion", version},
        {"capabilities",
         {{"tools", {{"listChanged", false}}},
          {"resources", {{"subscribe", false}, {"listChanged", false}}}}},
        {"serverInfo", {{"name", "gpumod"}, {"title", "gpumod GPU scheduler"}, {"version", GPUMOD_VERSION}}},
        {"instructions",
         "gpumod schedules model servers onto this host's GPUs. Use status to see GPUs, services and "
         "the queue; request_model to get a model loaded (it evicts idle ones if it must and answers "
         "once the model serves); switch_mode for a named set of services; plan for a dry run."}};
  }

  // ---------- the daemon ----------
  // A daemon answer as a tool result: 2xx is success, anything else a tool error with the
  // daemon's message; an unreachable daemon is a tool error that says so.
  ToolResult from_daemon(const Result<Reply>& r, const std::string& summary_ok) const {
    if (!r) return {r.error(), json(nullptr), true};
    ToolResult out;
    out.structured = r->body.is_object() ? r->body : json(nullptr);
    out.error = r->status < 200 || r->status >= 300;
    const std::string body = r->body.is_null() ? r->text : r->body.dump(2);
    out.text = out.error ? "gpumod refused (HTTP " + std::to_string(r->status) +
                               "): " + DaemonClient::error_message(*r)
                         : (summary_ok.empty() ? body : summary_ok + "\n" + body);
    return out;
  }
  ToolResult get(const std::string& path) const { return from_daemon(daemon_.call("GET", path), ""); }
  static std::string path_id(const json& args, const char* key) {
    return DaemonClient::percent_encode(args.value(key, std::string()));
  }

  // Arguments the schema requires, checked before the call: a missing one is a tool error that
  // names it (the agent can correct itself), as the MCP spec asks for input errors.
  static std::optional<ToolResult> missing(const json& args, const json& input_schema) {
    if (!input_schema.contains("required")) return std::nullopt;
    for (const auto& key : input_schema["required"]) {
      const std::string k = key.get<std::string>();
      if (!args.contains(k) || !args[k].is_string() || args[k].get<std::string>().empty())
        return ToolResult{"missing argument '" + k + "' (a non-empty string)", json(nullptr), true};
    }
    return std::nullopt;
  }

  void define_tools() {
    tools_["status"] = {
        "GPUs (memory used, reserved, free), services with their state, the queue and the current mode.",
        schema(), [this](const json&, const json&) { return get("/status"); }};
    tools_["list_services"] = {
        "Every configured service: state, GPU, port, declared and measured VRAM, leases, last error.",
        schema(), [this](const json&, const json&) { return get("/services"); }};
    tools_["get_service"] = {
        "One service in detail.", schema({{"id", kServiceId}}, {"id"}),
        [this](const json& a, const json&) { return get("/services/" + path_id(a, "id")); }};
    tools_["list_modes"] = {"The configured modes (named sets of services) and which one is current.",
                            schema(), [this](const json&, const json&) { return get("/modes"); }};
    tools_["switch_mode"] = {
        "Switch to a mode: stops or sleeps what it lacks, starts or wakes what it has. Answers with what "
        "was started, stopped, slept and woken, and any errors.",
        schema({{"mode", {{"type", "string"}, {"description", "the mode id (as in list_modes)"}}}}, {"mode"}),
        [this](const json& a, const json&) {
          auto r =
              daemon_.call("POST", "/modes/" + path_id(a, "mode") + "/switch", "", std::chrono::hours(1));
          std::string summary;
          if (r && r->body.is_object()) {
            summary = "mode " + a.value("mode", std::string()) + ": " +
                      (r->body.value("ok", false) ? "ok" : "failed");
            for (const char* k : {"started", "stopped", "slept", "woken", "errors"}) {
              if (r->body.contains(k) && r->body[k].is_array() && !r->body[k].empty())
                summary += "; " + std::string(k) + ": " + r->body[k].dump();
            }
          }
          return from_daemon(r, summary);
        }};
    for (const char* action : {"start", "stop", "sleep", "wake"}) {
      tools_[std::string(action) + "_service"] = {
          std::string(action == std::string("start") ? "Start a service and wait until it serves."
                      : action == std::string("stop")
                          ? "Stop a service (its process group ends; its VRAM is freed)."
                      : action == std::string("sleep")
                          ? "Put a service to sleep (it keeps little VRAM and wakes fast)."
                          : "Wake a sleeping service and wait until it serves."),
          schema({{"id", kServiceId}}, {"id"}), [this, action](const json& a, const json&) {
            return from_daemon(daemon_.call("POST", "/services/" + path_id(a, "id") + "/" + action, "",
                                            std::chrono::hours(1)),
                               std::string(action) + " " + a.value("id", std::string()) + ": ok");
          }};
    }
    tools_["request_model"] = {
        "Ask for a model by name (service id, model id or alias) and wait until it serves: gpumod queues the "
        "request by priority, makes room (sleeping or stopping idle services), waits for the VRAM to be "
        "really free and loads it. Sends progress notifications while it waits. Answers with the "
        "endpoint to call.",
        schema({{"model", {{"type", "string"}, {"description", "a service id, model id or alias"}}},
                {"priority", {{"type", "integer"}, {"minimum", 0}, {"maximum", 100}}},
                {"timeout_s",
                 {{"type", "number"}, {"exclusiveMinimum", 0}, {"description", "give up after this long"}}}},
               {"model"}),
        [this](const json& a, const json& token) { return request_model(a, token); }};
    tools_["plan"] = {
        "Dry run: what gpumod would do to serve a model (what it would sleep, stop, start, where, and why). "
        "Changes nothing.",
        schema({{"model", {{"type", "string"}}}}, {"model"}),
        [this](const json& a, const json&) { return get("/plan?model=" + path_id(a, "model")); }};
    tools_["service_logs"] = {
        "The last lines of a service's log (its stdout and stderr).",
        schema({{"id", kServiceId},
                {"tail", {{"type", "integer"}, {"minimum", 1}, {"maximum", 10000}, {"default", 100}}}},
               {"id"}),
        [this](const json& a, const json&) {
          const int tail = a.contains("tail") && a["tail"].is_number_integer() ? a["tail"].get<int>() : 100;
          auto r =
              daemon_.call("GET", "/services/" + path_id(a, "id") + "/logs?tail=" + std::to_string(tail));
          if (r && r->status == 200)
            return ToolResult{r->text.empty() ? "(the log is empty)" : r->text, json(nullptr), false};
          return from_daemon(r, "");
        }};
    tools_["recent_events"] = {
        "What the scheduler decided recently and why (evictions with reasons, VRAM waits, starts, failures, "
        "mode switches).",
        schema({{"count", {{"type", "integer"}, {"minimum", 1}, {"maximum", 1000}, {"default", 50}}}}),
        [this](const json& a, const json&) { return recent_events(a); }};
    tools_["reload"] = {
        "Make the daemon re-read its configuration. A config with errors is refused and the running one "
        "kept.",
        schema(), [this](const json&, const json&) {
          return from_daemon(daemon_.call("POST", "/reload", "", std::chrono::minutes(5)), "");
        }};
  }

  ToolResult request_model(const json& a, const json& token) {
    const std::string model = a.value("model", std::string());
    json body{{"model", model}, {"wait", false}};
    if (a.contains("priority")) {
      if (!a["priority"].is_number_integer())
        return {"'priority' must be an integer from 0 to 100", json(nullptr), true};
      body["priority"] = a["priority"];
    }
    double timeout_s = 3600;
    if (a.contains("timeout_s")) {
      if (!a["timeout_s"].is_number() || a["timeout_s"].get<double>() <= 0)
        return {"'timeout_s' must be a number of seconds greater than 0", json(nullptr), true};
      timeout_s = a["timeout_s"].get<double>();
      body["timeout_s"] = timeout_s;
    }
    auto submitted = daemon_.call("POST", "/request", body.dump());
    if (!submitted || submitted->status != 202) return from_daemon(submitted, model + " is ready");
    const std::string id = submitted->body.value("request_id", std::string());
    const auto give_up = std::chrono::steady_clock::now() +
                         std::chrono::milliseconds(static_cast<std::int64_t>((timeout_s + 60) * 1000));
    std::string last;
    auto info = daemon_.follow_request(id, give_up, [&](const std::string& state, double elapsed) {
      // Progress must increase: milliseconds waited, with the state for a person.
      char text[64];
      std::snprintf(text, sizeof text, " (%.1f s)", elapsed);
      progress(token, elapsed * 1000.0, model + ": " + state + text);
      last = state;
    });
    if (!info || info->status != 200) return from_daemon(info, "");
    if (!info->body.contains("outcome") || !info->body["outcome"].is_object())
      return {"gave up waiting for request " + id + " (still " + last + ")", info->body, true};
    const json& o = info->body["outcome"];
    ToolResult r;
    r.structured = o;
    r.error = o.value("status", "") != "ready";
    r.text = r.error ? model + ": " + o.value("status", "") + ": " + o.value("message", "")
                     : model + " is ready: call " + o.value("endpoint", "") + " (service " +
                           o.value("service", "") + ", GPU " + std::to_string(o.value("gpu", -1)) + ")\n" +
                           o.dump(2);
    return r;
  }

  ToolResult recent_events(const json& a) {
    const int count = a.contains("count") && a["count"].is_number_integer() ? a["count"].get<int>() : 50;
    // The stream sends the last `count` events at once; stop reading when they are in, or after
    // a quiet moment (fewer events than asked for exist).
    std::vector<json> events;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    auto r = daemon_.events(
        "/events?tail=" + std::to_string(count), [&](const std::string&, const std::string& data) {
          const json e = json::parse(data, nullptr, false);
          if (e.is_object()) events.push_back(e);
          return static_cast<int>(events.size()) < count && std::chrono::steady_clock::now() < deadline;
        });
    if (!r) return {r.error(), json(nullptr), true};
    if (r->status != 200) return from_daemon(r, "");
    std::string text;
    for (const auto& e : events)
      text += e.value("time", "") + "  " + e.value("kind", "") + "  " + e.value("message", "") + "\n";
    return {text.empty() ? "(no events yet)" : text, json{{"events", events}}, false};
  }

  // ---------- tools ----------
  json tools_list() const {
    json list = json::array();
    for (const auto& [name, tool] : tools_)
      list.push_back({{"name", name}, {"description", tool.description}, {"inputSchema", tool.input_schema}});
    return {{"tools", list}};
  }

  void tools_call(const json& id, const json& params) {
    const std::string name = params.value("name", std::string());
    const auto it = tools_.find(name);
    if (it == tools_.end())
      return send_error(id, kInvalidParams, "unknown tool '" + name + "' (tools/list names them)");
    const json args = params.contains("arguments") && params["arguments"].is_object() ? params["arguments"]
                                                                                      : json::object();
    json token(nullptr);
    if (params.contains("_meta") && params["_meta"].is_object() && params["_meta"].contains("progressToken"))
      token = params["_meta"]["progressToken"];
    if (auto bad = missing(args, it->second.input_schema)) return send_result(id, to_json(*bad));
    ToolResult r;
    try {
      r = it->second.run(args, token);
    } catch (const std::exception& e) {  // a library's exception is caught here, at the edge
      r = {std::string("gpumod mcp: ") + e.what(), json(nullptr), true};
    }
    send_result(id, to_json(r));
  }

  // ---------- resources ----------
  struct Resource {
    std::string name, description, path;
  };
  const std::map<std::string, Resource>& resources() const {
    static const std::map<std::string, Resource> r = {
        {"gpumod://status", {"status", "GPUs, services, the queue and the current mode", "/status"}},
        {"gpumod://services", {"services", "every configured service and its state", "/services"}},
        {"gpumod://modes", {"modes", "the configured modes and the current one", "/modes"}},
    };
    return r;
  }
  json resources_list() const {
    json list = json::array();
    for (const auto& [uri, r] : resources())
      list.push_back(
          {{"uri", uri}, {"name", r.name}, {"description", r.description}, {"mimeType", "application/json"}});
    return {{"resources", list}};
  }
  void resources_read(const json& id, const json& params) {
    const std::string uri = params.value("uri", std::string());
    const auto it = resources().find(uri);
    if (it == resources().end()) return send_error(id, kResourceNotFound, "resource not found: " + uri);
    auto r = daemon_.call("GET", it->second.path);
    if (!r) return send_error(id, kInternalError, r.error());
    if (r->status != 200)
      return send_error(
          id, kInternalError,
          "gpumod refused (HTTP " + std::to_string(r->status) + "): " + DaemonClient::error_message(*r));
    send_result(id, {{"contents",
                      json::array({{{"uri", uri}, {"mimeType", "application/json"}, {"text", r->text}}})}});
  }
  static constexpr int kInternalError = -32603;

  DaemonClient daemon_;
  std::ostream& out_;
  std::map<std::string, Tool> tools_;
};

}  // namespace

int run_mcp(const std::string& url, const std::optional<std::string>& token, std::istream& in,
            std::ostream& out) {
  McpServer server(DaemonClient(url, token), out);
  std::cerr << "gpumod mcp: serving MCP on stdio for the daemon at " << url << "\n";
  std::string line;
  while (std::getline(in, line)) server.handle_line(line);
  return 0;
}

}  // namespace gpumod::app
