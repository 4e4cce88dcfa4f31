// A raw HTTP/1.1 client over one TCP connection to 127.0.0.1, for tests that must send bytes
// no ordinary client would (bad framing, control bytes, invalid UTF-8) and read the answer as
// it came. Every read gives up after kRawDeadline.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <optional>
#include <stdexcept>
#include <string>

namespace gpumod::testing {

inline constexpr std::chrono::milliseconds kRawDeadline{20000};  // only a broken server takes this long

struct Reply {
  int status = 0;
  std::string head;
  std::string body;
};

// A raw TCP client that speaks just enough HTTP/1.1 to read answers.
class Raw {
 public:
  explicit Raw(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      throw std::runtime_error("connect failed");
    }
  }
  ~Raw() { close(); }
  Raw(const Raw&) = delete;
  Raw& operator=(const Raw&) = delete;

  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  bool send(const std::string& data) const {
    return ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(data.size());
  }
  // Reads more bytes (false on EOF, error or the deadline).
  bool fill() {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(kRawDeadline.count())) <= 0) return false;
    char buf[4096];
    const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n <= 0) return false;
    buf_.append(buf, static_cast<std::size_t>(n));
    return true;
  }
  // True when the server closed the connection (after what is buffered).
  bool closed_by_server() {
    while (fill()) {
    }
    return true;
  }
  std::optional<std::string> line() {
    for (;;) {
      const auto nl = buf_.find("\r\n");
      if (nl != std::string::npos) {
        std::string l = buf_.substr(0, nl);
        buf_.erase(0, nl + 2);
        return l;
      }
      if (!fill()) return std::nullopt;
    }
  }
  std::optional<std::string> take(std::size_t n) {
    while (buf_.size() < n) {
      if (!fill()) return std::nullopt;
    }
    std::string out = buf_.substr(0, n);
    buf_.erase(0, n);
    return out;
  }
  // The status line and header fields of an answer whose body is read on by next_chunk()
  // (a stream); nullopt when the connection ended first.
  std::optional<Reply> head() {
    Reply r;
    auto status_line = line();
    if (!status_line) return std::nullopt;
    r.status = std::stoi(status_line->substr(9, 3));
    for (;;) {
      auto l = line();
      if (!l) return std::nullopt;
      if (l->empty()) return r;
      r.head += *l + "\n";
    }
  }
  // The next chunk of a chunked body; "" for the last one, nullopt when the connection ended.
  std::optional<std::string> next_chunk() {
    auto size_line = line();
    if (!size_line) return std::nullopt;
    const std::size_t n = std::stoul(*size_line, nullptr, 16);
    if (n == 0) {
      line();
      return std::string();
    }
    auto data = take(n);
    if (!data || !line()) return std::nullopt;
    return data;
  }
  // One answer (skipping "100 Continue"); nullopt when the connection ended first.
  std::optional<Reply> reply() {
    for (;;) {
      Reply r;
      auto status_line = line();
      if (!status_line) return std::nullopt;
      r.status = std::stoi(status_line->substr(9, 3));
      std::optional<std::size_t> length;
      bool chunked = false;
      for (;;) {
        auto l = line();
        if (!l) return std::nullopt;
        if (l->empty()) break;
        r.head += *l + "\n";
        if (l->rfind("Content-Length: ", 0) == 0) length = std::stoul(l->substr(16));
        if (*l == "Transfer-Encoding: chunked") chunked = true;
      }
      if (r.status == 100) continue;
      if (chunked) {
        for (;;) {
          auto size_line = line();
          if (!size_line) return std::nullopt;
          const std::size_t n = std::stoul(*size_line, nullptr, 16);
          if (n == 0) {
            line();
            break;
          }
          auto data = take(n);
          if (!data) return std::nullopt;
          r.body += *data;
          line();
        }
      } else if (length) {
        auto data = take(*length);
        if (!data) return std::nullopt;
        r.body = *data;
      }
      return r;
    }
  }
  [[nodiscard]] int fd() const { return fd_; }

 private:
  int fd_ = -1;
  std::string buf_;
};

}  // namespace gpumod::testing
