// gpumod's own HTTP/1.1 server: one epoll loop thread owns every connection; handlers that
// may block run on a worker pool. It replaces cpp-httplib's server, whose thread-per-connection
// model let idle keep-alive clients starve everyone else and capped the fast path well below
// the 30,000 requests/s target (docs/api.md "Why not cpp-httplib's server").
//
// Transport
//   * Non-blocking sockets, edge-triggered epoll, TCP_NODELAY on every accepted socket, listen
//     backlog SOMAXCONN, keep-alive (HTTP/1.1 default; HTTP/1.0 only on "Connection:
//     keep-alive"), "Connection: close", pipelined requests answered in order.
//   * Requests are read by the strict parser (http/request_parser.hpp), which says what it
//     refuses and with which status (400, 413, 431, 501, 505); a refused request is answered
//     with the parser's reason and the connection is closed. Bodies by Content-Length or
//     chunked; neither means an empty body (RFC 9112 6.3: what `curl -X POST URL` sends).
//     "Expect: 100-continue" is answered. A body over max_body_bytes gets 413 as soon as that
//     is known (from Content-Length, before any of the body is read; while de-chunking
//     otherwise). A connection idle (or stuck mid-request, or not reading its answers) for
//     idle_timeout is closed.
//   * Writes use MSG_NOSIGNAL, so a peer that went away never raises SIGPIPE.
//
// Threads and ownership
//   * The loop thread accepts, reads, parses, routes, runs inline handlers and writes their
//     answers (non-blocking, the rest on EPOLLOUT).
//   * A blocking route (or an inline handler that set HttpResponse::deferred, or a streaming
//     response) hands the whole connection to a worker: the loop neither reads nor writes it
//     until the worker gives it back through a queue + eventfd. The worker writes the answer
//     itself (blocking with poll(), so no extra hop back to the loop on the answer's path), then
//     returns the connection; the loop then goes on with requests the client pipelined. So
//     answers stay in order and no thread is held by an idle connection.
//   * An inline handler may also answer later without any thread (HttpResponse::async,
//     http/async.hpp): the connection is parked on the loop, the handler's work goes on as
//     fd and timer callbacks there, and the answer is written by the loop.
//   * A connection is touched by exactly one thread at a time; the hand-offs (pool queue,
//     return queue) are mutex-protected, which orders everything the other side wrote.
//
// Stop: stop() is safe from any thread and returns at once; run() then closes the listening
// socket, lets the workers finish what they run (handlers are expected to watch their own
// shutdown flag), drops queued work, closes every connection and returns.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/result.hpp"
#include "http/async.hpp"
#include "http/message.hpp"

namespace gpumod::http {

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 0;  // 0 => any free port
  int threads = 16;
  std::int64_t max_body_bytes = 8 * 1024 * 1024;
  std::size_t max_line_bytes = 8 * 1024;
  std::size_t max_header_bytes = 64 * 1024;
  std::size_t max_header_count = 100;
  std::chrono::milliseconds idle_timeout{60000};
  // How long a worker waits for a client that does not take its answer (or a stream chunk).
  std::chrono::milliseconds write_timeout{30000};
};

enum class HandlerKind {
  inline_,   // runs on the loop thread: must not block (no waits, no network calls)
  blocking,  // runs on a worker thread
};

using Handler = std::function<void(HttpRequest&, HttpResponse&)>;

class HttpServer {
 public:
  explicit HttpServer(HttpServerOptions options);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Routes, registered before run(). `pattern` is a path whose segments are literals or "{}"
  // (one non-empty segment, captured into HttpRequest::captures): "/services/{}/unit".
  void route(std::string method, const std::string& pattern, HandlerKind kind, Handler handler);

  // Runs first for every parsed request, on the loop thread. Returns true when it answered the
  // request itself (e.g. 401); the route is not run then.
  void set_before(std::function<bool(HttpRequest&, HttpResponse&)> hook);
  // Fills in the body of answers the server makes on its own: 400, 404, 405 (Allow is set),
  // 413, 431, 500 (a handler threw; `res.body` holds what()). `res.status` is set; the request
  // may be partly parsed (method and path can be empty). Runs on the loop or a worker.
  void set_error_filler(std::function<void(const HttpRequest&, HttpResponse&)> filler);
  // Called once per answer, after it was handed to the kernel (or failed), on the thread that
  // wrote it. For streams, when the stream ends.
  void set_logger(std::function<void(const HttpRequest&, const HttpResponse&)> logger);

  // Creates the listening socket. Returns the bound port.
  Result<int> bind();
  // Serves until stop(). Call after a successful bind(), once.
  void run();
  // Safe from any thread, before, during or after run(); returns without waiting.
  void stop();
  [[nodiscard]] bool stopping() const { return stopping_.load(); }
  // The loop as handlers may use it (http/async.hpp), for helpers that outlive one request
  // (the proxy's upstream connection pool). Its loop-thread-only functions work once run() runs.
  Reactor& reactor();

 private:
  struct Loop;
  HttpServerOptions options_;
  std::atomic<bool> stopping_{false};
  std::unique_ptr<Loop> loop_;
};

}  // namespace gpumod::http
