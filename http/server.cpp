// The epoll loop and the worker pool behind http/server.hpp (requests are parsed by
// http/request_parser.hpp).
#include "http/server.hpp"

#include <spdlog/spdlog.h>

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

#include "base/thread_owner.hpp"
#include "http/async.hpp"
#include "http/request_parser.hpp"
#include "http/response_parser.hpp"
#include "http/syntax.hpp"

namespace gpumod::http {

namespace {

using Clock = std::chrono::steady_clock;

// Stop taking new requests off a connection whose answers pile up unread.
constexpr std::size_t kMaxOutputBacklog = std::size_t{1024} * 1024;
constexpr std::size_t kReadChunk = std::size_t{64} * 1024;
// Lingering close: after an answer that closes the connection (a 413 for a 20 MB body, say),
// what the client still sends is read and dropped, so the close does not become a reset that
// destroys the answer before the client reads it (Python's http.client and Node's fetch write
// the whole body first). Bounded by time rather than bytes, as nginx's lingering_time and
// lingering_timeout are: until the client is silent for kLingerSilence, at most kLingerMax.
constexpr auto kLingerSilence = std::chrono::seconds(2);
constexpr auto kLingerMax = std::chrono::seconds(30);
constexpr auto kPollSlice = std::chrono::milliseconds(100);

// Up to 16 path segments, split on '/' after the leading one ("/" is one empty segment).
struct Segments {
  std::array<std::string_view, 16> parts{};
  std::size_t count = 0;
  bool overflow = false;
};

Segments split_path(std::string_view path) {
  Segments s;
  if (!path.empty() && path.front() == '/') path.remove_prefix(1);
  for (;;) {
    const auto slash = path.find('/');
    if (s.count == s.parts.size()) {
      s.overflow = true;
      return s;
    }
    s.parts[s.count++] = path.substr(0, slash);
    if (slash == std::string_view::npos) return s;
    path.remove_prefix(slash + 1);
  }
}

void append_number(std::string& out, std::uint64_t n) {
  std::array<char, 24> buf{};
  auto [end, ec] = std::to_chars(buf.data(), buf.data() + buf.size(), n);
  (void)ec;
  out.append(buf.data(), end);
}

void append_hex(std::string& out, std::uint64_t n) {
  std::array<char, 24> buf{};
  auto [end, ec] = std::to_chars(buf.data(), buf.data() + buf.size(), n, 16);
  (void)ec;
  out.append(buf.data(), end);
}

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

bool segments_match(const Route& r, const Segments& s) {
  if (s.overflow || r.segments.size() != s.count) return false;
  for (std::size_t i = 0; i < s.count; ++i) {
    if (r.segments[i] == "{}") {
      if (s.parts[i].empty()) return false;
    } else if (r.segments[i] != s.parts[i]) {
      return false;
    }
  }
  return true;
}

// Whether the answer to `req` leaves the connection open.
bool wants_keep_alive(const HttpRequest& req) {
  const auto& c = req.header("Connection");
  if (req.http10) return iequals(trim_ows(c), "keep-alive");
  return !iequals(trim_ows(c), "close");
}

enum class Framing { length, chunked };

// Whether the answer to `req` with `status` carries a body at all (RFC 9110 6.4.1): not for
// HEAD, nor for 1xx, 204 and 304, whose end is the end of the head.
bool has_body(const HttpRequest& req, int status) {
  return req.method != "HEAD" && status >= 200 && status != 204 && status != 304;
}

// Status line, headers and (with Framing::length) the body, appended to `out`. A chunked
// answer to an HTTP/1.0 client has no framing: its body ends with the connection. A HEAD
// answer keeps the framing headers a GET would get, without the body; 1xx, 204 and 304 get
// neither.
void serialize(const HttpResponse& res, Framing framing, bool keep_alive, const HttpRequest& req,
               std::string& out) {
  const bool http10 = req.http10;
  const bool framed = res.status >= 200 && res.status != 204 && res.status != 304;
  out.reserve(out.size() + 160 + res.body.size());
  out += "HTTP/1.1 ";
  append_number(out, static_cast<std::uint64_t>(res.status));
  out += ' ';
  out += reason_phrase(res.status);
  out += "\r\n";
  for (const auto& [k, v] : res.headers) {
    out += k;
    out += ": ";
    out += v;
    out += "\r\n";
  }
  if (!res.content_type.empty()) {
    out += "Content-Type: ";
    out += res.content_type;
    out += "\r\n";
  }
  if (!framed) {
    // no framing: the head is the whole answer
  } else if (framing == Framing::chunked) {
    if (!http10) out += "Transfer-Encoding: chunked\r\n";
  } else {
    out += "Content-Length: ";
    append_number(out, res.body.size());
    out += "\r\n";
  }
  if (!keep_alive) {
    out += "Connection: close\r\n";
  } else if (http10) {
    out += "Connection: keep-alive\r\n";
  }
  out += "\r\n";
  if (framing == Framing::length && has_body(req, res.status)) out += res.body;
}

void serialize(const HttpResponse& res, bool keep_alive, const HttpRequest& req, std::string& out) {
  serialize(res, res.stream ? Framing::chunked : Framing::length, keep_alive, req, out);
}

// One chunk of a chunked body (just the data for HTTP/1.0), appended to `out`.
void append_chunk(std::string_view data, bool http10, std::string& out) {
  if (!http10) {
    append_hex(out, data.size());
    out += "\r\n";
  }
  out += data;
  if (!http10) out += "\r\n";
}

// Blocking write on a non-blocking socket: poll() in slices, so a stop is noticed; gives up
// after `timeout` (or 1 s once the server is stopping).
bool write_all(int fd, std::string_view data, std::chrono::milliseconds timeout,
               const std::atomic<bool>& stopping) {
  const auto start = Clock::now();
  while (!data.empty()) {
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n > 0) {
      data.remove_prefix(static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return false;
    const auto waited = Clock::now() - start;
    if (waited >= timeout) return false;
    if (stopping.load() && waited >= std::chrono::seconds(1)) return false;
    pollfd p{fd, POLLOUT, 0};
    ::poll(&p, 1, static_cast<int>(kPollSlice.count()));
  }
  return true;
}

}  // namespace

// ------------------------------------------------------------------------------------------

struct HttpServer::Loop final : Reactor {
  explicit Loop(HttpServer& owner)
      : server(owner),
        opts(owner.options_),
        limits{opts.max_line_bytes, opts.max_header_bytes, opts.max_header_count,
               static_cast<std::uint64_t>(std::max<std::int64_t>(0, opts.max_body_bytes))} {}
  ~Loop() override {
    if (listen_fd >= 0) ::close(listen_fd);
  }
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

  Id watch(int fd, std::uint32_t events, FdCallback callback) override {
    assert_on_loop("Reactor::watch");
    auto w = std::make_unique<Watch>();
    w->id = next_id++;
    w->fd = fd;
    w->callback = std::move(callback);
    epoll_event ev{};
    ev.events = events | EPOLLET;
    ev.data.ptr = static_cast<Pollable*>(w.get());
    if (::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0) return 0;
    const Id id = w->id;
    watches.emplace(id, std::move(w));
    return id;
  }

  void unwatch(Id id) override {
    assert_on_loop("Reactor::unwatch");
    auto it = watches.find(id);
    if (it == watches.end()) return;
    it->second->dead = true;
    ::epoll_ctl(epoll_fd, EPOLL_CTL_DEL, it->second->fd, nullptr);
    // Not freed yet: this round's events may still point at it, and its callback may be the
    // one running.
    dead_watches.push_back(std::move(it->second));
    watches.erase(it);
  }

  Id call_at(TimePoint when, Callback callback) override {
    assert_on_loop("Reactor::call_at");
    const Id id = next_id++;
    timers.emplace(id, Timer{std::move(callback), timer_order.emplace(when, id)});
    return id;
  }

  // Both entries go at once: a cancelled timer left in timer_order would stay there until it
  // came due (a proxied call's 600 s silence timer, cancelled at every call's end).
  void cancel_call(Id id) override {
    assert_on_loop("Reactor::cancel_call");
    auto it = timers.find(id);
    if (it == timers.end()) return;
    timer_order.erase(it->second.order);
    timers.erase(it);
  }

  void post(Callback callback) override {
    {
      std::lock_guard lock(returned_mutex);
      posted.push_back(std::move(callback));
    }
    const std::uint64_t one = 1;
    (void)!::write(wake_fd, &one, sizeof one);
  }

  void offload(Callback callback) override {
    WorkItem item;
    item.task = std::move(callback);
    {
      std::lock_guard lock(pool_mutex);
      if (pool_stop) return;
      pool_queue.push_back(std::move(item));
    }
    pool_cv.notify_one();
  }

  void run_timers(Clock::time_point now) {
    while (!timer_order.empty() && timer_order.begin()->first <= now) {
      const Id id = timer_order.begin()->second;
      timer_order.erase(timer_order.begin());
      auto it = timers.find(id);
      Callback callback = std::move(it->second.callback);
      timers.erase(it);
      callback();
    }
  }

  // epoll_wait's timeout: the next timer, at most 250 ms (the sweep and stop checks).
  int wait_timeout_ms(Clock::time_point now) {
    constexpr int kTick = 250;
    if (!dirty.empty()) return 0;  // left over by service_dirty's round cap
    if (timer_order.empty()) return kTick;
    const auto due = timer_order.begin()->first;
    if (due <= now) return 0;
    const auto ms = std::chrono::ceil<std::chrono::milliseconds>(due - now).count();
    return static_cast<int>(std::min<std::int64_t>(ms, kTick));
  }

  void free_dead_watches() {
    // A watch's callback may own things whose destructors unwatch more.
    while (!dead_watches.empty()) {
      auto dead = std::move(dead_watches);
      dead_watches.clear();
    }
  }

  void mark_dirty(Connection& c) { dirty.push_back(&c); }

  void service_dirty(Clock::time_point now) {
    for (int round = 0; round < 16 && !dirty.empty(); ++round) {
      auto batch = std::move(dirty);
      dirty.clear();
      for (Connection* c : batch) {
        if (!c->closed && !c->in_worker) service(*c, now);
      }
    }
  }

  // ---------------------------------------------------------------- parked answers

  // The Responder of a parked connection. Lives while the connection is parked (the connection
  // holds it) and while the handler keeps it; `conn` is null once the answer is finished or the
  // client is gone, which turns every call into a no-op.
  class Parked final : public Responder, public std::enable_shared_from_this<Parked> {
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

  void park(Connection& c, HttpRequest req, HttpResponse res, bool keep_alive) {
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

  // A parked connection's events: send what the Responder queued, notice the client leaving.
  void service_parked(Connection& c, Clock::time_point now) {
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

  // ---------------------------------------------------------------- errors and answers

  void fill_error(const HttpRequest& req, HttpResponse& res, int status) {
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

  void log_answer(const HttpRequest& req, const HttpResponse& res) {
    if (!logger) return;
    try {
      logger(req, res);
    } catch (const std::exception& e) {
      spdlog::error("http: logger threw: {}", e.what());
    }
  }

  // Queues an answer on the loop thread and tries to send it right away.
  void answer_inline(Connection& c, const HttpRequest& req, const HttpResponse& res, bool keep_alive) {
    if (!keep_alive || server.stopping()) c.close_after_write = true;
    serialize(res, !c.close_after_write, req, c.out);
    log_answer(req, res);
  }

  // Answers a request that could not be parsed or is over a limit, and closes afterwards. The
  // parser's reason goes in the body for the error filler to word.
  void answer_error_and_close(Connection& c) {
    HttpResponse res;
    res.body = c.parser.error();
    fill_error(c.parser.request(), res, c.parser.status());
    c.close_after_write = true;
    serialize(res, false, c.parser.request(), c.out);
    log_answer(c.parser.request(), res);
    c.parser.reset();
  }

  // Parses and answers the complete requests buffered on `c`, in order, until one goes to a
  // worker, the connection is to close, or the answers pile up. True when it answered any.
  bool process(Connection& c) {
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

  void dispatch(Connection& c, HttpRequest req) {
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

  void to_worker(Connection& c, WorkItem item) {
    c.in_worker = true;
    {
      std::lock_guard lock(pool_mutex);
      pool_queue.push_back(std::move(item));
    }
    pool_cv.notify_one();
  }

  void worker_main() {
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

  class SocketSink final : public StreamSink {
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

  void serve_in_worker(WorkItem& item) {
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

  // ---------------------------------------------------------------- sockets

  void close_connection(Connection& c) {
    if (c.closed) return;
    c.closed = true;
    // Leave the epoll set explicitly: close() alone removes the registration only when no other
    // descriptor refers to the socket, and a service forked at this moment holds copies of all
    // of ours until its exec. The registration then outlived the Connection, and a later event
    // handed the loop a freed pointer (a heap-use-after-free, seen under ASan with a start
    // racing a client's close).
    ::epoll_ctl(epoll_fd, EPOLL_CTL_DEL, c.fd, nullptr);
    ::close(c.fd);
    if (c.parked) {
      auto parked = std::static_pointer_cast<Parked>(std::move(c.parked));
      c.parked.reset();
      parked->connection_lost();
    }
    auto it = connections.find(&c);
    if (it != connections.end()) {
      graveyard.push_back(std::move(it->second));
      connections.erase(it);
    }
  }

  // Sends what is queued without blocking. After the last byte of a closing answer: half-close
  // and drain (see kLingerSilence).
  void flush(Connection& c, Clock::time_point now) {
    while (c.pending_output() > 0) {
      const ssize_t n = ::send(c.fd, c.out.data() + c.out_pos, c.pending_output(), MSG_NOSIGNAL);
      if (n > 0) {
        c.out_pos += static_cast<std::size_t>(n);
        c.last_activity = now;
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;  // EPOLLOUT resumes
      close_connection(c);
      return;
    }
    c.out.clear();
    c.out_pos = 0;
    if (c.close_after_write && !c.draining) {
      ::shutdown(c.fd, SHUT_WR);
      c.draining = true;
      c.drain_end = now + kLingerMax;
      c.drain_deadline = now + kLingerSilence;
    }
  }

  // Reads what the kernel holds, up to a cap. False when the connection was closed.
  bool read_input(Connection& c, Clock::time_point now) {
    const std::size_t cap = static_cast<std::size_t>(std::max<std::int64_t>(0, opts.max_body_bytes)) +
                            opts.max_header_bytes + opts.max_line_bytes + kReadChunk;
    while (c.readable && !c.peer_closed) {
      if (!c.draining && c.buffered_input() >= cap) return true;
      std::array<char, kReadChunk> buf;  // NOLINT(cppcoreguidelines-pro-type-member-init): filled by recv
      const ssize_t n = ::recv(c.fd, buf.data(), buf.size(), 0);
      if (n > 0) {
        c.last_activity = now;
        if (c.draining) {
          c.drain_deadline = std::min(now + kLingerSilence, c.drain_end);
        } else {
          c.in.append(buf.data(), static_cast<std::size_t>(n));
        }
        // A short read emptied the socket: data arriving later raises a new edge, so skip the
        // recv() that would only say EAGAIN (one syscall per request). Not after a hang-up
        // event, whose EOF would raise no new edge.
        if (static_cast<std::size_t>(n) < buf.size() && !c.hangup_seen) {
          c.readable = false;
          break;
        }
        continue;
      }
      if (n == 0) {
        c.peer_closed = true;
        break;
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        c.readable = false;
        break;
      }
      close_connection(c);
      return false;
    }
    return true;
  }

  // Everything the loop does for a connection it owns: write, read, answer, repeat.
  void service(Connection& c, Clock::time_point now) {
    if (c.parked && !c.closed && !c.in_worker) {
      service_parked(c, now);
      return;
    }
    for (int round = 0; round < 64; ++round) {
      if (c.closed || c.in_worker || c.parked) return;
      flush(c, now);
      if (c.closed) return;
      if (c.draining) {
        if (!read_input(c, now)) return;
        if (c.peer_closed) close_connection(c);
        return;
      }
      const bool backlog = c.pending_output() >= kMaxOutputBacklog;
      const std::size_t before_read = c.in.size();
      if (!backlog && !read_input(c, now)) return;
      const bool read_any = c.in.size() != before_read;
      const bool answered = backlog ? false : process(c);
      if (c.closed || c.in_worker) return;
      if (c.parked) {
        service_parked(c, now);
        return;
      }
      if (!answered && !read_any) break;
    }
    flush(c, now);
    if (c.closed || c.in_worker || c.parked) return;
    if (c.peer_closed && !c.draining && c.pending_output() < kMaxOutputBacklog) {
      // The client sent its last request; answer what is queued, then close.
      if (c.pending_output() == 0) {
        close_connection(c);
      } else {
        c.close_after_write = true;
      }
    }
  }

  void accept_all(Clock::time_point now) {
    for (;;) {
      sockaddr_storage addr{};
      socklen_t len = sizeof addr;
      const int fd =
          ::accept4(listen_fd, reinterpret_cast<sockaddr*>(&addr), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
          // Out of descriptors: stop accepting for a moment instead of spinning on the
          // level-triggered listening socket.
          spdlog::warn("http: cannot accept a connection: {}; pausing accepts for 100 ms",
                       std::strerror(errno));
          ::epoll_ctl(epoll_fd, EPOLL_CTL_DEL, listen_fd, nullptr);
          accept_paused = true;
          accept_resume = now + std::chrono::milliseconds(100);
        }
        return;
      }
      const int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      auto conn = std::make_unique<Connection>(limits);
      conn->fd = fd;
      conn->last_activity = now;
      std::array<char, INET6_ADDRSTRLEN> host{};
      if (addr.ss_family == AF_INET) {
        ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(&addr)->sin_addr, host.data(), host.size());
      } else if (addr.ss_family == AF_INET6) {
        ::inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(&addr)->sin6_addr, host.data(), host.size());
      }
      conn->remote_addr = host.data();
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
      ev.data.ptr = static_cast<Pollable*>(conn.get());
      if (::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        ::close(fd);
        continue;
      }
      Connection* raw = conn.get();
      connections.emplace(raw, std::move(conn));
      service(*raw, now);  // a client usually sent its request with the handshake's last ACK
    }
  }

  void take_returned(Clock::time_point now) {
    std::uint64_t value = 0;
    (void)!::read(wake_fd, &value, sizeof value);
    std::vector<Connection*> back;
    std::vector<Callback> callbacks;
    {
      std::lock_guard lock(returned_mutex);
      back.swap(returned);
      callbacks.swap(posted);
    }
    for (auto& callback : callbacks) callback();
    for (Connection* c : back) {
      c->in_worker = false;
      c->last_activity = now;
      if (c->broken) {
        close_connection(*c);
        continue;
      }
      service(*c, now);
    }
  }

  void sweep(Clock::time_point now) {
    std::vector<Connection*> expired;
    for (auto& [ptr, conn] : connections) {
      if (conn->in_worker || conn->parked) continue;
      if (conn->draining ? now >= conn->drain_deadline : now - conn->last_activity >= opts.idle_timeout) {
        expired.push_back(ptr);
      }
    }
    for (Connection* c : expired) close_connection(*c);
  }

  // ---------------------------------------------------------------- run

  void run() {
    loop_thread.bind();
    epoll_fd = ::epoll_create1(EPOLL_CLOEXEC);
    if (epoll_fd < 0) {
      spdlog::error("http: epoll_create1: {}", std::strerror(errno));
      return;
    }
    static char listen_tag = 0;
    static char wake_tag = 0;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = &listen_tag;
    ::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, listen_fd, &ev);
    ev.data.ptr = &wake_tag;
    ::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, wake_fd, &ev);

    const int threads = std::max(1, opts.threads);
    workers.reserve(static_cast<std::size_t>(threads));
    for (int i = 0; i < threads; ++i) workers.emplace_back([this] { worker_main(); });

    std::array<epoll_event, 256> events{};
    auto next_sweep = Clock::now() + std::chrono::seconds(1);
    while (!server.stopping()) {
      const int n = ::epoll_wait(epoll_fd, events.data(), static_cast<int>(events.size()),
                                 wait_timeout_ms(Clock::now()));
      const auto now = Clock::now();
      for (int i = 0; i < n; ++i) {
        void* tag = events[i].data.ptr;
        if (tag == &listen_tag) {
          accept_all(now);
        } else if (tag == &wake_tag) {
          take_returned(now);
        } else if (static_cast<Pollable*>(tag)->kind == Pollable::Kind::watch) {
          auto* w = static_cast<Watch*>(static_cast<Pollable*>(tag));
          if (!w->dead) w->callback(events[i].events);
        } else {
          auto* c = static_cast<Connection*>(static_cast<Pollable*>(tag));
          if (c->closed) continue;
          const auto what = events[i].events;
          if ((what & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0) c->readable = true;
          if ((what & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0) c->hangup_seen = true;
          if (!c->in_worker) service(*c, now);
        }
      }
      run_timers(now);
      service_dirty(now);
      // Connections still marked dirty (service_dirty's round cap) are serviced next round;
      // until then no closed connection may be freed, as one of them may be among them.
      if (dirty.empty()) graveyard.clear();
      free_dead_watches();
      if (accept_paused && now >= accept_resume) {
        epoll_event lev{};
        lev.events = EPOLLIN;
        lev.data.ptr = &listen_tag;
        ::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, listen_fd, &lev);
        accept_paused = false;
      }
      if (now >= next_sweep) {
        sweep(now);
        if (dirty.empty()) graveyard.clear();
        next_sweep = now + std::chrono::seconds(1);
      }
    }
    shutdown_all();
  }

  void shutdown_all() {
    ::close(listen_fd);
    listen_fd = -1;
    {
      std::lock_guard lock(pool_mutex);
      pool_stop = true;
    }
    pool_cv.notify_all();
    for (auto& t : workers) t.join();
    workers.clear();
    pool_queue.clear();  // unstarted work: its responses release what they hold
    std::vector<Callback> unposted;
    {
      std::lock_guard lock(returned_mutex);
      returned.clear();
      unposted.swap(posted);
    }
    unposted.clear();
    // Parked answers learn that their client is gone (they release what they hold), then
    // whatever timers and watches are left are dropped; their owners close their own fds.
    std::vector<Connection*> parked;
    for (auto& [ptr, conn] : connections) {
      if (conn->parked) parked.push_back(ptr);
    }
    for (Connection* c : parked) close_connection(*c);
    for (int round = 0; round < 16 && (!timers.empty() || !watches.empty()); ++round) {
      auto pending_timers = std::move(timers);
      timers.clear();
      timer_order.clear();
      pending_timers.clear();
      for (auto& [id, w] : watches) ::epoll_ctl(epoll_fd, EPOLL_CTL_DEL, w->fd, nullptr);
      auto pending_watches = std::move(watches);
      watches.clear();
      pending_watches.clear();
    }
    free_dead_watches();
    for (auto& [ptr, conn] : connections) {
      if (!conn->closed) ::close(conn->fd);
    }
    connections.clear();
    graveyard.clear();
    ::close(epoll_fd);
    epoll_fd = -1;
  }
};

// ------------------------------------------------------------------------------------------

HttpServer::HttpServer(HttpServerOptions options)
    : options_(std::move(options)), loop_(std::make_unique<Loop>(*this)) {}

HttpServer::~HttpServer() {
  stop();
  if (loop_->wake_fd >= 0) ::close(loop_->wake_fd);
}

Reactor& HttpServer::reactor() {
  return *loop_;
}

void HttpServer::route(std::string method, const std::string& pattern, HandlerKind kind, Handler handler) {
  Route r;
  r.method = std::move(method);
  const Segments segs = split_path(pattern);
  for (std::size_t i = 0; i < segs.count; ++i) r.segments.emplace_back(segs.parts[i]);
  r.kind = kind;
  r.handler = std::move(handler);
  loop_->routes.push_back(std::move(r));
}

void HttpServer::set_before(std::function<bool(HttpRequest&, HttpResponse&)> hook) {
  loop_->before = std::move(hook);
}

void HttpServer::set_error_filler(std::function<void(const HttpRequest&, HttpResponse&)> filler) {
  loop_->error_filler = std::move(filler);
}

void HttpServer::set_logger(std::function<void(const HttpRequest&, const HttpResponse&)> logger) {
  loop_->logger = std::move(logger);
}

Result<int> HttpServer::bind() {
  if (loop_->listen_fd >= 0) return make_error("the HTTP server is already bound");
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string port = std::to_string(options_.port);
  const std::string where = options_.host + ":" + port;
  if (const int rc = ::getaddrinfo(options_.host.c_str(), port.c_str(), &hints, &found); rc != 0) {
    return make_error("cannot resolve " + options_.host + ": " + ::gai_strerror(rc));
  }
  std::string last_error = "no address";
  int fd = -1;
  for (addrinfo* ai = found; ai != nullptr; ai = ai->ai_next) {
    fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      last_error = std::strerror(errno);
      continue;
    }
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && ::listen(fd, SOMAXCONN) == 0) break;
    last_error = std::strerror(errno);
    ::close(fd);
    fd = -1;
  }
  ::freeaddrinfo(found);
  if (fd < 0) return make_error("cannot listen on " + where + ": " + last_error);
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  int bound = options_.port;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    if (addr.ss_family == AF_INET) bound = ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
    if (addr.ss_family == AF_INET6) bound = ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port);
  }
  loop_->wake_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (loop_->wake_fd < 0) {
    ::close(fd);
    return make_error(std::string("eventfd: ") + std::strerror(errno));
  }
  loop_->listen_fd = fd;
  return bound;
}

void HttpServer::run() {
  if (loop_->listen_fd < 0) {
    spdlog::error("http: run() called before a successful bind()");
    return;
  }
  if (stopping_.load()) {
    ::close(loop_->listen_fd);
    loop_->listen_fd = -1;
    return;
  }
  loop_->run();
}

void HttpServer::stop() {
  stopping_.store(true);
  if (loop_ && loop_->wake_fd >= 0) {
    const std::uint64_t one = 1;
    (void)!::write(loop_->wake_fd, &one, sizeof one);
  }
}

}  // namespace gpumod::http
