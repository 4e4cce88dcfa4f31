// The OpenAI-compatible proxy under /v1: route by the body's `model`, get the model ready
// through the admission queue while holding a lease, forward the call to the service and pass
// its answer back (SSE chunk by chunk when "stream": true). The lease is released when the
// upstream call ends or the client goes away.
//
// Upstream connections come from a small keep-alive pool per endpoint (UpstreamPool in
// http_context.hpp). What is safe about reusing them: httplib checks a pooled socket before
// sending (a socket the service closed while idle reads as EOF and is replaced by a new
// connection), which leaves only the race where the service closes it just as the request
// goes out. Such a call is retried once, on a new connection, only when (a) the connection had
// been used before, (b) the failure is a write error or a read error within the first second,
// and (c) no byte of an answer reached gpumod (for streams: the upstream's status line had not
// arrived, so nothing was passed to the client). A service that read the request and then died
// without answering could in theory see it twice; a dead service refuses the retry's connection
// anyway, so that costs at most one more 502. Read timeouts (504) and answers with any status
// are never retried.
#include <httplib.h>
#include <spdlog/spdlog.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <set>

#include "api/http_context.hpp"
#include "api/json_view.hpp"
#include "api/validate.hpp"

namespace gpumod::api {

using nlohmann::json;
using std::chrono::milliseconds;

UpstreamPool::Lease UpstreamPool::acquire(const std::string& endpoint, bool fresh) {
  if (!fresh) {
    std::lock_guard lock(mutex_);
    auto it = idle_.find(endpoint);
    if (it != idle_.end() && !it->second.empty()) {
      Lease lease{std::move(it->second.back()), true};
      it->second.pop_back();
      return lease;
    }
  }
  auto client = std::make_unique<httplib::Client>(endpoint);
  client->set_connection_timeout(connect_timeout_);
  client->set_read_timeout(read_timeout_);
  client->set_write_timeout(read_timeout_);
  client->set_keep_alive(true);
  client->set_tcp_nodelay(true);  // no Nagle delay on the small request bodies
  return Lease{std::move(client), false};
}

void UpstreamPool::release(const std::string& endpoint, std::unique_ptr<httplib::Client> client) {
  if (!client) return;
  std::lock_guard lock(mutex_);
  auto& idle = idle_[endpoint];
  if (idle.size() < kMaxIdlePerEndpoint) idle.push_back(std::move(client));
}

void UpstreamPool::clear() {
  std::lock_guard lock(mutex_);
  idle_.clear();
}

namespace {

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

struct Upstream {
  std::string service;
  std::string endpoint;  // "http://127.0.0.1:PORT"
  std::string path;
  std::string body;
  httplib::Headers headers;
};

// An upstream failure as (status, message): 504 when it ran into the read timeout, else 502.
std::pair<int, std::string> upstream_failure(const Context& ctx, const Upstream& up, httplib::Error error,
                                             std::chrono::steady_clock::duration elapsed) {
  const auto timeout = ctx.options.upstream_read_timeout;
  if (error == httplib::Error::Read && elapsed >= timeout - timeout / 10) {
    return {504, "service '" + up.service + "' at " + up.endpoint + " did not answer within " +
                     std::to_string(timeout.count()) + " ms"};
  }
  if (error == httplib::Error::Connection || error == httplib::Error::ConnectionTimeout) {
    return {502, "cannot connect to service '" + up.service + "' at " + up.endpoint + " (" +
                     httplib::to_string(error) + "); it may have just exited: check GET /services/" +
                     up.service};
  }
  return {502, "service '" + up.service + "' at " + up.endpoint + " failed while answering (" +
                   httplib::to_string(error) + ")"};
}

// Whether a failed call on a pooled connection may be sent again on a new one (see the top of
// this file).
bool worth_a_retry(bool reused, httplib::Error error, std::chrono::steady_clock::duration elapsed) {
  if (!reused) return false;
  if (error == httplib::Error::Write) return true;
  return error == httplib::Error::Read && elapsed < std::chrono::seconds(1);
}

// State shared by the upstream reader thread and the relay to the client.
struct StreamPipe {
  std::mutex mutex;
  std::condition_variable cv;
  std::deque<std::string> chunks;
  bool headers_ready = false;
  bool finished = false;
  bool cancelled = false;
  int status = 0;
  std::string content_type;
  httplib::Error error = httplib::Error::Success;
  std::chrono::steady_clock::duration elapsed{};
};

class StreamSession {
 public:
  StreamSession(Context& ctx, Upstream up, std::shared_ptr<LeaseGuard> lease)
      : ctx_(ctx), up_(std::move(up)), lease_(std::move(lease)) {
    auto pooled = ctx_.upstreams->acquire(up_.endpoint);
    client_ = std::move(pooled.client);
    reused_ = pooled.reused;
  }
  ~StreamSession() { finish(); }
  StreamSession(const StreamSession&) = delete;
  StreamSession& operator=(const StreamSession&) = delete;

  void start() {
    thread_ = std::thread([this] { read_upstream(); });
  }

  // Waits for the upstream's status line and headers (or its failure).
  bool wait_headers() {
    std::unique_lock lock(pipe_.mutex);
    const auto deadline = std::chrono::steady_clock::now() + ctx_.options.upstream_connect_timeout +
                          ctx_.options.upstream_read_timeout + std::chrono::seconds(1);
    while (!pipe_.headers_ready) {
      if (ctx_.stopping.load()) return false;
      const auto now = std::chrono::steady_clock::now();
      if (now >= deadline) return false;
      pipe_.cv.wait_until(lock, std::min(deadline, now + milliseconds(100)));
    }
    return true;
  }

  [[nodiscard]] int status() {
    std::lock_guard lock(pipe_.mutex);
    return pipe_.status;
  }
  [[nodiscard]] std::string content_type() {
    std::lock_guard lock(pipe_.mutex);
    return pipe_.content_type;
  }
  [[nodiscard]] std::pair<int, std::string> failure() {
    std::lock_guard lock(pipe_.mutex);
    return upstream_failure(ctx_, up_, pipe_.error, pipe_.elapsed);
  }

  // The streaming response's producer: passes chunks on as they arrive, then ends the call.
  bool relay(http::StreamSink& sink) {
    const bool complete = pump(sink);
    finish();
    ctx_.control->count_proxied_request(up_.service, up_.path, status());
    return complete;
  }

  // Stops the upstream call if it still runs, joins the reader, releases the lease, and puts a
  // cleanly finished connection back into the pool.
  void finish() {
    httplib::Client* running = nullptr;
    {
      std::lock_guard lock(pipe_.mutex);
      if (!pipe_.finished) pipe_.cancelled = true;
      running = client_.get();
    }
    if (thread_.joinable()) {
      if (running != nullptr) running->stop();
      thread_.join();
    }
    bool clean = false;
    {
      std::lock_guard lock(pipe_.mutex);
      clean = pipe_.finished && !pipe_.cancelled && pipe_.error == httplib::Error::Success;
    }
    if (clean && client_) ctx_.upstreams->release(up_.endpoint, std::move(client_));
    client_.reset();
    lease_->release();
  }

  [[nodiscard]] const Upstream& upstream() const { return up_; }

 private:
  bool pump(http::StreamSink& sink) {
    std::unique_lock lock(pipe_.mutex);
    for (;;) {
      if (!pipe_.chunks.empty()) {
        std::string data;
        while (!pipe_.chunks.empty()) {
          data += pipe_.chunks.front();
          pipe_.chunks.pop_front();
        }
        lock.unlock();
        if (!sink.write(data)) {
          cancel("the client went away");
          return false;
        }
        lock.lock();
        continue;
      }
      if (pipe_.finished) return pipe_.error == httplib::Error::Success;
      if (ctx_.stopping.load()) {
        lock.unlock();
        cancel("gpumod is shutting down");
        return false;
      }
      pipe_.cv.wait_for(lock, milliseconds(100));
      if (pipe_.chunks.empty() && !pipe_.finished) {
        lock.unlock();
        const bool gone = sink.cancelled();
        if (gone) {
          cancel("the client went away");
          return false;
        }
        lock.lock();
      }
    }
  }

  void cancel(const char* why) {
    spdlog::info("proxy: stream from '{}' ended early: {}", up_.service, why);
    std::lock_guard lock(pipe_.mutex);
    pipe_.cancelled = true;
  }

  void read_upstream() {
    const auto started = std::chrono::steady_clock::now();
    httplib::Error error = httplib::Error::Success;
    for (int attempt = 0; attempt < 2; ++attempt) {
      httplib::Request req;
      req.method = "POST";
      req.path = up_.path;
      req.headers = up_.headers;
      req.body = up_.body;
      req.response_handler = [this](const httplib::Response& r) {
        std::lock_guard lock(pipe_.mutex);
        pipe_.status = r.status;
        pipe_.content_type = r.get_header_value("Content-Type");
        pipe_.headers_ready = true;
        pipe_.cv.notify_all();
        return !pipe_.cancelled;
      };
      req.content_receiver = [this](const char* data, std::size_t n, std::uint64_t, std::uint64_t) {
        std::lock_guard lock(pipe_.mutex);
        if (pipe_.cancelled) return false;
        pipe_.chunks.emplace_back(data, n);
        pipe_.cv.notify_all();
        return true;
      };
      httplib::Client* client = nullptr;
      {
        std::lock_guard lock(pipe_.mutex);
        client = client_.get();
      }
      auto result = [&] {
        ActiveClient registered(ctx_, client);
        if (ctx_.stopping.load()) return httplib::Result(nullptr, httplib::Error::Canceled);
        return client->send(req);
      }();
      if (result) {
        error = httplib::Error::Success;
        break;
      }
      error = result.error();
      std::lock_guard lock(pipe_.mutex);
      if (attempt > 0 || pipe_.headers_ready || pipe_.cancelled ||
          !worth_a_retry(reused_, error, std::chrono::steady_clock::now() - started)) {
        break;
      }
      spdlog::debug("proxy: pooled connection to '{}' failed ({}); retrying on a new one", up_.service,
                    httplib::to_string(error));
      retired_ = std::move(client_);  // finish() may still be calling stop() on it
      client_ = ctx_.upstreams->acquire(up_.endpoint, true).client;
      reused_ = false;
    }
    std::lock_guard lock(pipe_.mutex);
    pipe_.error = error;
    if (error != httplib::Error::Success) pipe_.elapsed = std::chrono::steady_clock::now() - started;
    pipe_.finished = true;
    pipe_.headers_ready = true;
    pipe_.cv.notify_all();
  }

  Context& ctx_;
  Upstream up_;
  std::shared_ptr<LeaseGuard> lease_;
  std::unique_ptr<httplib::Client> client_;
  std::unique_ptr<httplib::Client> retired_;
  bool reused_ = false;
  StreamPipe pipe_;
  std::thread thread_;
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
            if (s.id == p.id) state = name_of(s.state);
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

  // On the loop thread: parse, check and submit (so the scheduler works on the lease while the
  // call travels to a worker); the wait and the upstream call run on the worker. A large body
  // is parsed on the worker too, so it cannot stall the loop.
  void start(HttpRequest& req, HttpResponse& res) {
    if (req.body.size() > kInlineBodyLimit) {
      res.deferred = [this](HttpRequest& r, HttpResponse& out) {
        if (auto pending = prepare(r, out)) complete(std::move(*pending), r, out);
      };
      return;
    }
    auto pending = prepare(req, res);
    if (!pending) return;
    res.deferred = [this, p = std::make_shared<Pending>(std::move(*pending))](
                       HttpRequest& r, HttpResponse& out) { complete(std::move(*p), r, out); };
  }

 private:
  static constexpr std::size_t kInlineBodyLimit = std::size_t{64} * 1024;

  struct Pending {
    json body;
    std::string model;
    std::shared_ptr<const config::Config> cfg;  // keeps `preset` alive
    const config::Preset* preset = nullptr;
    bool stream = false;
    scheduler::RequestTicket ticket;
    bool taken = false;  // a worker went on with it
  };

  static void abandon(Control& control, const scheduler::RequestTicket& ticket) {
    if (ticket.outcome.valid() &&
        ticket.outcome.wait_for(std::chrono::seconds(0)) == std::future_status::ready) {
      if (const auto lease = ticket.outcome.get().lease) control.release_lease(*lease);
      return;
    }
    (void)control.cancel(ticket.request_id);
  }

  // Parses and checks the body and submits the request; answers (and returns nothing) when the
  // body is refused.
  std::optional<Pending> prepare(const HttpRequest& req, HttpResponse& res) {
    Pending p;
    try {
      p.body = json::parse(req.body);
    } catch (const json::parse_error& e) {
      send_error(res, 400, std::string("the request body is not valid JSON: ") + e.what());
      return std::nullopt;
    }
    json& body = p.body;
    if (!body.is_object() || !body.contains("model") || !body["model"].is_string()) {
      send_error(res, 400, "the request body must be a JSON object with a string field 'model'");
      return std::nullopt;
    }
    p.model = body["model"].get<std::string>();
    const std::string& model = p.model;
    if (auto problem = name_problem("field 'model'", model); !problem.empty()) {
      send_error(res, 400, problem);
      return std::nullopt;
    }
    p.cfg = ctx_.control->config();
    p.preset = p.cfg ? find_preset_for_model(*p.cfg, model) : nullptr;
    if (p.preset == nullptr) {
      send_error(res, 404, "unknown model '" + model + "'; GET /v1/models lists the models gpumod serves");
      return std::nullopt;
    }
    p.stream = body.contains("stream") && body["stream"].is_boolean() && body["stream"].get<bool>();

    scheduler::RequestSpec spec;
    spec.model = model;
    spec.hold_lease = true;
    spec.request_id = request_id_of(res);
    p.ticket = ctx_.control->submit(std::move(spec));
    return p;
  }

  // On a worker: waits for the model, then forwards the call.
  void complete(Pending p, const HttpRequest& req, HttpResponse& res) {
    json& body = p.body;
    const std::string& model = p.model;
    const config::Preset* preset = p.preset;
    const bool stream = p.stream;
    auto& ticket = p.ticket;
    const auto why = wait_with_deadline(ctx_, ticket.outcome, request_budget(ctx_, std::nullopt));
    if (why != WaitResult::ready) {
      (void)ctx_.control->cancel(ticket.request_id);
      if (why == WaitResult::stopping) {
        send_error(res, 503, "gpumod is shutting down", 5);
      } else {
        send_error(res, 504, "model '" + model + "' did not become ready in time");
      }
      return;
    }
    const auto outcome = ticket.outcome.get();
    auto lease = std::make_shared<LeaseGuard>(ctx_.control, outcome.lease);
    if (outcome.status != scheduler::RequestStatus::ready) {
      send_error(res, outcome.http_status >= 400 ? outcome.http_status : 503,
                 outcome.message.empty() ? "model '" + model + "' is not available" : outcome.message,
                 outcome.retry_after_seconds);
      return;
    }

    Upstream up;
    up.service = outcome.service;
    up.endpoint = outcome.endpoint;
    up.path = req.path;
    up.body = rewrite_model(body, model, *preset) ? body.dump() : req.body;
    up.headers = {{"Content-Type", "application/json"}, {kRequestIdHeader, request_id_of(res)}};
    if (req.has_header("Accept")) up.headers.emplace("Accept", req.header("Accept"));

    if (stream) {
      forward_stream(std::move(up), std::move(lease), res);
    } else {
      forward_plain(up, res);
      lease->release();
    }
  }

  // A single-model server knows its model by model_id, not by gpumod's service id or alias.
  static bool rewrite_model(json& body, const std::string& model, const config::Preset& preset) {
    if (preset.model_id.empty() || model == preset.model_id) return false;
    if (std::find(preset.models.begin(), preset.models.end(), model) != preset.models.end()) return false;
    body["model"] = preset.model_id;
    return true;
  }

  void forward_plain(const Upstream& up, HttpResponse& res) {
    const auto started = std::chrono::steady_clock::now();
    auto pooled = ctx_.upstreams->acquire(up.endpoint);
    auto call = [&](httplib::Client& client) {
      ActiveClient registered(ctx_, &client);
      if (ctx_.stopping.load()) return httplib::Result(nullptr, httplib::Error::Canceled);
      return client.Post(up.path, up.headers, up.body, "application/json");
    };
    auto result = call(*pooled.client);
    if (!result && worth_a_retry(pooled.reused, result.error(), std::chrono::steady_clock::now() - started)) {
      spdlog::debug("proxy: pooled connection to '{}' failed ({}); retrying on a new one", up.service,
                    httplib::to_string(result.error()));
      pooled = ctx_.upstreams->acquire(up.endpoint, true);
      result = call(*pooled.client);
    }
    if (!result) {
      auto [code, message] =
          upstream_failure(ctx_, up, result.error(), std::chrono::steady_clock::now() - started);
      send_error(res, code, message);
      ctx_.control->count_proxied_request(up.service, up.path, code);
      return;
    }
    res.status = result->status;
    std::string type = result->get_header_value("Content-Type");
    res.set_content(std::move(result->body), type.empty() ? "application/json" : type);
    ctx_.control->count_proxied_request(up.service, up.path, result->status);
    ctx_.upstreams->release(up.endpoint, std::move(pooled.client));
  }

  void forward_stream(Upstream up, std::shared_ptr<LeaseGuard> lease, HttpResponse& res) {
    auto session = std::make_shared<StreamSession>(ctx_, std::move(up), std::move(lease));
    session->start();
    const auto& upstream = session->upstream();
    if (!session->wait_headers()) {
      session->finish();
      send_error(res, 504, "service '" + upstream.service + "' did not start answering in time");
      ctx_.control->count_proxied_request(upstream.service, upstream.path, 504);
      return;
    }
    if (session->status() == 0) {  // failed before any response
      auto [code, message] = session->failure();
      session->finish();
      send_error(res, code, message);
      ctx_.control->count_proxied_request(upstream.service, upstream.path, code);
      return;
    }
    res.status = session->status();
    std::string type = session->content_type();
    res.content_type = type.empty() ? "text/event-stream" : type;
    res.stream = [session](http::StreamSink& sink) { return session->relay(sink); };
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
