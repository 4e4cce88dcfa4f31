// HttpServer, what the HTTP loop does with a parsed request: error answers, inline answers, routing
// to handlers, and the worker pool for handlers that block (server_loop.hpp lists the parts).
#include "http/server_loop.hpp"

#include <spdlog/spdlog.h>

#include <poll.h>
#include <unistd.h>

#include "http/syntax.hpp"

namespace gpumod::http {

// ---------------------------------------------------------------- errors and answers
void HttpServer::Loop::fill_error(const HttpRequest& req, HttpResponse& res, int status) {
  res.status = status;
  res.stream = nullptr;
  res.deferred = nullptr;
  res.async = nullptr;
  if (error_filler) {
    try {
      error_filler(req, res);
      return;
    } catch (const std::exception& e) {
      spdlog::error("http: error filler threw: {}", e.what());
    }
  }
  res.set_content(std::string(reason_phrase(status)) + "\n", "text/plain; charset=utf-8");
}

void HttpServer::Loop::log_answer(const HttpRequest& req, const HttpResponse& res) {
  if (!logger) return;
  try {
    logger(req, res);
  } catch (const std::exception& e) {
    spdlog::error("http: logger threw: {}", e.what());
  }
}

void HttpServer::Loop::answer_inline(Connection& c, const HttpRequest& req, const HttpResponse& res,
                                     bool keep_alive) {
  if (!keep_alive || server.stopping()) c.close_after_write = true;
  serialize(res, !c.close_after_write, req, c.out);
  log_answer(req, res);
}

void HttpServer::Loop::answer_error_and_close(Connection& c) {
  HttpResponse res;
  res.body = c.parser.error();
  fill_error(c.parser.request(), res, c.parser.status());
  c.close_after_write = true;
  serialize(res, false, c.parser.request(), c.out);
  log_answer(c.parser.request(), res);
  c.parser.reset();
}

bool HttpServer::Loop::process(Connection& c) {
  bool any = false;
  while (!c.in_worker && !c.parked && !c.closed && !c.close_after_write &&
         c.pending_output() < kMaxOutputBacklog) {
    std::string_view rest(c.in.data() + c.in_pos, c.buffered_input());
    const std::size_t before = rest.size();
    const auto result = c.parser.parse(rest);
    c.in_pos += before - rest.size();
    if (result == RequestParser::Result::need_more) {
      if (c.parser.head_complete() && c.parser.expects_continue() && !c.continue_sent &&
          c.buffered_input() == 0 && c.parser.request().body.empty()) {
        c.out += "HTTP/1.1 100 Continue\r\n\r\n";
        c.continue_sent = true;
      }
      break;
    }
    if (result == RequestParser::Result::failed) {
      answer_error_and_close(c);
      return true;
    }
    HttpRequest req = std::move(c.parser.request());
    c.parser.reset();
    c.continue_sent = false;
    req.remote_addr = c.remote_addr;
    dispatch(c, std::move(req));
    any = true;
  }
  if (c.in_pos > 0 && (c.in_pos == c.in.size() || c.in_pos > kReadChunk)) {
    c.in.erase(0, c.in_pos);
    c.in_pos = 0;
  }
  return any;
}

// ---------------------------------------------------------------- routing
void HttpServer::Loop::dispatch(Connection& c, HttpRequest req) {
  HttpResponse res;
  const bool keep_alive = wants_keep_alive(req);
  if (before) {
    bool handled = false;
    try {
      handled = before(req, res);
    } catch (const std::exception& e) {
      res.body = e.what();
      fill_error(req, res, 500);
      handled = true;
    }
    if (handled) {
      answer_inline(c, req, res, keep_alive);
      return;
    }
  }
  const Segments segs = split_path(req.path);
  const Route* found = nullptr;
  std::string allow;
  for (const auto& r : routes) {
    if (!segments_match(r, segs)) continue;
    if (r.method == req.method) {
      found = &r;
      break;
    }
    if (allow.find(r.method) == std::string::npos) {
      if (!allow.empty()) allow += ", ";
      allow += r.method;
    }
  }
  if (found == nullptr) {
    if (!allow.empty()) res.set_header("Allow", allow);
    fill_error(req, res, allow.empty() ? 404 : 405);
    answer_inline(c, req, res, keep_alive);
    return;
  }
  for (std::size_t i = 0; i < segs.count; ++i) {
    if (found->segments[i] == "{}") req.captures.emplace_back(segs.parts[i]);
  }
  if (found->kind == HandlerKind::blocking) {
    to_worker(c, WorkItem{&c, std::move(req), std::move(res), &found->handler, keep_alive, nullptr});
    return;
  }
  try {
    found->handler(req, res);
  } catch (const std::exception& e) {
    res.body = e.what();
    fill_error(req, res, 500);
  }
  if (res.async) {
    park(c, std::move(req), std::move(res), keep_alive);
    return;
  }
  if (res.deferred || res.stream) {
    to_worker(c, WorkItem{&c, std::move(req), std::move(res), nullptr, keep_alive, nullptr});
    return;
  }
  answer_inline(c, req, res, keep_alive);
}

// ---------------------------------------------------------------- workers
void HttpServer::Loop::to_worker(Connection& c, WorkItem item) {
  c.in_worker = true;
  {
    std::lock_guard lock(pool_mutex);
    pool_queue.push_back(std::move(item));
  }
  pool_cv.notify_one();
}

void HttpServer::Loop::worker_main() {
  for (;;) {
    WorkItem item;
    {
      std::unique_lock lock(pool_mutex);
      pool_cv.wait(lock, [this] { return pool_stop || !pool_queue.empty(); });
      if (pool_stop) return;  // what is still queued is dropped by run()
      item = std::move(pool_queue.front());
      pool_queue.pop_front();
    }
    if (item.conn == nullptr) {
      try {
        if (item.task) item.task();
      } catch (const std::exception& e) {
        spdlog::error("http: offloaded task threw: {}", e.what());
      }
      continue;
    }
    serve_in_worker(item);
    Connection* conn = item.conn;
    item = WorkItem{};  // release what the response held before the loop sees the connection
    {
      std::lock_guard lock(returned_mutex);
      returned.push_back(conn);
    }
    const std::uint64_t one = 1;
    (void)!::write(wake_fd, &one, sizeof one);
  }
}

class HttpServer::Loop::SocketSink final : public StreamSink {
 public:
  SocketSink(Connection& c, bool http10, const HttpServerOptions& opts, const std::atomic<bool>& stopping)
      : c_(c), http10_(http10), opts_(opts), stopping_(stopping) {}
  bool write(std::string_view data) override {
    if (failed_ || stopping_.load()) return false;
    if (data.empty()) return true;
    frame_.clear();
    append_chunk(data, http10_, frame_);
    failed_ = !write_all(c_.fd, frame_, opts_.write_timeout, stopping_);
    return !failed_;
  }
  bool cancelled() override {
    if (failed_ || stopping_.load()) return true;
    pollfd p{c_.fd, POLLRDHUP, 0};
    if (::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0) failed_ = true;
    return failed_;
  }
  [[nodiscard]] bool failed() const { return failed_; }

 private:
  Connection& c_;
  bool http10_;
  const HttpServerOptions& opts_;
  const std::atomic<bool>& stopping_;
  std::string frame_;
  bool failed_ = false;
};

void HttpServer::Loop::serve_in_worker(WorkItem& item) {
  Connection& c = *item.conn;
  HttpResponse& res = item.res;
  if (server.stopping()) {
    c.close_after_write = true;
    c.broken = true;
    return;
  }
  auto guarded = [&](const std::function<void()>& fn) {
    try {
      fn();
    } catch (const std::exception& e) {
      res.body = e.what();
      fill_error(item.req, res, 500);
    }
  };
  if (item.handler != nullptr) guarded([&] { (*item.handler)(item.req, res); });
  if (res.deferred) {
    auto deferred = std::move(res.deferred);
    res.deferred = nullptr;
    guarded([&] { deferred(item.req, res); });
  }
  const bool streaming = static_cast<bool>(res.stream);
  bool keep = item.keep_alive && !server.stopping();
  if (streaming && item.req.http10) keep = false;  // the end of the body is the end of the connection
  if (!keep) c.close_after_write = true;
  serialize(res, keep, item.req, c.out);
  const std::string_view pending(c.out.data() + c.out_pos, c.pending_output());
  if (!write_all(c.fd, pending, opts.write_timeout, server.stopping_)) c.broken = true;
  c.out.clear();
  c.out_pos = 0;
  if (streaming && !c.broken && has_body(item.req, res.status)) {
    SocketSink sink(c, item.req.http10, opts, server.stopping_);
    bool complete = false;
    try {
      complete = res.stream(sink);
    } catch (const std::exception& e) {
      spdlog::error("http: stream producer for {} threw: {}", item.req.path, e.what());
    }
    // A complete HTTP/1.1 stream ends with the last chunk; anything else closes the connection.
    const bool ended = complete && !sink.failed() && !item.req.http10 &&
                       write_all(c.fd, "0\r\n\r\n", opts.write_timeout, server.stopping_);
    if (!ended) c.broken = true;
  }
  log_answer(item.req, res);
}

}  // namespace gpumod::http
