// The control API on gpumod's own HTTP server (http/server.hpp): routes, the request-id /
// auth step that runs before routing, the JSON error shape for everything the transport answers
// on its own (400, 404, 405, 413, 431, 500), and the access log (one line per answer, with its
// request id).
#include "api/server.hpp"

#include <spdlog/spdlog.h>

#include <array>
#include <atomic>
#include <charconv>
#include <cmath>
#include <csignal>
#include <string_view>
#include <utility>
#include <vector>

#include "api/control.hpp"
#include "api/http_context.hpp"
#include "api/json_view.hpp"
#include "api/later.hpp"
#include "api/validate.hpp"
#include "base/utf8.hpp"
#include "http/server.hpp"

namespace gpumod::api {

using nlohmann::json;
using std::chrono::milliseconds;

std::string to_wire(const json& body) {
  return body.dump(-1, ' ', false, json::error_handler_t::replace);
}

void send_json(HttpResponse& res, int status, const json& body) {
  res.status = status;
  res.set_content(to_wire(body), "application/json");
}

void send_error(HttpResponse& res, int status, const std::string& message, int retry_after_s) {
  if (status == 503) res.set_header("Retry-After", std::to_string(std::max(1, retry_after_s)));
  send_json(res, status, error_body(status, message, request_id_of(res)));
}

milliseconds request_budget(const Context& ctx, std::optional<milliseconds> timeout) {
  milliseconds base = timeout.value_or(milliseconds(300000));
  if (!timeout) {
    if (auto cfg = ctx.control->config()) base = cfg->daemon.policy.default_request_timeout;
  }
  return base + ctx.options.scheduler_grace;
}

namespace {

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
<li><a href="/ui">/ui</a>: the web page (GPUs, services, modes, queue, events, logs)</li>
<li><a href="/events">/events</a>: what the scheduler decides and why (Server-Sent Events)</li>
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

void answer_late(HttpResponse& res, const std::string& what) {
  send_error(
      res, 504,
      "gpumod's scheduler did not finish " + what + " in time; it may still complete: check GET /status");
}

void append_json_string(std::string& out, std::string_view s) {
  out += '"';
  for (const char ch : s) {
    const auto u = static_cast<unsigned char>(ch);
    if (ch == '"' || ch == '\\') {
      out += '\\';
      out += ch;
    } else if (u < 0x20) {
      out += "\\u00";
      out += hex_byte(u);
    } else {
      out += ch;
    }
  }
  out += '"';
}

// The 200 answer of POST /request, written directly rather than through nlohmann::json: it is
// the fast path's body, and building + dumping a json object was ~6% of its CPU time. Same
// keys, same order (sorted) as the json object gave.
std::string ready_answer(const scheduler::RequestOutcome& o) {
  std::string out;
  out.reserve(160 + o.endpoint.size() + o.service.size() + o.request_id.size());
  out += R"({"endpoint":)";
  append_json_string(out, o.endpoint);
  out += R"(,"gpu":)";
  out += std::to_string(o.gpu);
  out += R"(,"request_id":)";
  append_json_string(out, o.request_id);
  out += R"(,"service":)";
  append_json_string(out, o.service);
  out += R"(,"status":)";
  append_json_string(out, scheduler::to_string(o.status));
  out += R"(,"waited_s":)";
  std::array<char, 32> num{};
  auto [end, ec] = std::to_chars(num.data(), num.data() + num.size(), o.waited_seconds);
  if (ec == std::errc() && std::isfinite(o.waited_seconds)) {
    out.append(num.data(), end);
  } else {
    out += "0";
  }
  out += '}';
  return out;
}

class Handlers {
 public:
  explicit Handlers(Context& ctx) : ctx_(ctx) {}

  void install(http::HttpServer& s) {
    using http::HandlerKind;
    s.route("GET", "/", HandlerKind::inline_, [](HttpRequest&, HttpResponse& res) {
      res.set_content(landing_page(), "text/html; charset=utf-8");
    });
    s.route("GET", "/ui", HandlerKind::inline_, [](HttpRequest&, HttpResponse& res) {
      res.set_content(ui_page(), "text/html; charset=utf-8");
      res.set_header("Cache-Control", "no-cache");
    });
    s.route("GET", "/healthz", HandlerKind::inline_,
            [this](HttpRequest&, HttpResponse& res) { healthz(res); });
    s.route("GET", "/metrics", HandlerKind::blocking, [this](HttpRequest&, HttpResponse& res) {
      res.set_content(ctx_.control->render_metrics(), "text/plain; version=0.0.4; charset=utf-8");
    });
    s.route("GET", "/status", HandlerKind::inline_, [this](HttpRequest&, HttpResponse& res) { status(res); });
    // The fast path: answered on the loop thread when the scheduler decided at once.
    s.route("POST", "/request", HandlerKind::inline_,
            [this](HttpRequest& req, HttpResponse& res) { post_request(req, res); });
    s.route("GET", "/requests/{}", HandlerKind::inline_,
            [this](HttpRequest& req, HttpResponse& res) { get_request(req.captures[0], res); });
    s.route("DELETE", "/requests/{}", HandlerKind::inline_,
            [this](HttpRequest& req, HttpResponse& res) { delete_request(req.captures[0], res); });
    s.route("GET", "/services", HandlerKind::inline_,
            [this](HttpRequest&, HttpResponse& res) { list_services(res); });
    s.route("GET", "/services/{}", HandlerKind::inline_,
            [this](HttpRequest& req, HttpResponse& res) { get_service(req.captures[0], res); });
    s.route("GET", "/services/{}/unit", HandlerKind::blocking,
            [this](HttpRequest& req, HttpResponse& res) { unit_file(req.captures[0], res); });
    for (const char* action : {"start", "stop", "sleep", "wake"}) {
      s.route("POST", std::string("/services/{}/") + action, HandlerKind::inline_,
              [this, action](HttpRequest& req, HttpResponse& res) {
                service_action(req.captures[0], action, res);
              });
    }
    s.route("GET", "/modes", HandlerKind::inline_,
            [this](HttpRequest&, HttpResponse& res) { list_modes(res); });
    s.route("POST", "/modes/{}/switch", HandlerKind::inline_,
            [this](HttpRequest& req, HttpResponse& res) { switch_mode(req.captures[0], res); });
    s.route("POST", "/reload", HandlerKind::inline_,
            [this](HttpRequest&, HttpResponse& res) { reload(res); });
    s.route("GET", "/plan", HandlerKind::inline_,
            [this](HttpRequest& req, HttpResponse& res) { plan(req, res); });
  }

 private:
  // Answers once `later->future` is ready (api/later.hpp), holding no thread meanwhile: `fill`
  // writes the answer into the response; after `budget`, a 504 says that `what` did not finish.
  template <typename Future, typename Fill>
  static void answer_when_ready(HttpResponse& res, const std::shared_ptr<LaterAnswer<Future>>& later,
                                milliseconds budget, std::string what, Fill fill,
                                typename LaterAnswer<Future>::OnLate on_late = nullptr) {
    later->park(
        res, budget,
        [fill = std::move(fill)](Future& future, const std::shared_ptr<http::Responder>& client) {
          fill(future, client->response());
          client->send();
        },
        [what = std::move(what), on_late = std::move(on_late)](const std::shared_ptr<http::Responder>& client,
                                                               bool stopping) {
          if (on_late) on_late(client, stopping);
          if (stopping) {
            send_error(client->response(), 503, "gpumod is shutting down; " + what + " was not finished", 5);
          } else {
            answer_late(client->response(), what);
          }
          client->send();
        });
  }

  [[nodiscard]] std::shared_ptr<const config::Config> config_or_empty() const {
    auto cfg = ctx_.control->config();
    if (!cfg) cfg = std::make_shared<const config::Config>();
    return cfg;
  }

  // Healthy while the scheduler loop turns: a daemon whose scheduler is stuck must not look
  // alive to a load balancer or an orchestrator (the watchdog in serve follows the same rule).
  void healthz(HttpResponse& res) {
    const scheduler::LoopHealth h = ctx_.control->loop_health();
    if (!h.stalled) {
      res.set_content(R"({"status":"ok"})", "application/json");
      return;
    }
    const auto seconds = [](std::chrono::milliseconds ms) {
      return fmt::format("{:.1f}", std::chrono::duration<double>(ms).count());
    };
    send_error(
        res, 503,
        "the scheduler loop has not turned for " + seconds(h.since_last_turn) + " s (policy.stall_timeout " +
            seconds(h.stall_timeout) + " s)" +
            (h.in_flight.empty() ? std::string()
                                 : "; stuck in '" + h.in_flight + "' for " + seconds(h.in_flight_for) + " s"),
        5);
  }

  void status(HttpResponse& res) {
    auto snap = ctx_.control->snapshot();
    send_json(res, 200, snap ? to_json(*snap) : to_json(scheduler::Snapshot{}));
  }

  void post_request(HttpRequest& req, HttpResponse& res) {
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
    const auto decided_at_once = [&res](const scheduler::RequestTicket& ticket) {
      if (ticket.outcome.wait_for(std::chrono::seconds(0)) != std::future_status::ready) return false;
      answer_outcome(ticket.outcome.get(), res);  // a ready model, or a refusal: answered here
      return true;
    };
    if (!parsed->wait) {
      // 202 only once the scheduler has taken the request in: a GET or DELETE that follows at
      // once must find it, and a refusal decided meanwhile is answered as such. That takes one
      // scheduler round (microseconds); the bound is for a scheduler that is stuck.
      auto later = LaterAnswer<std::shared_future<void>>::make(ctx_.poster);
      auto ticket = ctx_.control->submit(std::move(spec), nullptr, later->notify());
      if (decided_at_once(ticket)) return;
      later->future = ticket.accepted;
      answer_when_ready(res, later, std::chrono::seconds(30), "taking in request " + ticket.request_id,
                        [ticket](std::shared_future<void>&, HttpResponse& r) {
                          if (ticket.outcome.wait_for(std::chrono::seconds(0)) == std::future_status::ready) {
                            answer_outcome(ticket.outcome.get(), r);
                            return;
                          }
                          send_json(r, 202, json{{"request_id", ticket.request_id}, {"status", "queued"}});
                        });
      return;
    }
    auto later = LaterAnswer<std::shared_future<scheduler::RequestOutcome>>::make(ctx_.poster);
    auto ticket = ctx_.control->submit(std::move(spec), later->notify(), nullptr);
    if (decided_at_once(ticket)) return;
    later->future = ticket.outcome;
    // The scheduler answers by the request's own deadline; the budget is a backstop for a
    // scheduler that is stuck, after which the request is withdrawn.
    answer_when_ready(
        res, later, request_budget(ctx_, parsed->timeout),
        "request " + ticket.request_id + " for '" + parsed->model + "'",
        [](std::shared_future<scheduler::RequestOutcome>& outcome, HttpResponse& r) {
          answer_outcome(outcome.get(), r);
        },
        [control = ctx_.control, id = ticket.request_id](const std::shared_ptr<http::Responder>&, bool) {
          (void)control->cancel(id, nullptr);
        });
  }

  static void answer_outcome(const scheduler::RequestOutcome& o, HttpResponse& res) {
    if (o.status == scheduler::RequestStatus::ready) {
      res.status = 200;
      res.set_content(ready_answer(o), "application/json");
      return;
    }
    const int code = http_status(o.refusal, 500);
    std::string message =
        o.message.empty() ? std::string("request ") + scheduler::to_string(o.status) : o.message;
    if (code == 503) res.set_header("Retry-After", std::to_string(std::max(1, o.retry_after_seconds)));
    json body = error_body(code, message, request_id_of(res));
    body["request_id"] = o.request_id;
    body["status"] = scheduler::to_string(o.status);
    send_json(res, code, body);
  }

  bool check_name(const std::string& what, const std::string& name, HttpResponse& res) {
    auto problem = name_problem(what, name);
    if (problem.empty()) return true;
    send_error(res, 400, problem);
    return false;
  }

  void get_request(const std::string& id, HttpResponse& res) {
    if (!check_name("request id", id, res)) return;
    auto info = ctx_.control->request_info(id);
    if (!info) {
      send_error(res, 404, "no request with id '" + id + "' (finished requests are forgotten after a while)");
      return;
    }
    send_json(res, 200, to_json(*info));
  }

  void delete_request(const std::string& id, HttpResponse& res) {
    if (!check_name("request id", id, res)) return;
    if (!ctx_.control->request_info(id)) {
      send_error(res, 404, "no request with id '" + id + "'");
      return;
    }
    auto later = LaterAnswer<std::future<Result<void>>>::make(ctx_.poster);
    later->future = ctx_.control->cancel(id, later->notify());
    answer_when_ready(res, later, std::chrono::seconds(30), "the cancel of request '" + id + "'",
                      [id](std::future<Result<void>>& future, HttpResponse& r) {
                        const auto cancelled = future.get();
                        if (!cancelled) {
                          send_error(r, 409,
                                     "request '" + id + "' cannot be cancelled: " + cancelled.error());
                          return;
                        }
                        send_json(r, 200, json{{"request_id", id}, {"status", "cancelled"}});
                      });
  }

  void list_services(HttpResponse& res) {
    auto snap = ctx_.control->snapshot();
    json services = json::array();
    if (snap) {
      for (const auto& s : snap->services) services.push_back(to_json(s));
    }
    send_json(res, 200, json{{"services", services}});
  }

  void get_service(const std::string& id, HttpResponse& res) {
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

  void unit_file(const std::string& id, HttpResponse& res) {
    if (!check_name("service id", id, res)) return;
    auto cfg = config_or_empty();
    if (cfg->find_preset(id) == nullptr) {
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

  void service_action(const std::string& id, const std::string& action_name, HttpResponse& res) {
    if (!check_name("service id", id, res)) return;
    auto cfg = config_or_empty();
    const auto* preset = cfg->find_preset(id);
    if (preset == nullptr) {
      send_error(res, 404, "unknown service '" + id + "'; configured: " + name_list(service_ids(*cfg)));
      return;
    }
    scheduler::ServiceAction action = scheduler::ServiceAction::start;
    if (action_name == "stop") action = scheduler::ServiceAction::stop;
    if (action_name == "sleep") action = scheduler::ServiceAction::sleep;
    if (action_name == "wake") action = scheduler::ServiceAction::wake;
    auto later = LaterAnswer<std::future<scheduler::ActionResult>>::make(ctx_.poster);
    later->future = ctx_.control->service_action(id, action, later->notify());
    answer_when_ready(
        res, later, operation_budget(ctx_, *cfg, {preset}), action_name + " of '" + id + "'",
        [id, action_name](std::future<scheduler::ActionResult>& future, HttpResponse& r) {
          const auto result = future.get();
          json body{{"service", id}, {"action", action_name}, {"ok", result.ok}, {"message", result.message}};
          if (!result.ok) {
            const int code = http_status(result.refusal, 409);
            send_error(r, code,
                       result.message.empty() ? action_name + " of '" + id + "' failed" : result.message);
            body["error"] = json::parse(r.body)["error"];
            r.set_content(to_wire(body), "application/json");
            return;
          }
          send_json(r, 200, body);
        });
  }

  void list_modes(HttpResponse& res) {
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

  void switch_mode(const std::string& id, HttpResponse& res) {
    if (!check_name("mode id", id, res)) return;
    auto cfg = config_or_empty();
    const auto* mode = cfg->find_mode(id);
    if (mode == nullptr) {
      send_error(res, 404, "unknown mode '" + id + "'; configured: " + name_list(mode_ids(*cfg)));
      return;
    }
    std::vector<const config::Preset*> starts;
    for (const auto& svc : mode->services) starts.push_back(cfg->find_preset(svc));
    auto later = LaterAnswer<std::future<scheduler::ModeResult>>::make(ctx_.poster);
    later->future = ctx_.control->switch_mode(id, later->notify());
    answer_when_ready(res, later, operation_budget(ctx_, *cfg, starts), "the switch to mode '" + id + "'",
                      [id](std::future<scheduler::ModeResult>& future, HttpResponse& r) {
                        const auto result = future.get();
                        json body = to_json(result);
                        if (!result.ok) {
                          const int code = http_status(result.refusal, 409);
                          std::string message = "switch to mode '" + id + "' failed";
                          if (!result.errors.empty()) message += ": " + name_list(result.errors, 5);
                          send_error(r, code, message);
                          body["error"] = json::parse(r.body)["error"];
                          r.set_content(to_wire(body), "application/json");
                          return;
                        }
                        send_json(r, 200, body);
                      });
  }

  void reload(HttpResponse& res) {
    auto later = LaterAnswer<std::future<scheduler::ReloadResult>>::make(ctx_.poster);
    later->future = ctx_.control->reload(later->notify());
    answer_when_ready(res, later, milliseconds(60000) + ctx_.options.scheduler_grace, "the reload",
                      [](std::future<scheduler::ReloadResult>& future, HttpResponse& r) {
                        const auto result = future.get();
                        json body = to_json(result);
                        if (!result.ok) {
                          // The new config was refused; the running one stays.
                          send_error(r, 422, "reload refused, the running config stays: " + result.message);
                          body["error"] = json::parse(r.body)["error"];
                          r.set_content(to_wire(body), "application/json");
                          return;
                        }
                        send_json(r, 200, body);
                      });
  }

  void plan(HttpRequest& req, HttpResponse& res) {
    if (!req.has_param("model")) {
      send_error(res, 400, "query parameter 'model' is required, e.g. GET /plan?model=qwen3-coder");
      return;
    }
    const std::string model = req.param("model");
    if (!check_name("model", model, res)) return;
    auto cfg = config_or_empty();
    if (cfg->resolve_model(model) == nullptr) {
      send_error(res, 404, "unknown model '" + model + "'; GET /v1/models lists the models gpumod serves");
      return;
    }
    auto later = LaterAnswer<std::future<Result<scheduler::DryRun>>>::make(ctx_.poster);
    later->future = ctx_.control->dry_run(model, later->notify());
    answer_when_ready(res, later, milliseconds(10000) + ctx_.options.scheduler_grace,
                      "the plan for '" + model + "'",
                      [model](std::future<Result<scheduler::DryRun>>& future, HttpResponse& r) {
                        auto result = future.get();
                        if (!result) {
                          send_error(r, 422, "cannot plan '" + model + "': " + result.error());
                          return;
                        }
                        send_json(r, 200, to_json(*result, model));
                      });
  }

  Context& ctx_;
};

}  // namespace

struct ApiServer::Impl {
  Context ctx;
  std::unique_ptr<http::HttpServer> server;
  Handlers handlers{ctx};
  bool bound = false;
  std::atomic<bool> running{false};  // run() is in the server's loop

  Impl() = default;
  // The pool's connections unwatch themselves on the server's loop: drop them first. A
  // scheduler Notify that fires from now on finds no loop to post to.
  ~Impl() {
    if (ctx.upstreams) ctx.upstreams->clear();
    if (ctx.poster) ctx.poster->close();
  }
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  void install() {
    http::HttpServerOptions o;
    o.host = ctx.options.host;
    o.port = ctx.options.port;
    o.threads = std::max(1, ctx.options.threads);
    o.max_body_bytes = ctx.options.max_body_bytes;
    o.idle_timeout = ctx.options.idle_timeout;
    server = std::make_unique<http::HttpServer>(o);
    ctx.upstreams = std::make_unique<UpstreamPool>(server->reactor());
    ctx.poster = std::make_shared<LoopPoster>(server->reactor());
    server->set_before([this](HttpRequest& req, HttpResponse& res) { return before_route(req, res); });
    server->set_error_filler([this](const HttpRequest& req, HttpResponse& res) { fill_error(req, res); });
    server->set_logger([](const HttpRequest& req, const HttpResponse& res) { log_exchange(req, res); });
    handlers.install(*server);
    register_proxy_routes(*server, ctx);
    register_stream_routes(*server, ctx);
  }

  // Request id for every exchange; the bearer token where one is configured. True when it
  // answered (401).
  bool before_route(const HttpRequest& req, HttpResponse& res) const {
    const std::string& given = req.header(kRequestIdHeader);
    res.set_header(kRequestIdHeader, acceptable_request_id(given) ? given : generate_request_id());
    // /ui is the page itself, which holds no data: it asks for the token and sends it with every
    // call it makes, so a browser can open it at all (it cannot add the header to a navigation).
    if (ctx.options.api_token && !ctx.options.api_token->empty() && req.path != "/healthz" &&
        req.path != "/ui") {
      auto token = bearer_token(req.header("Authorization"));
      if (!token || !tokens_equal(*token, *ctx.options.api_token)) {
        res.set_header("WWW-Authenticate", "Bearer");
        send_error(
            res, 401,
            token ? "the bearer token is not valid"
                  : "this gpumod requires 'Authorization: Bearer <token>' (set GPUMOD_TOKEN for the CLI)");
        return true;
      }
    }
    return false;
  }

  // Gives the transport's own answers our JSON error shape.
  void fill_error(const HttpRequest& req, HttpResponse& res) const {
    if (res.header(kRequestIdHeader).empty()) {
      const std::string& given = req.header(kRequestIdHeader);
      res.set_header(kRequestIdHeader, acceptable_request_id(given) ? given : generate_request_id());
    }
    const std::string limit = std::to_string(ctx.options.max_body_bytes);
    switch (res.status) {
      case 404:
        send_error(res, 404,
                   "no such endpoint: " + req.method + " " + req.path + " (GET / lists the main ones)");
        return;
      case 405:
        send_error(res, 405, req.method + " is not allowed on " + req.path + "; use " + res.header("Allow"));
        return;
      case 413:
        send_error(
            res, 413,
            "the request body is larger than the limit of " + limit + " bytes (policy.max_body_bytes)");
        return;
      case 431:
        send_error(res, 431, "the request's header fields are too large (at most 64 KiB and 100 fields)");
        return;
      case 400:
      case 501:
      case 505:
        // The transport's parser says what is wrong in the body (http/request_parser.hpp);
        // any input it quotes is escaped already.
        send_error(
            res, res.status,
            "malformed HTTP/1.1 request: " + (res.body.empty() ? std::string("bad syntax") : res.body) +
                "; the connection is closed");
        return;
      case 500:
        send_error(res, 500, "internal error in gpumod: " + (res.body.empty() ? "unknown" : res.body));
        return;
      default:
        send_error(res, res.status, "request failed with HTTP " + std::to_string(res.status));
    }
  }

  static void log_exchange(const HttpRequest& req, const HttpResponse& res) {
    const auto& rid = res.header(kRequestIdHeader);
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

ApiServer::~ApiServer() {
  stop();
}

Result<int> ApiServer::bind() {
  const auto& opts = impl_->ctx.options;
  const bool have_token = opts.api_token && !opts.api_token->empty();
  if (!config::is_loopback_host(opts.host) && !have_token) {
    return make_error(
        "refusing to listen on " + opts.host +
        ": it is not a loopback address and no api_token is configured; set api_token "
        "(every control endpoint then requires 'Authorization: Bearer <token>') or listen on 127.0.0.1");
  }
  if (impl_->bound) return make_error("the API server is already bound");
  // Every write of the server and the proxy uses MSG_NOSIGNAL; this is for anything else in the
  // process that writes to a socket or pipe whose reader went away.
  std::signal(SIGPIPE, SIG_IGN);
  auto port = impl_->server->bind();
  if (!port) {
    return make_error("cannot listen on " + opts.host + ":" + std::to_string(opts.port) + " (" +
                      port.error() + "; in use, or the address is not on this host)");
  }
  impl_->bound = true;
  spdlog::info("api: listening on http://{}:{}{}", opts.host, *port,
               have_token ? " (bearer token required)" : "");
  return *port;
}

void ApiServer::run() {
  if (!impl_->bound) {
    spdlog::error("api: run() called before a successful bind()");
    return;
  }
  impl_->running.store(true);
  impl_->server->run();
  impl_->running.store(false);
  impl_->ctx.upstreams->clear();
}

void ApiServer::stop() {
  if (impl_->running.load()) {
    // On the loop: the clients still waiting for the scheduler are told (503) before their
    // connections close. Should the loop have ended meanwhile, the post is dropped, and the
    // server is stopped already.
    impl_->ctx.poster->post([impl = impl_.get()] {
      impl->ctx.poster->answer_all_stopping();
      impl->server->stop();
    });
    return;
  }
  impl_->server->stop();
}

}  // namespace gpumod::api
