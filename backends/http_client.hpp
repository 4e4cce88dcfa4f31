// A small HTTP/1.1 client for talking to model servers on 127.0.0.1: every call has a
// connect/read/write timeout, and a failed call says whether nothing was listening
// (connection refused), the server was too slow, or something else went wrong.
// A fresh connection per call, so one instance may be used from several threads.
#pragma once

#include <chrono>
#include <optional>
#include <string>

namespace gpumod::backends::http {

enum class Failure {
  none,     // a response arrived (any status)
  refused,  // could not connect: nothing listening (yet)
  timeout,  // connected but no complete answer in time
  other     // anything else (read/write error, ...)
};

struct Reply {
  Failure failure = Failure::none;
  int status = 0;     // HTTP status when failure == none
  std::string body;   // response body when failure == none
  std::string error;  // what went wrong when failure != none
  [[nodiscard]] bool answered() const { return failure == Failure::none; }
  [[nodiscard]] bool ok() const { return answered() && status >= 200 && status < 300; }
};

// Where a request goes: "http://HOST:PORT/path" or a bare "/path" on the default host/port.
struct Target {
  std::string host = "127.0.0.1";
  int port = 0;
  std::string path = "/";
};
// A bare path is taken relative to default_port on 127.0.0.1.
std::optional<Target> parse_target(const std::string& url_or_path, int default_port);

class Client {
 public:
  Client(std::string host, int port, std::chrono::milliseconds timeout);

  Reply get(const std::string& path) const;
  Reply post(const std::string& path, const std::string& body,
             const std::string& content_type = "application/json") const;

  // "http://host:port/path", for error messages.
  [[nodiscard]] std::string url(const std::string& path) const;
  [[nodiscard]] std::chrono::milliseconds timeout() const { return timeout_; }

 private:
  std::string host_;
  int port_;
  std::chrono::milliseconds timeout_;
};

// The first `max` characters of a body, on one line, for an error message.
std::string excerpt(const std::string& body, std::size_t max = 200);
// "GET http://...: HTTP 503: <excerpt>" or "GET http://...: connection refused" etc.
std::string describe(const std::string& method, const std::string& url, const Reply& reply);

}  // namespace gpumod::backends::http
