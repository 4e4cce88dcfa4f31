// The OpenAI-compatible proxy under /v1: route by the body's `model`, get the model ready
// through the admission queue while holding a lease, forward the call to the service and pass
// its answer back (SSE chunk by chunk when "stream": true). The lease is released when the
// upstream call ends or the client goes away.
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

std::unique_ptr<httplib::Client> make_client(const Context& ctx, const std::string& endpoint) {
  auto client = std::make_unique<httplib::Client>(endpoint);
  client->set_connection_timeout(ctx.options.upstream_connect_timeout);
  client->set_read_timeout(ctx.options.upstream_read_timeout);
  client->set_write_timeout(ctx.options.upstream_read_timeout);
  client->set_keep_alive(false);
  client->set_tcp_nodelay(true);  // no Nagle delay on the small request bodies
  return client;
}

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

// State shared by the upstream reader thread and the chunked content provider.
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
      : ctx_(ctx), up_(std::move(up)), lease_(std::move(lease)), client_(make_client(ctx, up_.endpoint)) {}
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

  // One call of httplib's chunked content provider: pass on what has arrived.
  bool provide(httplib::DataSink& sink) {
    std::unique_lock lock(pipe_.mutex);
    for (;;) {
      if (!pipe_.chunks.empty()) {
        std::string data;
        while (!pipe_.chunks.empty()) {
          data += pipe_.chunks.front();
          pipe_.chunks.pop_front();
        }
        lock.unlock();
        if (!sink.write(data.data(), data.size())) {
          cancel("the client went away");
          return false;
        }
        return true;
      }
      if (pipe_.finished) {
        lock.unlock();
        sink.done();
        return true;
      }
      if (ctx_.stopping.load()) {
        lock.unlock();
        cancel("gpumod is shutting down");
        return false;
      }
      pipe_.cv.wait_for(lock, milliseconds(100));
      if (pipe_.chunks.empty() && !pipe_.finished && !sink.is_writable()) {
        lock.unlock();
        cancel("the client went away");
        return false;
      }
    }
  }

  // Stops the upstream call if it still runs, joins the reader, releases the lease.
  void finish() {
    {
      std::lock_guard lock(pipe_.mutex);
      if (!pipe_.finished) pipe_.cancelled = true;
    }
    if (thread_.joinable()) {
      client_->stop();
      thread_.join();
    }
    lease_->release();
  }

  [[nodiscard]] const Upstream& upstream() const { return up_; }

 private:
  void cancel(const char* why) {
    spdlog::info("proxy: stream from '{}' ended early: {}", up_.service, why);
    std::lock_guard lock(pipe_.mutex);
    pipe_.cancelled = true;
  }

  void read_upstream() {
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
    const auto started = std::chrono::steady_clock::now();
    auto result = [&] {
      ActiveClient registered(ctx_, client_.get());
      if (ctx_.stopping.load()) return httplib::Result(nullptr, httplib::Error::Canceled);
      return client_->send(req);
    }();
    std::lock_guard lock(pipe_.mutex);
    if (!result) {
      pipe_.error = result.error();
      pipe_.elapsed = std::chrono::steady_clock::now() - started;
    }
    pipe_.finished = true;
    pipe_.headers_ready = true;
    pipe_.cv.notify_all();
  }

  Context& ctx_;
  Upstream up_;
  std::shared_ptr<LeaseGuard> lease_;
  std::unique_ptr<httplib::Client> client_;
  StreamPipe pipe_;
  std::thread thread_;
};

class Proxy {
 public:
  explicit Proxy(Context& ctx) : ctx_(ctx) {}

  void models(httplib::Response& res) const {
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

  void forward(const httplib::Request& req, httplib::Response& res) {
    if (reject_oversized_body(ctx_, req, res)) return;
    json body;
    try {
      body = json::parse(req.body);
    } catch (const json::parse_error& e) {
      send_error(res, 400, std::string("the request body is not valid JSON: ") + e.what());
      return;
    }
    if (!body.is_object() || !body.contains("model") || !body["model"].is_string()) {
      send_error(res, 400, "the request body must be a JSON object with a string field 'model'");
      return;
    }
    const std::string model = body["model"].get<std::string>();
    if (auto problem = name_problem("field 'model'", model); !problem.empty()) {
      send_error(res, 400, problem);
      return;
    }
    auto cfg = ctx_.control->config();
    const config::Preset* preset = cfg ? find_preset_for_model(*cfg, model) : nullptr;
    if (preset == nullptr) {
      send_error(res, 404, "unknown model '" + model + "'; GET /v1/models lists the models gpumod serves");
      return;
    }
    const bool stream = body.contains("stream") && body["stream"].is_boolean() && body["stream"].get<bool>();

    scheduler::RequestSpec spec;
    spec.model = model;
    spec.hold_lease = true;
    spec.request_id = request_id_of(res);
    auto ticket = ctx_.control->submit(std::move(spec));
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
    if (req.has_header("Accept")) up.headers.emplace("Accept", req.get_header_value("Accept"));

    if (stream) {
      forward_stream(std::move(up), std::move(lease), res);
    } else {
      forward_plain(up, res);
      lease->release();
    }
  }

 private:
  // A single-model server knows its model by model_id, not by gpumod's service id or alias.
  static bool rewrite_model(json& body, const std::string& model, const config::Preset& preset) {
    if (preset.model_id.empty() || model == preset.model_id) return false;
    if (std::find(preset.models.begin(), preset.models.end(), model) != preset.models.end()) return false;
    body["model"] = preset.model_id;
    return true;
  }

  void forward_plain(const Upstream& up, httplib::Response& res) {
    auto client = make_client(ctx_, up.endpoint);
    const auto started = std::chrono::steady_clock::now();
    auto result = [&] {
      ActiveClient registered(ctx_, client.get());
      if (ctx_.stopping.load()) return httplib::Result(nullptr, httplib::Error::Canceled);
      return client->Post(up.path, up.headers, up.body, "application/json");
    }();
    if (!result) {
      auto [code, message] =
          upstream_failure(ctx_, up, result.error(), std::chrono::steady_clock::now() - started);
      send_error(res, code, message);
      ctx_.control->count_proxied_request(up.service, up.path, code);
      return;
    }
    res.status = result->status;
    std::string type = result->get_header_value("Content-Type");
    res.set_content(result->body, type.empty() ? "application/json" : type);
    ctx_.control->count_proxied_request(up.service, up.path, result->status);
  }

  void forward_stream(Upstream up, std::shared_ptr<LeaseGuard> lease, httplib::Response& res) {
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
    if (type.empty()) type = "text/event-stream";
    Control* control = ctx_.control.get();
    res.set_chunked_content_provider(
        type, [session](std::size_t, httplib::DataSink& sink) { return session->provide(sink); },
        [session, control](bool) {
          session->finish();
          control->count_proxied_request(session->upstream().service, session->upstream().path,
                                         session->status());
        });
  }

  Context& ctx_;
};

}  // namespace

void register_proxy_routes(httplib::Server& server, Context& ctx) {
  auto proxy = std::make_shared<Proxy>(ctx);
  server.Get("/v1/models", [proxy](const httplib::Request&, httplib::Response& res) { proxy->models(res); });
  for (const char* path : {"/v1/chat/completions", "/v1/completions", "/v1/embeddings"}) {
    server.Post(path,
                [proxy](const httplib::Request& req, httplib::Response& res) { proxy->forward(req, res); });
  }
}

}  // namespace gpumod::api
