// HttpServer, parked answers: a connection whose handler answers later through a Responder
// (http/async.hpp), streamed or whole; no request is read from it meanwhile (server_loop.hpp lists
// the parts).
#include "http/server_loop.hpp"

#include <spdlog/spdlog.h>

namespace gpumod::http {

// ---------------------------------------------------------------- parked answers
// The Responder of a parked connection. Lives while the connection is parked (the connection
// holds it) and while the handler keeps it; `conn` is null once the answer is finished or the
// client is gone, which turns every call into a no-op.
class HttpServer::Loop::Parked final : public Responder, public std::enable_shared_from_this<Parked> {
 public:
  Parked(Loop& loop, Connection& c, HttpRequest req, HttpResponse res, bool keep_alive)
      : loop_(loop), conn_(&c), req_(std::move(req)), res_(std::move(res)), keep_alive_(keep_alive) {}

  [[nodiscard]] const HttpRequest& request() const override { return req_; }
  HttpResponse& response() override { return res_; }
  Reactor& reactor() override { return loop_; }
  [[nodiscard]] bool open() const override { return conn_ != nullptr && !loop_.server.stopping(); }

  void send() override {
    if (!open() || streaming_) return;
    Connection& c = *conn_;
    if (!keep_alive_) c.close_after_write = true;
    res_.stream = nullptr;
    serialize(res_, Framing::length, !c.close_after_write, req_, c.out);
    end();
  }

  void start_stream() override {
    if (!open() || streaming_) return;
    streaming_ = true;
    res_.stream = nullptr;
    // An HTTP/1.0 client learns where the body ends from the close.
    keep_alive_ = keep_alive_ && !req_.http10;
    serialize(res_, Framing::chunked, keep_alive_, req_, conn_->out);
    body_allowed_ = has_body(req_, res_.status);
    loop_.mark_dirty(*conn_);
  }

  bool write(std::string_view data) override {
    if (!open() || !streaming_) return false;
    if (data.empty() || !body_allowed_) return true;  // a HEAD or bodiless answer drops it
    append_chunk(data, req_.http10, conn_->out);
    loop_.mark_dirty(*conn_);
    return true;
  }

  [[nodiscard]] std::size_t backlog() const override {
    return conn_ != nullptr ? conn_->pending_output() : 0;
  }

  void notify_when_drained(Callback callback) override {
    if (conn_ == nullptr) return;
    drained_ = std::move(callback);
    loop_.mark_dirty(*conn_);
  }

  void finish(bool complete) override {
    if (conn_ == nullptr) return;
    Connection& c = *conn_;
    if (streaming_ && complete && !req_.http10 && body_allowed_) c.out += "0\r\n\r\n";
    if (!complete || !keep_alive_ || loop_.server.stopping()) c.close_after_write = true;
    end();
  }

  void on_gone(Callback callback) override { gone_ = std::move(callback); }

  // The loop: the connection is closing (client gone, server stopping) before the end.
  void connection_lost() {
    if (conn_ == nullptr) return;
    conn_ = nullptr;
    drained_ = nullptr;
    loop_.log_answer(req_, res_);
    auto gone = std::move(gone_);
    gone_ = nullptr;
    if (gone) gone();
  }

  // The loop: after a flush, everything queued went out.
  void drained() {
    if (!drained_) return;
    auto callback = std::move(drained_);
    drained_ = nullptr;
    callback();
  }

 private:
  // The answer is complete (or abandoned): log it and give the connection back to the loop.
  void end() {
    auto self = shared_from_this();  // the connection may hold the last reference
    Connection& c = *conn_;
    conn_ = nullptr;
    gone_ = nullptr;
    drained_ = nullptr;
    loop_.log_answer(req_, res_);
    c.parked.reset();
    loop_.mark_dirty(c);
  }

  Loop& loop_;
  Connection* conn_;
  HttpRequest req_;
  HttpResponse res_;
  bool keep_alive_;
  bool streaming_ = false;
  bool body_allowed_ = true;  // false for a HEAD or a 1xx/204/304 stream: chunks are dropped
  Callback drained_;
  Callback gone_;
};

void HttpServer::Loop::park(Connection& c, HttpRequest req, HttpResponse res, bool keep_alive) {
  auto async = std::move(res.async);
  res.async = nullptr;
  auto parked = std::make_shared<Parked>(*this, c, std::move(req), std::move(res), keep_alive);
  c.parked = parked;
  try {
    async(parked);
  } catch (const std::exception& e) {
    spdlog::error("http: async handler for {} threw: {}", parked->request().path, e.what());
    if (parked->open()) {
      HttpResponse& out = parked->response();
      out.body = e.what();
      fill_error(parked->request(), out, 500);
      parked->send();
      parked->finish(false);  // if it had begun streaming
    }
  }
}

void HttpServer::Loop::service_parked(Connection& c, Clock::time_point now) {
  flush(c, now);
  if (c.closed) return;
  // The client hung up while waiting for its answer. A half-close counts too: like nginx, a
  // proxy cannot tell it from a client that gave up, and holding a model server busy for a
  // caller that is gone is the worse mistake.
  if (c.hangup_seen) {
    close_connection(c);
    return;
  }
  if (c.pending_output() == 0) {
    auto parked = std::static_pointer_cast<Parked>(c.parked);
    parked->drained();
  }
}

void HttpServer::Loop::lose_parked(Connection& c) {
  auto parked = std::static_pointer_cast<Parked>(std::move(c.parked));
  c.parked.reset();
  parked->connection_lost();
}

}  // namespace gpumod::http
