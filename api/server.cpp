// The control API: routes, the request-id / auth pre-routing step, the JSON error shape for
// everything httplib answers on its own (404, 405, 413), and the access log.
#include "api/server.hpp"

#include <httplib.h>
#include <spdlog/spdlog.h>

#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <regex>
#include <thread>
#include <utility>
#include <vector>

#include "api/control.hpp"
#include "api/http_context.hpp"
#include "api/json_view.hpp"
#include "api/validate.hpp"

namespace gpumod::api {

using nlohmann::json;
using std::chrono::milliseconds;

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump(), "application/json");
}

void send_error(httplib::Response& res, int status, const std::string& message, int retry_after_s) {
  if (status == 503) res.set_header("Retry-After", std::to_string(std::max(1, retry_after_s)));
  send_json(res, status, error_body(status, message, request_id_of(res)));
}

bool reject_oversized_body(const Context& ctx, const httplib::Request& req, httplib::Response& res) {
  if (static_cast<std::int64_t>(req.body.size()) <= ctx.options.max_body_bytes) return false;
  send_error(res, 413,
             "the request body is " + std::to_string(req.body.size()) + " bytes; the limit is " +
                 std::to_string(ctx.options.max_body_bytes) + " bytes (policy.max_body_bytes)");
  return true;
}

milliseconds request_budget(const Context& ctx, std::optional<milliseconds> timeout) {
  milliseconds base = timeout.value_or(milliseconds(300000));
  if (!timeout) {
    if (auto cfg = ctx.control->config()) base = cfg->daemon.policy.default_request_timeout;
  }
  return base + ctx.options.scheduler_grace;
}

namespace {

// Routes and their methods, for telling 405 (wrong method) from 404 (no such path).
struct RouteShape {
  std::regex pattern;
  const char* methods;
};

const std::vector<RouteShape>& route_shapes() {
  static const std::vector<RouteShape> shapes = [] {
    std::vector<RouteShape> v;
    auto add = [&v](const char* p, const char* m) { v.push_back(RouteShape{std::regex(p), m}); };
    add("/", "GET");
    add("/healthz", "GET");
    add("/metrics", "GET");
    add("/status", "GET");
    add("/request", "POST");
    add("/requests/[^/]+", "GET, DELETE");
    add("/services", "GET");
    add("/services/[^/]+", "GET");
    add("/services/[^/]+/unit", "GET");
    add("/services/[^/]+/(start|stop|sleep|wake)", "POST");
    add("/modes", "GET");
    add("/modes/[^/]+/switch", "POST");
    add("/reload", "POST");
    add("/plan", "GET");
    add("/v1/models", "GET");
    add("/v1/(chat/completions|completions|embeddings)", "POST");
    return v;
  }();
  return shapes;
}

const char* landing_page() {
  return R"(<!doctype html>
<html><head><meta charset="utf-8"><title>gpumod</title></head>
<body>
<h1>gpumod</h1>
<p>gpumod owns this host's GPUs on behalf of its model servers.</p>
<ul>
<li><a href="/status">/status</a>: GPUs, services, queue, mode (JSON)</li>
<li><a href="/services">/services</a> and <a href="/modes">/modes</a></li>
<li><a href="/v1/models">/v1/models</a>: the OpenAI-compatible model list</li>
<li><a href="/metrics">/metrics</a>: Prometheus metrics</li>
<li><a href="/healthz">/healthz</a></li>
</ul>
<p>Ask for a model: <code>curl -X POST http://HOST:PORT/request -d '{"model":"NAME"}'</code></p>
</body></html>
)";
}

// "a, b, c" (at most `limit` names, then "...").
std::string name_list(const std::vector<std::string>& names, std::size_t limit = 20) {
  std::string out;
  for (std::size_t i = 0; i < names.size() && i < limit; ++i) {
    if (i > 0) out += ", ";
    out += names[i];
  }
  if (names.size() > limit) out += ", ...";
  return out.empty() ? "(none)" : out;
}

std::vector<std::string> service_ids(const config::Config& cfg) {
  std::vector<std::string> ids;
  ids.reserve(cfg.presets.size());
  for (const auto& p : cfg.presets) ids.push_back(p.id);
  return ids;
}

std::vector<std::string> mode_ids(const config::Config& cfg) {
  std::vector<std::string> ids;
  ids.reserve(cfg.modes.size());
  for (const auto& m : cfg.modes) ids.push_back(m.id);
  return ids;
}

// How long an operation that may stop, wait for VRAM and start `starts` may take.
milliseconds operation_budget(const Context& ctx, const config::Config& cfg,
                              const std::vector<const config::Preset*>& starts) {
  milliseconds total = cfg.daemon.policy.vram_release_timeout + cfg.daemon.policy.stop_grace;
  for (const auto* p : starts) {
    if (p != nullptr) total += std::chrono::duration_cast<milliseconds>(p->startup_timeout);
  }
  return total + ctx.options.scheduler_grace;
}

void answer_not_ready(const Context& ctx, httplib::Response& res, const std::string& what, WaitResult why) {
  if (why == WaitResult::stopping) {
    send_error(res, 503, "gpumod is shutting down; " + what + " was not finished", 5);
    return;
  }
  (void)ctx;
  send_error(
      res, 504,
      "gpumod's scheduler did not finish " + what + " in time; it may still complete: check GET /status");
}

class Handlers {
 public:
  explicit Handlers(Context& ctx) : ctx_(ctx) {}

  void install(httplib::Server& s) {
    s.Get("/", [](const httplib::Request&, httplib::Response& res) {
      res.set_content(landing_page(), "text/html; charset=utf-8");
    });
    s.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
      send_json(res, 200, json{{"status", "ok"}});
    });
    s.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(ctx_.control->render_metrics(), "text/plain; version=0.0.4; charset=utf-8");
    });
    s.Get("/status", [this](const httplib::Request&, httplib::Response& res) { status(res); });
    s.Post("/request",
           [this](const httplib::Request& req, httplib::Response& res) { post_request(req, res); });
    s.Get(R"(/requests/([^/]+))", [this](const httplib::Request& req, httplib::Response& res) {
      get_request(req.matches[1].str(), res);
    });
    s.Delete(R"(/requests/([^/]+))", [this](const httplib::Request& req, httplib::Response& res) {
      delete_request(req.matches[1].str(), res);
    });
    s.Get("/services", [this](const httplib::Request&, httplib::Response& res) { list_services(res); });
    s.Get(R"(/services/([^/]+))", [this](const httplib::Request& req, httplib::Response& res) {
      get_service(req.matches[1].str(), res);
    });
    s.Get(R"(/services/([^/]+)/unit)", [this](const httplib::Request& req, httplib::Response& res) {
      unit_file(req.matches[1].str(), res);
    });
    s.Post(R"(/services/([^/]+)/(start|stop|sleep|wake))",
           [this](const httplib::Request& req, httplib::Response& res) {
             if (reject_oversized_body(ctx_, req, res)) return;
             service_action(req.matches[1].str(), req.matches[2].str(), res);
           });
    s.Get("/modes", [this](const httplib::Request&, httplib::Response& res) { list_modes(res); });
    s.Post(R"(/modes/([^/]+)/switch)", [this](const httplib::Request& req, httplib::Response& res) {
      if (reject_oversized_body(ctx_, req, res)) return;
      switch_mode(req.matches[1].str(), res);
    });
    s.Post("/reload", [this](const httplib::Request& req, httplib::Response& res) {
      if (reject_oversized_body(ctx_, req, res)) return;
      reload(res);
    });
    s.Get("/plan", [this](const httplib::Request& req, httplib::Response& res) { plan(req, res); });
  }

 private:
  [[nodiscard]] std::shared_ptr<const config::Config> config_or_empty() const {
    auto cfg = ctx_.control->config();
    if (!cfg) cfg = std::make_shared<const config::Config>();
    return cfg;
  }

  void status(httplib::Response& res) {
    auto snap = ctx_.control->snapshot();
    send_json(res, 200, snap ? to_json(*snap) : to_json(scheduler::Snapshot{}));
  }

  void post_request(const httplib::Request& req, httplib::Response& res) {
    if (reject_oversized_body(ctx_, req, res)) return;
    auto parsed = parse_request_body(req.body);
    if (!parsed) {
      send_error(res, 400, parsed.error());
      return;
    }
    scheduler::RequestSpec spec;
    spec.model = parsed->model;
    spec.priority = parsed->priority;
    spec.timeout = parsed->timeout;
    spec.keep_alive = parsed->keep_alive;
    spec.request_id = request_id_of(res);
    auto ticket = ctx_.control->submit(std::move(spec));
    if (!parsed->wait) {
      // Already decided (a ready model, or a rejection): answer as a waiting request would.
      if (ticket.outcome.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
        send_json(res, 202, json{{"request_id", ticket.request_id}, {"status", "queued"}});
        return;
      }
    } else {
      const auto why = wait_with_deadline(ctx_, ticket.outcome, request_budget(ctx_, parsed->timeout));
      if (why != WaitResult::ready) {
        (void)ctx_.control->cancel(ticket.request_id);
        answer_not_ready(ctx_, res, "request " + ticket.request_id + " for '" + parsed->model + "'", why);
        return;
      }
    }
    answer_outcome(ticket.outcome.get(), res);
  }

  static void answer_outcome(const scheduler::RequestOutcome& o, httplib::Response& res) {
    if (o.status == scheduler::RequestStatus::ready) {
      send_json(res, 200,
                json{{"request_id", o.request_id},
                     {"status", name_of(o.status)},
                     {"service", o.service},
                     {"endpoint", o.endpoint},
                     {"gpu", o.gpu},
                     {"waited_s", o.waited_seconds}});
      return;
    }
    const int code = o.http_status >= 400 ? o.http_status : 500;
    std::string message = o.message.empty() ? std::string("request ") + name_of(o.status) : o.message;
    send_error(res, code, message, o.retry_after_seconds);
    auto body = json::parse(res.body);
    body["request_id"] = o.request_id;
    body["status"] = name_of(o.status);
    res.set_content(body.dump(), "application/json");
  }

  bool check_name(const std::string& what, const std::string& name, httplib::Response& res) {
    auto problem = name_problem(what, name);
    if (problem.empty()) return true;
    send_error(res, 400, problem);
    return false;
  }

  void get_request(const std::string& id, httplib::Response& res) {
    if (!check_name("request id", id, res)) return;
    auto info = ctx_.control->request_info(id);
    if (!info) {
      send_error(res, 404, "no request with id '" + id + "' (finished requests are forgotten after a while)");
      return;
    }
    send_json(res, 200, to_json(*info));
  }

  void delete_request(const std::string& id, httplib::Response& res) {
    if (!check_name("request id", id, res)) return;
    if (!ctx_.control->request_info(id)) {
      send_error(res, 404, "no request with id '" + id + "'");
      return;
    }
    auto cancelled = ctx_.control->cancel(id);
    if (!cancelled) {
      send_error(res, 409, "request '" + id + "' cannot be cancelled: " + cancelled.error());
      return;
    }
    send_json(res, 200, json{{"request_id", id}, {"status", "cancelled"}});
  }

  void list_services(httplib::Response& res) {
    auto snap = ctx_.control->snapshot();
    json services = json::array();
    if (snap) {
      for (const auto& s : snap->services) services.push_back(to_json(s));
    }
    send_json(res, 200, json{{"services", services}});
  }

  void get_service(const std::string& id, httplib::Response& res) {
    if (!check_name("service id", id, res)) return;
    auto snap = ctx_.control->snapshot();
    if (snap) {
      for (const auto& s : snap->services) {
        if (s.id == id) {
          send_json(res, 200, to_json(s));
          return;
        }
      }
    }
    send_error(res, 404,
               "unknown service '" + id + "'; configured: " + name_list(service_ids(*config_or_empty())));
  }

  void unit_file(const std::string& id, httplib::Response& res) {
    if (!check_name("service id", id, res)) return;
    auto cfg = config_or_empty();
    if (find_preset_by_id(*cfg, id) == nullptr) {
      send_error(res, 404, "unknown service '" + id + "'; configured: " + name_list(service_ids(*cfg)));
      return;
    }
    auto text = ctx_.control->unit_file(id);
    if (!text) {
      send_error(res, 422, "cannot render a unit file for '" + id + "': " + text.error());
      return;
    }
    res.set_content(*text, "text/plain; charset=utf-8");
  }

  void service_action(const std::string& id, const std::string& action_name, httplib::Response& res) {
    if (!check_name("service id", id, res)) return;
    auto cfg = config_or_empty();
    const auto* preset = find_preset_by_id(*cfg, id);
    if (preset == nullptr) {
      send_error(res, 404, "unknown service '" + id + "'; configured: " + name_list(service_ids(*cfg)));
      return;
    }
    scheduler::ServiceAction action = scheduler::ServiceAction::start;
    if (action_name == "stop") action = scheduler::ServiceAction::stop;
    if (action_name == "sleep") action = scheduler::ServiceAction::sleep;
    if (action_name == "wake") action = scheduler::ServiceAction::wake;
    auto future = ctx_.control->service_action(id, action);
    const auto why = wait_with_deadline(ctx_, future, operation_budget(ctx_, *cfg, {preset}));
    if (why != WaitResult::ready) {
      answer_not_ready(ctx_, res, action_name + " of '" + id + "'", why);
      return;
    }
    const auto result = future.get();
    json body{{"service", id}, {"action", action_name}, {"ok", result.ok}, {"message", result.message}};
    if (!result.ok) {
      const int code = result.http_status >= 400 ? result.http_status : 409;
      send_error(res, code,
                 result.message.empty() ? action_name + " of '" + id + "' failed" : result.message);
      auto err = json::parse(res.body);
      body["error"] = err["error"];
      res.set_content(body.dump(), "application/json");
      return;
    }
    send_json(res, 200, body);
  }

  void list_modes(httplib::Response& res) {
    auto cfg = config_or_empty();
    auto snap = ctx_.control->snapshot();
    const std::string current = snap ? snap->current_mode : "";
    json modes = json::array();
    for (const auto& m : cfg->modes) {
      modes.push_back(json{{"id", m.id},
                           {"name", m.name},
                           {"description", m.description},
                           {"services", m.services},
                           {"current", m.id == current}});
    }
    send_json(res, 200, json{{"current", current}, {"modes", modes}});
  }

  void switch_mode(const std::string& id, httplib::Response& res) {
    if (!check_name("mode id", id, res)) return;
    auto cfg = config_or_empty();
    const auto* mode = find_mode_by_id(*cfg, id);
    if (mode == nullptr) {
      send_error(res, 404, "unknown mode '" + id + "'; configured: " + name_list(mode_ids(*cfg)));
      return;
    }
    std::vector<const config::Preset*> starts;
    for (const auto& svc : mode->services) starts.push_back(find_preset_by_id(*cfg, svc));
    auto future = ctx_.control->switch_mode(id);
    const auto why = wait_with_deadline(ctx_, future, operation_budget(ctx_, *cfg, starts));
    if (why != WaitResult::ready) {
      answer_not_ready(ctx_, res, "the switch to mode '" + id + "'", why);
      return;
    }
    const auto result = future.get();
    json body = to_json(result);
    if (!result.ok) {
      const int code = result.http_status >= 400 ? result.http_status : 409;
      std::string message = "switch to mode '" + id + "' failed";
      if (!result.errors.empty()) message += ": " + name_list(result.errors, 5);
      send_error(res, code, message);
      body["error"] = json::parse(res.body)["error"];
      res.set_content(body.dump(), "application/json");
      return;
    }
    send_json(res, 200, body);
  }

  void reload(httplib::Response& res) {
    auto future = ctx_.control->reload();
    const auto why = wait_with_deadline(ctx_, future, milliseconds(60000) + ctx_.options.scheduler_grace);
    if (why != WaitResult::ready) {
      answer_not_ready(ctx_, res, "the reload", why);
      return;
    }
    const auto result = future.get();
    json body = to_json(result);
    if (!result.ok) {
      // The new config was refused; the running one stays.
      send_error(res, 422, "reload refused, the running config stays: " + result.message);
      body["error"] = json::parse(res.body)["error"];
      res.set_content(body.dump(), "application/json");
      return;
    }
    send_json(res, 200, body);
  }

  void plan(const httplib::Request& req, httplib::Response& res) {
    if (!req.has_param("model")) {
      send_error(res, 400, "query parameter 'model' is required, e.g. GET /plan?model=qwen3-coder");
      return;
    }
    const std::string model = req.get_param_value("model");
    if (!check_name("model", model, res)) return;
    auto cfg = config_or_empty();
    if (find_preset_for_model(*cfg, model) == nullptr) {
      send_error(res, 404, "unknown model '" + model + "'; GET /v1/models lists the models gpumod serves");
      return;
    }
    auto future = ctx_.control->dry_run(model);
    const auto why = wait_with_deadline(ctx_, future, milliseconds(10000) + ctx_.options.scheduler_grace);
    if (why != WaitResult::ready) {
      answer_not_ready(ctx_, res, "the plan for '" + model + "'", why);
      return;
    }
    auto result = future.get();
    if (!result) {
      send_error(res, 422, "cannot plan '" + model + "': " + result.error());
      return;
    }
    send_json(res, 200, to_json(*result, model));
  }

  Context& ctx_;
};

}  // namespace

struct ApiServer::Impl {
  Context ctx;
  httplib::Server server;
  Handlers handlers{ctx};
  bool bound = false;
  // run() and stop() may race (stop right after the thread that calls run() was started):
  // httplib's stop() only acts once listening began, so stop() waits for that point.
  std::mutex run_mutex;
  bool run_active = false;

  void install() {
    const int threads = std::max(1, ctx.options.threads);
    server.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<std::size_t>(threads)); };
    server.set_payload_max_length(
        static_cast<std::size_t>(std::max<std::int64_t>(0, ctx.options.max_body_bytes)));
    // Keep connections open for clients that send many requests (benchmarks, the proxy).
    server.set_keep_alive_max_count(10000);
    // Responses go out as headers then body; with Nagle on, the body waits for the client's
    // delayed ACK (~40 ms per exchange, bench/README.md "HTTP").
    server.set_tcp_nodelay(true);
    server.set_pre_routing_handler(
        [this](const httplib::Request& req, httplib::Response& res) { return pre_route(req, res); });
    server.set_error_handler(httplib::Server::HandlerWithResponse(
        [this](const httplib::Request& req, httplib::Response& res) { return fill_error(req, res); }));
    server.set_exception_handler(
        [](const httplib::Request&, httplib::Response& res, const std::exception_ptr& ep) {
          std::string what = "unknown exception";
          try {
            if (ep) std::rethrow_exception(ep);
          } catch (const std::exception& e) {
            what = e.what();
          } catch (...) {
          }
          send_error(res, 500, "internal error in gpumod: " + what);
        });
    server.set_logger(
        [](const httplib::Request& req, const httplib::Response& res) { log_exchange(req, res); });
    handlers.install(server);
    register_proxy_routes(server, ctx);
  }

  httplib::Server::HandlerResponse pre_route(const httplib::Request& req, httplib::Response& res) const {
    // A request with neither Content-Length nor Transfer-Encoding has an empty body (RFC 9112
    // 6.3), which is what `curl -X POST URL` sends. cpp-httplib 0.11 instead reads such a POST
    // until the client closes, so it would hang for the read timeout: state the length.
    // (The Request is the library's own non-const object; routing reads the header next.)
    if (req.method != "GET" && req.method != "HEAD" && !req.has_header("Content-Length") &&
        !req.has_header("Transfer-Encoding")) {
      const_cast<httplib::Request&>(req).set_header("Content-Length", "0");  // NOLINT
    }
    const std::string given = req.get_header_value(kRequestIdHeader);
    res.set_header(kRequestIdHeader, acceptable_request_id(given) ? given : generate_request_id());
    if (ctx.options.api_token && !ctx.options.api_token->empty() && req.path != "/healthz") {
      auto token = bearer_token(req.get_header_value("Authorization"));
      if (!token || !tokens_equal(*token, *ctx.options.api_token)) {
        res.set_header("WWW-Authenticate", "Bearer");
        send_error(
            res, 401,
            token ? "the bearer token is not valid"
                  : "this gpumod requires 'Authorization: Bearer <token>' (set GPUMOD_TOKEN for the CLI)");
        return httplib::Server::HandlerResponse::Handled;
      }
    }
    return httplib::Server::HandlerResponse::Unhandled;
  }

  // Gives httplib's own error answers (no route, body too large, bad request line) our shape.
  httplib::Server::HandlerResponse fill_error(const httplib::Request& req, httplib::Response& res) const {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    if (res.status == 404 || res.status == 400) {
      for (const auto& shape : route_shapes()) {
        if (std::regex_match(req.path, shape.pattern)) {
          res.set_header("Allow", shape.methods);
          send_error(res, 405, req.method + " is not allowed on " + req.path + "; use " + shape.methods);
          return httplib::Server::HandlerResponse::Handled;
        }
      }
      if (res.status == 404) {
        send_error(res, 404,
                   "no such endpoint: " + req.method + " " + req.path + " (GET / lists the main ones)");
        return httplib::Server::HandlerResponse::Handled;
      }
    }
    if (res.status == 413) {
      send_error(res, 413,
                 "the request body is larger than the limit of " +
                     std::to_string(ctx.options.max_body_bytes) + " bytes (policy.max_body_bytes)");
      return httplib::Server::HandlerResponse::Handled;
    }
    send_error(res, res.status, std::string("request failed with HTTP ") + std::to_string(res.status));
    return httplib::Server::HandlerResponse::Handled;
  }

  static void log_exchange(const httplib::Request& req, const httplib::Response& res) {
    const auto rid = request_id_of(res);
    if (req.path == "/metrics" || req.path == "/healthz") {
      spdlog::debug("http {} {} -> {} request_id={}", req.method, req.path, res.status, rid);
    } else if (res.status >= 500) {
      spdlog::warn("http {} {} -> {} request_id={} from={}", req.method, req.path, res.status, rid,
                   req.remote_addr);
    } else {
      spdlog::info("http {} {} -> {} request_id={} from={}", req.method, req.path, res.status, rid,
                   req.remote_addr);
    }
  }
};

ApiServer::ApiServer(std::shared_ptr<Control> control, ServerOptions options)
    : impl_(std::make_unique<Impl>()) {
  impl_->ctx.control = std::move(control);
  impl_->ctx.options = std::move(options);
  impl_->install();
}

namespace {
// cpp-httplib 0.11 is compiled with a listen backlog of 5, so a burst of clients overflows the
// accept queue and their SYNs are dropped and retried seconds later. The library does not expose
// its socket; find our listening socket among this process's descriptors and call listen() on it
// again, which on Linux just raises the backlog.
void widen_listen_backlog(int port) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd", ec)) {
    int fd = -1;
    try {
      fd = std::stoi(entry.path().filename().string());
    } catch (const std::exception&) {
      continue;
    }
    int listening = 0;
    socklen_t len = sizeof listening;
    if (::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || listening == 0) continue;
    sockaddr_storage addr{};
    socklen_t alen = sizeof addr;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &alen) != 0) continue;
    int bound_port = -1;
    if (addr.ss_family == AF_INET) bound_port = ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
    if (addr.ss_family == AF_INET6) bound_port = ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port);
    if (bound_port == port && ::listen(fd, SOMAXCONN) != 0) {
      spdlog::warn("api: could not raise the listen backlog: {}", std::strerror(errno));
    }
  }
}
}  // namespace

ApiServer::~ApiServer() {
  stop();
}

Result<int> ApiServer::bind() {
  const auto& opts = impl_->ctx.options;
  const bool have_token = opts.api_token && !opts.api_token->empty();
  if (!is_loopback_host(opts.host) && !have_token) {
    return make_error(
        "refusing to listen on " + opts.host +
        ": it is not a loopback address and no api_token is configured; set api_token "
        "(every control endpoint then requires 'Authorization: Bearer <token>') or listen on 127.0.0.1");
  }
  if (impl_->bound) return make_error("the API server is already bound");
  // A client that disconnects mid-response must not kill the daemon with SIGPIPE.
  std::signal(SIGPIPE, SIG_IGN);
  int port = opts.port;
  if (port == 0) {
    port = impl_->server.bind_to_any_port(opts.host);
    if (port < 0) return make_error("cannot bind " + opts.host + " on any port");
  } else if (!impl_->server.bind_to_port(opts.host, port)) {
    return make_error("cannot listen on " + opts.host + ":" + std::to_string(port) +
                      " (in use, or the address is not on this host)");
  }
  widen_listen_backlog(port);
  impl_->bound = true;
  spdlog::info("api: listening on http://{}:{}{}", opts.host, port,
               have_token ? " (bearer token required)" : "");
  return port;
}

void ApiServer::run() {
  if (!impl_->bound) {
    spdlog::error("api: run() called before a successful bind()");
    return;
  }
  {
    std::lock_guard lock(impl_->run_mutex);
    if (impl_->ctx.stopping.load()) return;
    impl_->run_active = true;
  }
  impl_->server.listen_after_bind();
  std::lock_guard lock(impl_->run_mutex);
  impl_->run_active = false;
}

void ApiServer::stop() {
  impl_->ctx.stopping.store(true);
  for (;;) {
    {
      std::lock_guard lock(impl_->run_mutex);
      if (!impl_->run_active || impl_->server.is_running()) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  impl_->server.stop();
  impl_->ctx.stop_upstream_calls();
}

}  // namespace gpumod::api
