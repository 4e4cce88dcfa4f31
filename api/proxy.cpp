// The OpenAI-compatible proxy under /v1: route by the body's `model`, get the model ready
// through the admission queue while holding a lease, forward the call to the service and pass
// its answer back (SSE chunk by chunk when "stream": true). The lease is released when the
// upstream call ends or the client goes away.
//
// Threads: everything runs on the HTTP server's loop thread (http/async.hpp): the request
// is parsed and the lease taken inline, the upstream call (http/upstream.hpp) and the answer are
// loop callbacks. When the model is ready the lease comes at once from the scheduler's lease
// gate, so a proxied call never leaves the loop thread. A call whose model must first be loaded
// waits parked, holding no thread (api/later.hpp): the scheduler's answer is posted to the loop.
//
// Streams are passed on as they arrive; when the client takes them slower than the service
// writes, reading from the service pauses above kStreamBacklog and resumes once the client
// has taken what is queued, so memory stays bounded and the service is held back by TCP. A
// client that takes nothing for idle_timeout while reading is paused is treated as gone (499):
// else a stopped client process with its socket open would hold the lease, and so the
// service, for ever.
#include <spdlog/spdlog.h>

#include <set>

#include "api/http_context.hpp"
#include "api/json_view.hpp"
#include "api/validate.hpp"

namespace gpumod::api {

using nlohmann::json;

namespace {

// Bytes queued for a streaming client above which reading from the service pauses.
constexpr std::size_t kStreamBacklog = std::size_t{256} * 1024;
// The code counted in gpumod_proxy_requests_total for a call whose client left before the
// answer was complete (nginx's convention; it never goes on the wire).
constexpr int kClientGone = 499;

// Releases the scheduler lease exactly once.
class LeaseGuard {
 public:
  LeaseGuard(std::shared_ptr<Control> control, std::optional<scheduler::LeaseId> lease)
      : control_(std::move(control)), lease_(lease) {}
  ~LeaseGuard() { release(); }
  LeaseGuard(const LeaseGuard&) = delete;
  LeaseGuard& operator=(const LeaseGuard&) = delete;
  void release() {
    if (lease_) control_->release_lease(*lease_);
    lease_.reset();
  }

 private:
  std::shared_ptr<Control> control_;
  std::optional<scheduler::LeaseId> lease_;
};

// One proxied call from the moment its model is ready: the call to the service and the answer
// to the client. It keeps itself alive through the callbacks it gives the upstream call and the
// responder (a cycle on purpose), which both drop them when the call ends or the client goes.
class Exchange : public std::enable_shared_from_this<Exchange> {
 public:
  Exchange(Context& ctx, std::shared_ptr<http::Responder> client, std::unique_ptr<LeaseGuard> lease,
           std::string service, std::string endpoint, bool stream)
      : ctx_(ctx),
        client_(std::move(client)),
        lease_(std::move(lease)),
        service_(std::move(service)),
        endpoint_(std::move(endpoint)),
        path_(client_->request().path),
        stream_(stream) {}

  void start(UpstreamCall::Request request) {
    auto self = shared_from_this();
    client_->on_gone([self] { self->client_gone(); });
    UpstreamCall::Events events;
    events.head = [self](const http::ResponseHead& head) { self->on_head(head); };
    events.body = [self](std::string& data) { self->on_body(data); };
    events.end = [self](UpstreamFailure failure, const std::string& detail) {
      self->on_end(failure, detail);
    };
    UpstreamCall::Timeouts timeouts;
    timeouts.connect = ctx_.options.upstream_connect_timeout;
    timeouts.read = ctx_.options.upstream_read_timeout;
    call_ = UpstreamCall::start(*ctx_.upstreams, std::move(request), timeouts, std::move(events));
  }

 private:
  void on_head(const http::ResponseHead& head) {
    status_ = head.status;
    content_type_ = head.headers.get("Content-Type");
    if (!stream_) return;
    HttpResponse& res = client_->response();
    res.status = head.status;
    res.content_type = content_type_.empty() ? "text/event-stream" : content_type_;
    client_->start_stream();
    streaming_ = true;
  }

  void on_body(std::string& data) {
    if (!stream_) {
      body_ += data;
      return;
    }
    client_->write(data);
    if (!paused_ && client_->backlog() > kStreamBacklog) {
      paused_ = true;
      call_->pause();
      auto self = shared_from_this();
      http::Reactor& reactor = client_->reactor();
      stall_timer_ = reactor.call_at(std::chrono::steady_clock::now() + ctx_.options.idle_timeout,
                                     [self] { self->client_stalled(); });
      client_->notify_when_drained([self] {
        self->paused_ = false;
        if (self->stall_timer_ != 0) self->client_->reactor().cancel_call(self->stall_timer_);
        self->stall_timer_ = 0;
        if (self->call_) self->call_->resume();
      });
    }
  }

  void client_stalled() {
    stall_timer_ = 0;
    if (!paused_ || !call_) return;
    spdlog::warn("proxy: the client of {} took nothing of the stream from '{}' for {} ms; dropping it", path_,
                 service_, ctx_.options.idle_timeout.count());
    auto self = shared_from_this();
    call_->cancel();
    client_->finish(false);
    ctx_.control->count_proxied_request(service_, path_, kClientGone);
    end();
  }

  void on_end(UpstreamFailure failure, const std::string& detail) {
    auto self = shared_from_this();
    int counted = status_;
    if (failure == UpstreamFailure::none) {
      if (streaming_) {
        client_->finish(true);
      } else {
        HttpResponse& res = client_->response();
        res.status = status_;
        res.set_content(std::move(body_), content_type_.empty() ? "application/json" : content_type_);
        client_->send();
      }
    } else if (streaming_) {
      spdlog::info("proxy: stream from '{}' ended early: {} ({})", service_, http::to_string(failure),
                   detail);
      client_->finish(false);  // the client sees a truncated stream
    } else {
      auto [code, message] = failure_answer(failure, detail);
      counted = code;
      send_error(client_->response(), code, message);
      client_->send();
    }
    ctx_.control->count_proxied_request(service_, path_, counted);
    end();
  }

  void client_gone() {
    auto self = shared_from_this();
    spdlog::info("proxy: the client of {} {} went away; ending the call to '{}'", client_->request().method,
                 path_, service_);
    if (call_) call_->cancel();
    ctx_.control->count_proxied_request(service_, path_, kClientGone);
    end();
  }

  void end() {
    lease_->release();
    call_.reset();
    if (stall_timer_ != 0) client_->reactor().cancel_call(stall_timer_);
    stall_timer_ = 0;
    client_->on_gone(nullptr);
  }

  // The answer for a failed call: 504 when the service went silent, else 502.
  std::pair<int, std::string> failure_answer(UpstreamFailure failure, const std::string& detail) const {
    const std::string who = "service '" + service_ + "' at " + endpoint_;
    switch (failure) {
      case UpstreamFailure::read_timeout:
        return {504, who + " did not answer in time (" + detail + "; upstream_read_timeout " +
                         std::to_string(ctx_.options.upstream_read_timeout.count()) + " ms)"};
      case UpstreamFailure::connect:
      case UpstreamFailure::connect_timeout:
        return {502, "cannot connect to " + who + " (" + detail +
                         "); it may have just exited: check GET /services/" + service_};
      default:
        return {502, who + " failed while answering (" + std::string(http::to_string(failure)) + ": " +
                         detail + ")"};
    }
  }

  Context& ctx_;
  std::shared_ptr<http::Responder> client_;
  std::unique_ptr<LeaseGuard> lease_;
  std::string service_;
  std::string endpoint_;
  std::string path_;
  bool stream_;
  std::shared_ptr<UpstreamCall> call_;
  int status_ = 0;
  std::string content_type_;
  std::string body_;
  bool streaming_ = false;
  bool paused_ = false;
  http::Reactor::Id stall_timer_ = 0;  // while paused: the client's time to take something
};

class Proxy {
 public:
  explicit Proxy(Context& ctx) : ctx_(ctx) {}

  void models(HttpResponse& res) const {
    auto cfg = ctx_.control->config();
    auto snap = ctx_.control->snapshot();
    json data = json::array();
    std::set<std::string> seen;
    if (cfg) {
      for (const auto& p : cfg->presets) {
        std::string state = "stopped";
        if (snap) {
          for (const auto& s : snap->services) {
            if (s.id == p.id) state = policy::to_string(s.state);
          }
        }
        auto add = [&](const std::string& name, const char* kind) {
          if (name.empty() || !seen.insert(name).second) return;
          data.push_back(json{{"id", name},
                              {"object", "model"},
                              {"created", 0},
                              {"owned_by", "gpumod"},
                              {"gpumod", {{"service", p.id}, {"state", state}, {"name_kind", kind}}}});
        };
        add(p.id, "service");
        add(p.model_id, "model_id");
        for (const auto& a : p.aliases) add(a, "alias");
        for (const auto& m : p.models) add(m, "router_model");
      }
    }
    send_json(res, 200, json{{"object", "list"}, {"data", data}});
  }

  // On the loop thread: parse, check and submit, then answer asynchronously (see the top of
  // this file).
  void start(HttpRequest& req, HttpResponse& res) {
    using Later = LaterAnswer<std::shared_future<scheduler::RequestOutcome>>;
    auto later = Later::make(ctx_.poster);
    auto p = prepare(req, res, later->notify());
    if (!p) return;
    if (p->ticket.outcome.wait_for(std::chrono::seconds(0)) == std::future_status::ready) {
      // The model is ready (the lease gate's answer): no wait, no timer.
      res.async = [this, p](const std::shared_ptr<http::Responder>& client) {
        forward(*p, p->ticket.outcome.get(), client);
      };
      return;
    }
    later->future = p->ticket.outcome;
    later->park(
        res, request_budget(ctx_, std::nullopt),
        [this, p](std::shared_future<scheduler::RequestOutcome>& outcome,
                  const std::shared_ptr<http::Responder>& client) { forward(*p, outcome.get(), client); },
        [this, p](const std::shared_ptr<http::Responder>& client, bool stopping) {
          withdraw(p);
          if (stopping) {
            send_error(client->response(), 503, "gpumod is shutting down", 5);
          } else {
            send_error(client->response(), 504, "model '" + p->model + "' did not become ready in time");
          }
          client->send();
        },
        // A client that leaves while its model loads withdraws its request.
        [this, p] { withdraw(p); });
  }

 private:
  // A submitted /v1 call until forward() takes its outcome over. Whoever lets go of it last (the
  // loop, or the answer to a withdrawal, on the scheduler thread) gives back a lease the
  // scheduler granted that forward() never took: the client left, or the wait timed out and the
  // cancel came after the grant.
  struct Pending {
    Pending() = default;
    Pending(Pending&&) = default;
    Pending& operator=(Pending&&) = delete;
    Pending(const Pending&) = delete;
    Pending& operator=(const Pending&) = delete;
    ~Pending() {
      if (taken || !control || !ticket.outcome.valid() ||
          ticket.outcome.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
        return;
      }
      if (const auto lease = ticket.outcome.get().lease) control->release_lease(*lease);
    }

    json body;
    std::string model;
    std::shared_ptr<const config::Config> cfg;  // keeps `preset` alive
    const config::Preset* preset = nullptr;
    bool stream = false;
    std::shared_ptr<Control> control;
    scheduler::RequestTicket ticket;
    bool taken = false;  // forward() has the outcome (and any lease)
  };

  // Parses and checks the body and submits the request; answers (and returns nothing) when the
  // body is refused.
  std::shared_ptr<Pending> prepare(const HttpRequest& req, HttpResponse& res, scheduler::Notify on_decided) {
    auto pending = std::make_shared<Pending>();
    Pending& p = *pending;
    auto parsed = parse_json_body(req.body);
    if (!parsed) {
      send_error(res, 400, parsed.error());
      return nullptr;
    }
    p.body = std::move(*parsed);
    json& body = p.body;
    if (!body.is_object() || !body.contains("model") || !body["model"].is_string()) {
      send_error(res, 400, "the request body must be a JSON object with a string field 'model'");
      return nullptr;
    }
    p.model = body["model"].get<std::string>();
    const std::string& model = p.model;
    if (auto problem = name_problem("field 'model'", model); !problem.empty()) {
      send_error(res, 400, problem);
      return nullptr;
    }
    p.cfg = ctx_.control->config();
    p.preset = p.cfg ? p.cfg->resolve_model(model) : nullptr;
    if (p.preset == nullptr) {
      send_error(res, 404, "unknown model '" + model + "'; GET /v1/models lists the models gpumod serves");
      return nullptr;
    }
    p.stream = body.contains("stream") && body["stream"].is_boolean() && body["stream"].get<bool>();

    scheduler::RequestSpec spec;
    spec.model = model;
    spec.hold_lease = true;
    spec.request_id = request_id_of(res);
    p.control = ctx_.control;
    p.ticket = ctx_.control->submit(std::move(spec), std::move(on_decided), nullptr);
    return pending;
  }

  // Withdraws the request; the answer to the cancel holds `p` until the scheduler has decided,
  // so a lease granted before the cancel landed goes back then (~Pending).
  void withdraw(const std::shared_ptr<Pending>& p) {
    (void)ctx_.control->cancel(p->ticket.request_id, [p] {});
  }

  // The model's request was answered: forward the call, or pass the refusal on.
  void forward(Pending& p, const scheduler::RequestOutcome& outcome,
               const std::shared_ptr<http::Responder>& client) {
    p.taken = true;
    auto lease = std::make_unique<LeaseGuard>(ctx_.control, outcome.lease);
    HttpResponse& res = client->response();
    if (outcome.status != scheduler::RequestStatus::ready) {
      send_error(res, http_status(outcome.refusal, 503),
                 outcome.message.empty() ? "model '" + p.model + "' is not available" : outcome.message,
                 outcome.retry_after_seconds);
      client->send();
      return;
    }
    auto address = parse_endpoint(outcome.endpoint);
    if (!address) {
      send_error(res, 502, "service '" + outcome.service + "': " + address.error());
      client->send();
      return;
    }
    const HttpRequest& req = client->request();
    UpstreamCall::Request up;
    up.address = std::move(*address);
    up.path = req.path;
    up.body = rewrite_model(p.body, p.model, *p.preset) ? to_wire(p.body) : req.body;
    up.headers.add("Content-Type", "application/json");
    up.headers.add(kRequestIdHeader, request_id_of(res));
    if (req.has_header("Accept")) up.headers.add("Accept", req.header("Accept"));
    auto exchange = std::make_shared<Exchange>(ctx_, client, std::move(lease), outcome.service,
                                               outcome.endpoint, p.stream);
    exchange->start(std::move(up));
  }

  // A single-model server knows its model by model_id, not by gpumod's service id or alias.
  static bool rewrite_model(json& body, const std::string& model, const config::Preset& preset) {
    if (preset.model_id.empty() || model == preset.model_id) return false;
    if (std::find(preset.models.begin(), preset.models.end(), model) != preset.models.end()) return false;
    body["model"] = preset.model_id;
    return true;
  }

  Context& ctx_;
};

}  // namespace

void register_proxy_routes(http::HttpServer& server, Context& ctx) {
  auto proxy = std::make_shared<Proxy>(ctx);
  server.route("GET", "/v1/models", http::HandlerKind::inline_,
               [proxy](HttpRequest&, HttpResponse& res) { proxy->models(res); });
  for (const char* path : {"/v1/chat/completions", "/v1/completions", "/v1/embeddings"}) {
    server.route("POST", path, http::HandlerKind::inline_,
                 [proxy](HttpRequest& req, HttpResponse& res) { proxy->start(req, res); });
  }
}

}  // namespace gpumod::api
