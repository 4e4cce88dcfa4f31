// The HTTP server behind http/server.hpp: the wire helpers, the loop's construction, run and
// shutdown, and HttpServer's own methods. The other parts are listed in server_loop.hpp; requests
// are parsed by http/request_parser.hpp.
#include "http/server_loop.hpp"

#include <spdlog/spdlog.h>

#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstring>

#include "http/syntax.hpp"

namespace gpumod::http {

namespace server_detail {

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

bool wants_keep_alive(const HttpRequest& req) {
  const auto& c = req.header("Connection");
  if (req.http10) return iequals(trim_ows(c), "keep-alive");
  return !iequals(trim_ows(c), "close");
}

bool has_body(const HttpRequest& req, int status) {
  return req.method != "HEAD" && status >= 200 && status != 204 && status != 304;
}

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

void append_chunk(std::string_view data, bool http10, std::string& out) {
  if (!http10) {
    append_hex(out, data.size());
    out += "\r\n";
  }
  out += data;
  if (!http10) out += "\r\n";
}

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

}  // namespace server_detail

HttpServer::Loop::~Loop() {
  if (listen_fd >= 0) ::close(listen_fd);
}

// ---------------------------------------------------------------- run
void HttpServer::Loop::run() {
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
    const int n =
        ::epoll_wait(epoll_fd, events.data(), static_cast<int>(events.size()), wait_timeout_ms(Clock::now()));
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

void HttpServer::Loop::shutdown_all() {
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
