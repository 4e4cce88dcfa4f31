// Private to the HTTP server's implementation (the server*.cpp files; nothing else includes it):
// the connection and watch records, the wire helpers, and HttpServer::Loop, the epoll loop that
// is also the server's Reactor. Its methods are defined by concern:
//   server.cpp           the wire helpers, construction, run and shutdown, HttpServer's methods
//   server_reactor.cpp   the Reactor: fd watches, timers, posted callbacks, offloaded work
//   server_parked.cpp    parked answers: the Responder an async handler answers through later
//   server_dispatch.cpp  errors, inline answers, routing and the worker pool
//   server_sockets.cpp   accepting, reading, writing, lingering close, idle sweeps
// Threads: the loop's state is the loop thread's (ThreadOwner checks it in debug builds), except
// the worker pool's queue and the returned-connection list, each under its own mutex, and a
// connection while a worker owns it (Connection says which fields then belong to the worker).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "base/thread_owner.hpp"
#include "http/async.hpp"
#include "http/request_parser.hpp"
#include "http/server.hpp"

namespace gpumod::http {
namespace server_detail {

using Clock = std::chrono::steady_clock;

using Clock = std::chrono::steady_clock;

// Stop taking new requests off a connection whose answers pile up unread.
inline constexpr std::size_t kMaxOutputBacklog = std::size_t{1024} * 1024;

inline constexpr std::size_t kReadChunk = std::size_t{64} * 1024;

// Lingering close: after an answer that closes the connection (a 413 for a 20 MB body, say),
// what the client still sends is read and dropped, so the close does not become a reset that
// destroys the answer before the client reads it (Python's http.client and Node's fetch write
// the whole body first). Bounded by time rather than bytes, as nginx's lingering_time and
// lingering_timeout are: until the client is silent for kLingerSilence, at most kLingerMax.
inline constexpr auto kLingerSilence = std::chrono::seconds(2);

inline constexpr auto kLingerMax = std::chrono::seconds(30);

inline constexpr auto kPollSlice = std::chrono::milliseconds(100);

// Up to 16 path segments, split on '/' after the leading one ("/" is one empty segment).
struct Segments {
  std::array<std::string_view, 16> parts{};
  std::size_t count = 0;
  bool overflow = false;
};

Segments split_path(std::string_view path);

void append_number(std::string& out, std::uint64_t n);

void append_hex(std::string& out, std::uint64_t n);

// What an epoll event's data.ptr points to (besides the listening socket and the eventfd).
struct Pollable {
  enum class Kind { connection, watch };
  explicit Pollable(Kind k) : kind(k) {}
  Kind kind;
};

// An fd a handler watches through the Reactor.
struct Watch : Pollable {
  Watch() : Pollable(Kind::watch) {}
  Reactor::Id id = 0;
  int fd = -1;
  Reactor::FdCallback callback;
  bool dead = false;  // unwatched; freed after the current batch of events
};

// One client connection. While `in_worker` is true a worker thread owns it and the loop does
// not touch it (not even the loop-side fields below, except `readable`, which only the loop
// ever reads or writes).
struct Connection : Pollable {
  explicit Connection(const RequestLimits& limits) : Pollable(Kind::connection), parser(limits) {}
  int fd = -1;
  std::string remote_addr;

  // --- touched by whichever thread owns the connection ---
  std::string out;
  std::size_t out_pos = 0;
  bool close_after_write = false;  // close (after a linger drain) once `out` is written
  bool broken = false;             // a write failed or timed out: close at once

  // --- loop thread only ---
  std::string in;
  std::size_t in_pos = 0;
  bool in_worker = false;
  // Parked: an async handler answers later through this Responder (http/async.hpp); no
  // request is read meanwhile. Loop thread only.
  std::shared_ptr<Responder> parked;
  bool closed = false;
  bool readable = true;      // edge-triggered: the kernel may hold unread bytes
  bool hangup_seen = false;  // an event reported EPOLLRDHUP / EPOLLHUP / EPOLLERR
  bool peer_closed = false;
  bool draining = false;
  Clock::time_point drain_deadline{};  // closed then, unless more arrives before (kLingerSilence)
  Clock::time_point drain_end{};       // closed then at the latest (kLingerMax)
  Clock::time_point last_activity{};

  RequestParser parser;        // the request being read
  bool continue_sent = false;  // "100 Continue" went out for the request being read

  [[nodiscard]] std::size_t pending_output() const { return out.size() - out_pos; }
  [[nodiscard]] std::size_t buffered_input() const { return in.size() - in_pos; }
};

struct Route {
  std::string method;
  std::vector<std::string> segments;  // "{}" captures
  HandlerKind kind = HandlerKind::inline_;
  Handler handler;
};

bool segments_match(const Route& r, const Segments& s);

// Whether the answer to `req` leaves the connection open.
bool wants_keep_alive(const HttpRequest& req);

enum class Framing { length, chunked };

// Whether the answer to `req` with `status` carries a body at all (RFC 9110 6.4.1): not for
// HEAD, nor for 1xx, 204 and 304, whose end is the end of the head.
bool has_body(const HttpRequest& req, int status);

// Status line, headers and (with Framing::length) the body, appended to `out`. A chunked
// answer to an HTTP/1.0 client has no framing: its body ends with the connection. A HEAD
// answer keeps the framing headers a GET would get, without the body; 1xx, 204 and 304 get
// neither.
void serialize(const HttpResponse& res, Framing framing, bool keep_alive, const HttpRequest& req,
               std::string& out);

void serialize(const HttpResponse& res, bool keep_alive, const HttpRequest& req, std::string& out);

// One chunk of a chunked body (just the data for HTTP/1.0), appended to `out`.
void append_chunk(std::string_view data, bool http10, std::string& out);

// Blocking write on a non-blocking socket: poll() in slices, so a stop is noticed; gives up
// after `timeout` (or 1 s once the server is stopping).
bool write_all(int fd, std::string_view data, std::chrono::milliseconds timeout,
               const std::atomic<bool>& stopping);

}  // namespace server_detail
// The server's files share these names; server_detail keeps them out of other translation units.
using namespace server_detail;

struct HttpServer::Loop final : Reactor {
  explicit Loop(HttpServer& owner)
      : server(owner),
        opts(owner.options_),
        limits{opts.max_line_bytes, opts.max_header_bytes, opts.max_header_count,
               static_cast<std::uint64_t>(std::max<std::int64_t>(0, opts.max_body_bytes))} {}
  ~Loop() override;
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;
  HttpServer& server;
  const HttpServerOptions& opts;
  const RequestLimits limits;
  std::vector<Route> routes;
  std::function<bool(HttpRequest&, HttpResponse&)> before;
  std::function<void(const HttpRequest&, HttpResponse&)> error_filler;
  std::function<void(const HttpRequest&, const HttpResponse&)> logger;
  int listen_fd = -1;
  int epoll_fd = -1;
  int wake_fd = -1;
  std::unordered_map<Connection*, std::unique_ptr<Connection>> connections;
  std::vector<std::unique_ptr<Connection>> graveyard;  // closed this round; freed after it
  bool accept_paused = false;
  Clock::time_point accept_resume{};
  // --- worker pool ---
  struct WorkItem {
    Connection* conn = nullptr;  // null: a Reactor::offload task
    HttpRequest req;
    HttpResponse res;
    const Handler* handler = nullptr;  // null: only `res.deferred` / `res.stream` to run
    bool keep_alive = true;
    Callback task;
  };
  std::mutex pool_mutex;
  std::condition_variable pool_cv;
  std::deque<WorkItem> pool_queue;
  bool pool_stop = false;
  std::vector<std::thread> workers;
  // --- connections handed back by workers, and Reactor::post callbacks (same eventfd) ---
  std::mutex returned_mutex;
  std::vector<Connection*> returned;
  std::vector<Callback> posted;
  // --- Reactor: watches, timers, connections an async answer touched ---
  ThreadOwner loop_thread;  // run()'s thread
  Id next_id = 1;
  std::unordered_map<Id, std::unique_ptr<Watch>> watches;
  std::vector<std::unique_ptr<Watch>> dead_watches;  // unwatched this round; freed after it
  struct Timer {
    Callback callback;
    std::multimap<Clock::time_point, Id>::iterator order;  // its place in timer_order
  };
  std::multimap<Clock::time_point, Id> timer_order;
  std::unordered_map<Id, Timer> timers;
  std::vector<Connection*> dirty;  // to service() at the end of this round

  // ---------------------------------------------------------------- Reactor
  void assert_on_loop(const char* what) const override { loop_thread.assert_owner(what); }
  Id watch(int fd, std::uint32_t events, FdCallback callback) override;
  void unwatch(Id id) override;
  Id call_at(TimePoint when, Callback callback) override;
  // Both entries go at once: a cancelled timer left in timer_order would stay there until it
  // came due (a proxied call's 600 s silence timer, cancelled at every call's end).
  void cancel_call(Id id) override;
  void post(Callback callback) override;
  void offload(Callback callback) override;
  void run_timers(Clock::time_point now);
  // epoll_wait's timeout: the next timer, at most 250 ms (the sweep and stop checks).
  int wait_timeout_ms(Clock::time_point now);
  void free_dead_watches();
  void mark_dirty(Connection& c) { dirty.push_back(&c); }
  void service_dirty(Clock::time_point now);

  // ---------------------------------------------------------------- parked answers
  class Parked;  // defined in server_parked.cpp
  void park(Connection& c, HttpRequest req, HttpResponse res, bool keep_alive);
  // A parked connection's events: send what the Responder queued, notice the client leaving.
  void service_parked(Connection& c, Clock::time_point now);
  // A parked connection is closing before its answer ended (client gone, server stopping).
  void lose_parked(Connection& c);

  // ---------------------------------------------------------------- errors and answers
  void fill_error(const HttpRequest& req, HttpResponse& res, int status);
  void log_answer(const HttpRequest& req, const HttpResponse& res);
  // Queues an answer on the loop thread and tries to send it right away.
  void answer_inline(Connection& c, const HttpRequest& req, const HttpResponse& res, bool keep_alive);
  // Answers a request that could not be parsed or is over a limit, and closes afterwards. The
  // parser's reason goes in the body for the error filler to word.
  void answer_error_and_close(Connection& c);
  // Parses and answers the complete requests buffered on `c`, in order, until one goes to a
  // worker, the connection is to close, or the answers pile up. True when it answered any.
  bool process(Connection& c);

  // ---------------------------------------------------------------- routing
  void dispatch(Connection& c, HttpRequest req);

  // ---------------------------------------------------------------- workers
  void to_worker(Connection& c, WorkItem item);
  void worker_main();
  class SocketSink;  // defined in server_dispatch.cpp
  void serve_in_worker(WorkItem& item);

  // ---------------------------------------------------------------- sockets
  void close_connection(Connection& c);
  // Sends what is queued without blocking. After the last byte of a closing answer: half-close
  // and drain (see kLingerSilence).
  void flush(Connection& c, Clock::time_point now);
  // Reads what the kernel holds, up to a cap. False when the connection was closed.
  bool read_input(Connection& c, Clock::time_point now);
  // Everything the loop does for a connection it owns: write, read, answer, repeat.
  void service(Connection& c, Clock::time_point now);
  void accept_all(Clock::time_point now);
  void take_returned(Clock::time_point now);
  void sweep(Clock::time_point now);

  // ---------------------------------------------------------------- run
  void run();
  void shutdown_all();
};

}  // namespace gpumod::http
