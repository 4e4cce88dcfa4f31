// Answering without holding a thread, for handlers whose answer depends on another socket (the
// /v1 proxy's call to a model server). An inline handler sets HttpResponse::async; the server
// then parks the connection (it reads no further request from it, and the idle timeout does
// not apply) and calls `async` on the loop thread with a Responder. The handler's work goes on
// as callbacks on the same loop thread: fd events and timers from the Reactor. So a proxied call
// costs no thread hand-off at all: the request, the upstream exchange and the answer all run
// where the request was read (bench/README.md "HTTP" measured ~0.07 ms per hand-off here).
//
// Everything here is for the loop thread only, except what is marked "any thread".
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string_view>

#include "http/message.hpp"

namespace gpumod::http {

// The server's event loop, as handlers may use it.
class Reactor {
 public:
  using Callback = std::function<void()>;
  using FdCallback = std::function<void(std::uint32_t events)>;
  using TimePoint = std::chrono::steady_clock::time_point;
  using Id = std::uint64_t;

  virtual ~Reactor() = default;

  // Edge-triggered epoll watch of `fd` for `events` (EPOLLIN | EPOLLOUT | EPOLLRDHUP ...); the
  // callback gets the events that fired. It may unwatch anything, itself included. The fd stays
  // the caller's: unwatch before closing it. Returns 0 when epoll refuses the fd.
  virtual Id watch(int fd, std::uint32_t events, FdCallback callback) = 0;
  virtual void unwatch(Id id) = 0;
  // Runs `callback` once on the loop at (or just after) `when`; cancel_call before then drops it.
  virtual Id call_at(TimePoint when, Callback callback) = 0;
  virtual void cancel_call(Id id) = 0;

  // Debug builds: aborts unless called on the loop thread (base/thread_owner.hpp). Everything
  // above is loop-only; code built on the Reactor (the upstream pool) checks its own methods
  // with this too.
  virtual void assert_on_loop(const char* what) const = 0;

  // Any thread: runs `callback` on the loop thread soon. Dropped (destroyed unrun) when the
  // server stops first.
  virtual void post(Callback callback) = 0;
  // Any thread: runs `callback` on a worker thread, where it may block (watch the server's
  // stopping flag). Dropped when the server stops first.
  virtual void offload(Callback callback) = 0;
};

// The other end of a parked connection: how the handler answers later.
class Responder {
 public:
  using Callback = std::function<void()>;

  virtual ~Responder() = default;

  [[nodiscard]] virtual const HttpRequest& request() const = 0;
  // The answer being built. It starts as the response the handler filled in, so headers set
  // before routing (X-Request-Id) stay.
  virtual HttpResponse& response() = 0;
  virtual Reactor& reactor() = 0;
  // False once the client went away, the server is stopping, or the answer is finished.
  [[nodiscard]] virtual bool open() const = 0;

  // Sends response() as one answer (with Content-Length); the connection then goes on with the
  // client's next request.
  virtual void send() = 0;

  // Streaming: sends response()'s status line and headers and begins a chunked body.
  virtual void start_stream() = 0;
  // Queues one chunk for the client without blocking. False when the client is gone.
  virtual bool write(std::string_view data) = 0;
  // Bytes queued for the client that the kernel has not taken yet. A producer that reads from
  // somewhere faster than the client takes stops reading above a limit of its choice and
  // resumes from notify_when_drained.
  [[nodiscard]] virtual std::size_t backlog() const = 0;
  // Calls `callback` once, as soon as everything queued has been handed to the kernel.
  virtual void notify_when_drained(Callback callback) = 0;
  // Ends a stream: `complete` sends the last chunk and keeps the connection; otherwise the
  // connection is closed after what is queued, so the client sees a truncated body.
  virtual void finish(bool complete) = 0;

  // Called once if the client goes away (hangs up, even half-closes) or the server stops before
  // the answer is finished. The Responder is closed by then: its calls do nothing.
  virtual void on_gone(Callback callback) = 0;
};

}  // namespace gpumod::http
