// HttpServer, the HTTP loop's sockets: accepting, reading and parsing, writing, lingering close and
// idle sweeps (server_loop.hpp lists the parts).
#include "http/server_loop.hpp"

#include <spdlog/spdlog.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>

namespace gpumod::http {

// ---------------------------------------------------------------- sockets
void HttpServer::Loop::close_connection(Connection& c) {
  if (c.closed) return;
  c.closed = true;
  // Leave the epoll set explicitly: close() alone removes the registration only when no other
  // descriptor refers to the socket, and a service forked at this moment holds copies of all
  // of ours until its exec. The registration then outlived the Connection, and a later event
  // handed the loop a freed pointer (a heap-use-after-free, seen under ASan with a start
  // racing a client's close).
  ::epoll_ctl(epoll_fd, EPOLL_CTL_DEL, c.fd, nullptr);
  ::close(c.fd);
  if (c.parked) lose_parked(c);
  auto it = connections.find(&c);
  if (it != connections.end()) {
    graveyard.push_back(std::move(it->second));
    connections.erase(it);
  }
}

void HttpServer::Loop::flush(Connection& c, Clock::time_point now) {
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

bool HttpServer::Loop::read_input(Connection& c, Clock::time_point now) {
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

void HttpServer::Loop::service(Connection& c, Clock::time_point now) {
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

void HttpServer::Loop::accept_all(Clock::time_point now) {
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

void HttpServer::Loop::take_returned(Clock::time_point now) {
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

void HttpServer::Loop::sweep(Clock::time_point now) {
  std::vector<Connection*> expired;
  for (auto& [ptr, conn] : connections) {
    if (conn->in_worker || conn->parked) continue;
    if (conn->draining ? now >= conn->drain_deadline : now - conn->last_activity >= opts.idle_timeout) {
      expired.push_back(ptr);
    }
  }
  for (Connection* c : expired) close_connection(*c);
}

}  // namespace gpumod::http
