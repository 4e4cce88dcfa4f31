// UpstreamCall and UpstreamPool (http/upstream.hpp).
#include "http/upstream.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <charconv>
#include <cstring>

namespace gpumod::http {

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::size_t kReadChunk = std::size_t{64} * 1024;
// A reused connection that fails this soon, before any answer byte, was most likely closed by
// the server while idle: the call is sent again on a new connection (see the header).
constexpr auto kRetryWindow = std::chrono::seconds(1);

std::string address_key(const UpstreamAddress& a) {
  return a.host + ":" + std::to_string(a.port);
}

// `a` as a socket address (IPv6 when the host has a ':'); its length, 0 when the host is not a
// numeric address.
socklen_t numeric_sockaddr(const UpstreamAddress& a, sockaddr_storage& out) {
  const auto port = htons(static_cast<std::uint16_t>(a.port));
  if (a.host.find(':') != std::string::npos) {
    auto* a6 = reinterpret_cast<sockaddr_in6*>(&out);
    a6->sin6_family = AF_INET6;
    a6->sin6_port = port;
    return ::inet_pton(AF_INET6, a.host.c_str(), &a6->sin6_addr) == 1 ? sizeof(sockaddr_in6) : 0;
  }
  auto* a4 = reinterpret_cast<sockaddr_in*>(&out);
  a4->sin_family = AF_INET;
  a4->sin_port = port;
  return ::inet_pton(AF_INET, a.host.c_str(), &a4->sin_addr) == 1 ? sizeof(sockaddr_in) : 0;
}

std::string errno_text(int err) {
  return std::strerror(err);
}

}  // namespace

// A socket to a model server with its one Reactor watch. Whoever uses it (a call, or the pool
// while it is idle) sets the handler that gets its events.
class UpstreamConnection {
 public:
  UpstreamConnection(http::Reactor& reactor, int fd, UpstreamAddress address)
      : reactor_(reactor), fd_(fd), address_(std::move(address)), key_(address_key(address_)) {}
  ~UpstreamConnection() {
    if (watch_ != 0) reactor_.unwatch(watch_);
    ::close(fd_);
  }
  UpstreamConnection(const UpstreamConnection&) = delete;
  UpstreamConnection& operator=(const UpstreamConnection&) = delete;

  bool watch() {
    watch_ = reactor_.watch(fd_, EPOLLIN | EPOLLOUT | EPOLLRDHUP, [this](std::uint32_t events) {
      // A copy: the handler may destroy this connection (and with it handler_).
      auto handler = handler_;
      if (handler) handler(events);
    });
    return watch_ != 0;
  }
  void set_handler(http::Reactor::FdCallback handler) { handler_ = std::move(handler); }
  [[nodiscard]] int fd() const { return fd_; }
  [[nodiscard]] const std::string& key() const { return key_; }

 private:
  http::Reactor& reactor_;
  int fd_;
  UpstreamAddress address_;
  std::string key_;
  http::Reactor::Id watch_ = 0;
  http::Reactor::FdCallback handler_;
};

Result<UpstreamAddress> parse_endpoint(std::string_view endpoint) {
  const std::string_view scheme = "http://";
  if (endpoint.substr(0, scheme.size()) != scheme) {
    return make_error("endpoint '" + std::string(endpoint) + "' does not start with http://");
  }
  std::string_view rest = endpoint.substr(scheme.size());
  if (const auto slash = rest.find('/'); slash != std::string_view::npos) rest = rest.substr(0, slash);
  UpstreamAddress a;
  std::string_view port;
  if (!rest.empty() && rest.front() == '[') {
    const auto close = rest.find(']');
    if (close == std::string_view::npos || close + 1 >= rest.size() || rest[close + 1] != ':') {
      return make_error("endpoint '" + std::string(endpoint) + "' has no port");
    }
    a.host = std::string(rest.substr(1, close - 1));
    port = rest.substr(close + 2);
  } else {
    const auto colon = rest.rfind(':');
    if (colon == std::string_view::npos)
      return make_error("endpoint '" + std::string(endpoint) + "' has no port");
    a.host = std::string(rest.substr(0, colon));
    port = rest.substr(colon + 1);
  }
  if (a.host == "localhost") a.host = "127.0.0.1";
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), a.port);
  if (ec != std::errc() || end != port.data() + port.size() || a.port <= 0 || a.port > 65535) {
    return make_error("endpoint '" + std::string(endpoint) + "' has an invalid port");
  }
  return a;
}

const char* to_string(UpstreamFailure failure) {
  switch (failure) {
    case UpstreamFailure::none:
      return "none";
    case UpstreamFailure::connect:
      return "connect";
    case UpstreamFailure::connect_timeout:
      return "connect timeout";
    case UpstreamFailure::write:
      return "write";
    case UpstreamFailure::read:
      return "read";
    case UpstreamFailure::read_timeout:
      return "read timeout";
    case UpstreamFailure::protocol:
      return "protocol";
  }
  return "unknown";
}

// ---------------------------------------------------------------------------------- pool

UpstreamPool::UpstreamPool(http::Reactor& reactor) : reactor_(reactor) {}

UpstreamPool::~UpstreamPool() = default;

std::unique_ptr<UpstreamConnection> UpstreamPool::take(const UpstreamAddress& address) {
  reactor_.assert_on_loop("UpstreamPool::take");
  auto it = idle_.find(address_key(address));
  if (it == idle_.end() || it->second.empty()) return nullptr;
  auto connection = std::move(it->second.back());
  it->second.pop_back();
  connection->set_handler(nullptr);
  return connection;
}

void UpstreamPool::give_back(std::unique_ptr<UpstreamConnection> connection) {
  reactor_.assert_on_loop("UpstreamPool::give_back");
  auto& idle = idle_[connection->key()];
  if (idle.size() >= kMaxIdlePerAddress) return;
  UpstreamConnection* raw = connection.get();
  // An idle connection has nothing to say: data or a hang-up means the server closed it (or
  // broke the protocol), so it is dropped before anyone takes it.
  raw->set_handler([this, raw](std::uint32_t events) {
    if ((events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0) drop(raw);
  });
  idle.push_back(std::move(connection));
}

void UpstreamPool::drop(UpstreamConnection* connection) {
  auto it = idle_.find(connection->key());
  if (it == idle_.end()) return;
  auto& idle = it->second;
  for (auto c = idle.begin(); c != idle.end(); ++c) {
    if (c->get() == connection) {
      idle.erase(c);
      return;
    }
  }
}

void UpstreamPool::clear() {
  auto idle = std::move(idle_);
  idle_.clear();
}

std::size_t UpstreamPool::idle() const {
  std::size_t n = 0;
  for (const auto& [key, list] : idle_) n += list.size();
  return n;
}

// ---------------------------------------------------------------------------------- call

UpstreamCall::UpstreamCall(UpstreamPool& pool, Request request, Timeouts timeouts, Events events)
    : pool_(pool), request_(std::move(request)), timeouts_(timeouts), events_(std::move(events)) {}

UpstreamCall::~UpstreamCall() {
  detach();
}

std::shared_ptr<UpstreamCall> UpstreamCall::start(UpstreamPool& pool, Request request, Timeouts timeouts,
                                                  Events events) {
  std::shared_ptr<UpstreamCall> call(new UpstreamCall(pool, std::move(request), timeouts, std::move(events)));
  // The request in wire form, once (a retry sends the same bytes).
  std::string& wire = call->wire_;
  const Request& r = call->request_;
  wire.reserve(r.path.size() + r.body.size() + 256);
  wire += r.method;
  wire += ' ';
  wire += r.path;
  wire += " HTTP/1.1\r\nHost: ";
  wire += r.address.host.find(':') != std::string::npos ? "[" + r.address.host + "]" : r.address.host;
  wire += ':';
  wire += std::to_string(r.address.port);
  wire += "\r\n";
  for (const auto& [name, value] : r.headers) {
    if (http::iequals(name, "Host") || http::iequals(name, "Content-Length") ||
        http::iequals(name, "Transfer-Encoding") || http::iequals(name, "Connection")) {
      continue;
    }
    wire += name;
    wire += ": ";
    wire += value;
    wire += "\r\n";
  }
  wire += "Content-Length: ";
  wire += std::to_string(r.body.size());
  wire += "\r\n\r\n";
  wire += r.body;
  call->started_ = Clock::now();
  // Events never come from inside start(): the caller may still be setting itself up. A timer
  // due at the epoch runs at the end of this loop round (the round's timers run after its
  // events), with no extra wake-up.
  std::weak_ptr<UpstreamCall> weak = call;
  pool.reactor().call_at(Clock::time_point{}, [weak] {
    if (auto self = weak.lock()) self->begin();
  });
  return call;
}

void UpstreamCall::begin() {
  if (finished_) return;
  open_connection(false);
}

void UpstreamCall::open_connection(bool fresh) {
  auto self = shared_from_this();
  http::Reactor& reactor = pool_.reactor();
  if (!fresh) {
    connection_ = pool_.take(request_.address);
    if (connection_) {
      reused_ = true;
      connection_->set_handler([this](std::uint32_t events) { on_events(events); });
      write_request();
      return;
    }
  }
  reused_ = false;
  sockaddr_storage addr{};
  const socklen_t addr_len = numeric_sockaddr(request_.address, addr);
  if (addr_len == 0) {
    fail(UpstreamFailure::connect, "'" + request_.address.host + "' is not a numeric address");
    return;
  }
  const int fd = ::socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    fail(UpstreamFailure::connect, "socket: " + errno_text(errno));
    return;
  }
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // small requests go out at once
  connection_ = std::make_unique<UpstreamConnection>(reactor, fd, request_.address);
  int rc = 0;
  do {
    rc = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), addr_len);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0 && errno != EINPROGRESS) {
    fail(UpstreamFailure::connect, errno_text(errno));
    return;
  }
  connecting_ = rc != 0;
  if (!connection_->watch()) {
    fail(UpstreamFailure::connect, "epoll refused the socket");
    return;
  }
  connection_->set_handler([this](std::uint32_t events) { on_events(events); });
  if (connecting_) {
    std::weak_ptr<UpstreamCall> weak = self;
    connect_timer_ = reactor.call_at(Clock::now() + timeouts_.connect, [weak] {
      auto call = weak.lock();
      if (!call) return;
      call->connect_timer_ = 0;
      if (call->connecting_ && !call->finished_) {
        call->fail(UpstreamFailure::connect_timeout,
                   "no connection within " + std::to_string(call->timeouts_.connect.count()) + " ms");
      }
    });
    return;
  }
  write_request();
}

void UpstreamCall::on_events(std::uint32_t events) {
  auto self = shared_from_this();  // an event handler may drop the last other reference
  if (finished_) return;
  if (connecting_) {
    if ((events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) == 0) return;
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(connection_->fd(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
      fail(UpstreamFailure::connect, errno_text(err));
      return;
    }
    on_connected();
    if (finished_) return;
  } else if (written_ < wire_.size() && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) != 0) {
    write_request();
    if (finished_) return;
  }
  if ((events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0) {
    readable_ = true;
    if ((events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0) hangup_ = true;
    if (!paused_) read_answer();
  }
}

void UpstreamCall::on_connected() {
  connecting_ = false;
  if (connect_timer_ != 0) pool_.reactor().cancel_call(connect_timer_);
  connect_timer_ = 0;
  write_request();
}

void UpstreamCall::write_request() {
  // The silence timeout covers the request's way out too (each send that makes progress counts
  // as a sign of life): a service that accepts but never reads would otherwise hold the call,
  // and the client's lease, for ever.
  last_read_ = Clock::now();
  arm_read_timer();
  while (written_ < wire_.size()) {
    const ssize_t n =
        ::send(connection_->fd(), wire_.data() + written_, wire_.size() - written_, MSG_NOSIGNAL);
    if (n > 0) {
      written_ += static_cast<std::size_t>(n);
      last_read_ = Clock::now();
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;  // EPOLLOUT goes on
    fail(UpstreamFailure::write, errno_text(errno));
    return;
  }
  last_read_ = Clock::now();  // the wait for the answer counts from the end of the request
}

void UpstreamCall::read_answer() {
  auto self = shared_from_this();
  std::array<char, kReadChunk> buf;  // NOLINT(cppcoreguidelines-pro-type-member-init): filled by recv
  while (readable_ && !paused_ && !finished_) {
    const ssize_t n = ::recv(connection_->fd(), buf.data(), buf.size(), 0);
    if (n > 0) {
      received_ += static_cast<std::uint64_t>(n);
      last_read_ = Clock::now();
      const auto result = parser_.feed(std::string_view(buf.data(), static_cast<std::size_t>(n)), body_);
      if (result == http::ResponseParser::Result::failed) {
        fail(UpstreamFailure::protocol, "invalid answer: " + parser_.error());
        return;
      }
      if (parser_.head_ready() && !head_sent_) {
        head_sent_ = true;
        if (events_.head) events_.head(parser_.head());
        if (finished_) return;
      }
      if (!body_.empty()) {
        if (events_.body) events_.body(body_);
        body_.clear();
        if (finished_) return;
      }
      if (result == http::ResponseParser::Result::done) {
        complete();
        return;
      }
      // A short read emptied the socket; more data raises a new edge, so skip the recv() that
      // would only say EAGAIN. Not after a hang-up, whose end of stream raises none.
      if (static_cast<std::size_t>(n) < buf.size() && !hangup_) {
        readable_ = false;
        return;
      }
      continue;
    }
    if (n == 0) {
      if (parser_.feed_eof() == http::ResponseParser::Result::done) {
        // A body that runs until the close: whatever the last feed appended has been passed on.
        if (parser_.head_ready() && !head_sent_) {
          head_sent_ = true;
          if (events_.head) events_.head(parser_.head());
          if (finished_) return;
        }
        complete();
        return;
      }
      fail(UpstreamFailure::read, received_ == 0 ? "the service closed the connection without answering"
                                                 : "the service closed the connection mid-answer");
      return;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      readable_ = false;
      return;
    }
    fail(UpstreamFailure::read, errno_text(errno));
    return;
  }
}

void UpstreamCall::complete() {
  finished_ = true;
  auto connection = std::move(connection_);
  // Not after an answer that came before the whole request went out (the service would read
  // the rest of it as the next request), nor after the service's end of stream was seen.
  const bool reuse = parser_.reusable() && written_ == wire_.size() && !hangup_;
  detach();
  if (reuse && connection) pool_.give_back(std::move(connection));
  connection.reset();
  auto end = std::move(events_.end);
  events_ = Events{};
  if (end) end(UpstreamFailure::none, std::string());
}

void UpstreamCall::fail(UpstreamFailure failure, const std::string& detail) {
  if (finished_) return;
  const bool early = Clock::now() - started_ < kRetryWindow;
  const bool retryable = failure == UpstreamFailure::write || (failure == UpstreamFailure::read && early);
  if (!retried_ && reused_ && received_ == 0 && retryable) {
    retried_ = true;
    detach();
    written_ = 0;
    readable_ = false;
    hangup_ = false;
    parser_.reset();
    open_connection(true);
    return;
  }
  finished_ = true;
  detach();
  auto end = std::move(events_.end);
  events_ = Events{};
  if (end) end(failure, detail);
}

void UpstreamCall::pause() {
  paused_ = true;
}

void UpstreamCall::resume() {
  if (!paused_) return;
  paused_ = false;
  if (readable_ && !finished_) read_answer();
}

void UpstreamCall::cancel() {
  finished_ = true;
  detach();
  events_ = Events{};
}

void UpstreamCall::arm_read_timer() {
  if (read_timer_ != 0 || finished_) return;
  std::weak_ptr<UpstreamCall> weak = weak_from_this();
  read_timer_ = pool_.reactor().call_at(last_read_ + timeouts_.read, [weak] {
    if (auto call = weak.lock()) call->on_read_timer();
  });
}

void UpstreamCall::on_read_timer() {
  read_timer_ = 0;
  if (finished_) return;
  // A paused call waits for its client, not for the service.
  if (!paused_ && Clock::now() - last_read_ >= timeouts_.read) {
    fail(UpstreamFailure::read_timeout,
         written_ < wire_.size()
             ? "the service took none of the request for " + std::to_string(timeouts_.read.count()) + " ms"
             : "nothing arrived for " + std::to_string(timeouts_.read.count()) + " ms");
    return;
  }
  if (paused_) last_read_ = Clock::now();
  arm_read_timer();
}

void UpstreamCall::detach() {
  http::Reactor& reactor = pool_.reactor();
  if (connect_timer_ != 0) reactor.cancel_call(connect_timer_);
  if (read_timer_ != 0) reactor.cancel_call(read_timer_);
  connect_timer_ = 0;
  read_timer_ = 0;
  connecting_ = false;
  connection_.reset();
}

}  // namespace gpumod::http
