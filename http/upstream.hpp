// The /v1 proxy's calls to model servers, run on the HTTP server's loop thread
// (http/async.hpp): a non-blocking connect, the request written as one buffer, the answer
// read through ResponseParser as it arrives, keep-alive connections reused per endpoint, and
// connect/read timeouts as loop timers. Everything happens on the one thread that read the
// client's request, so a proxied call pays for no thread hand-off (bench/README.md "HTTP").
//
// Reuse and its one retry: an idle pooled connection stays watched, so a server that closes it
// is noticed and the connection dropped before anyone takes it. That leaves the race where the
// server closes it just as a request goes out. Such a call is sent again once, on a new
// connection, only when the connection had served a call before, not one byte of an answer had
// arrived, and the failure is a write error or an end of the connection within the first
// second. A server that read the request and died without answering could in theory see it
// twice; a dead server refuses the new connection anyway, so that costs at most one more 502.
// Read timeouts and answers of any status are never retried.
//
// Loop thread only, all of it.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.hpp"
#include "http/async.hpp"
#include "http/message.hpp"
#include "http/response_parser.hpp"

namespace gpumod::http {

// Where a service answers: "http://127.0.0.1:8080" as the scheduler reports endpoints.
struct UpstreamAddress {
  std::string host;  // numeric IPv4 or IPv6 ("::1" without brackets)
  int port = 0;
};
Result<UpstreamAddress> parse_endpoint(std::string_view endpoint);

class UpstreamConnection;

// Idle keep-alive connections per address. Loop thread only.
class UpstreamPool {
 public:
  static constexpr std::size_t kMaxIdlePerAddress = 16;

  explicit UpstreamPool(http::Reactor& reactor);
  ~UpstreamPool();
  UpstreamPool(const UpstreamPool&) = delete;
  UpstreamPool& operator=(const UpstreamPool&) = delete;

  // An idle connection to `address`, or null.
  std::unique_ptr<UpstreamConnection> take(const UpstreamAddress& address);
  // Keeps a connection whose last answer ended cleanly (dropped when the pool is full).
  void give_back(std::unique_ptr<UpstreamConnection> connection);
  // Drops every idle connection.
  void clear();
  [[nodiscard]] std::size_t idle() const;
  [[nodiscard]] http::Reactor& reactor() { return reactor_; }

 private:
  void drop(UpstreamConnection* connection);

  http::Reactor& reactor_;
  std::map<std::string, std::vector<std::unique_ptr<UpstreamConnection>>> idle_;
};

enum class UpstreamFailure {
  none,
  connect,          // refused, unreachable
  connect_timeout,  // no connection within the connect timeout
  write,            // the connection broke while the request went out
  read,             // the connection ended or broke before the answer was complete
  read_timeout,     // no progress for the read timeout (the request not taken, or no answer)
  protocol,         // the answer is not valid HTTP/1.1
};
const char* to_string(UpstreamFailure failure);

// One request to a model server and its answer.
class UpstreamCall : public std::enable_shared_from_this<UpstreamCall> {
 public:
  struct Request {
    UpstreamAddress address;
    std::string method = "POST";
    std::string path;
    http::Headers headers;  // Host and Content-Length are added
    std::string body;
  };
  struct Timeouts {
    std::chrono::milliseconds connect{5000};
    // Longest silence: while the request goes out (the service takes none of it), while waiting
    // for the answer and while reading it.
    std::chrono::milliseconds read{600000};
  };
  // The call's events, in order: `head` once, `body` zero or more times, `end` once. None of
  // them comes after cancel().
  struct Events {
    std::function<void(const http::ResponseHead&)> head;
    // De-chunked body bytes as they arrive; the handler may move them out.
    std::function<void(std::string& data)> body;
    // UpstreamFailure::none: the answer is complete. Otherwise `detail` says what happened.
    std::function<void(UpstreamFailure failure, const std::string& detail)> end;
  };

  // Starts the call; its events come on later loop rounds (never from inside start()).
  static std::shared_ptr<UpstreamCall> start(UpstreamPool& pool, Request request, Timeouts timeouts,
                                             Events events);

  ~UpstreamCall();
  UpstreamCall(const UpstreamCall&) = delete;
  UpstreamCall& operator=(const UpstreamCall&) = delete;

  // Stops reading the answer (the client is slow); the server is held back by TCP.
  void pause();
  void resume();
  // Ends the call at once: no more events; the connection is closed, not reused.
  void cancel();

  // Bytes of the answer received so far (status line and headers included).
  [[nodiscard]] std::uint64_t received_bytes() const { return received_; }

 private:
  UpstreamCall(UpstreamPool& pool, Request request, Timeouts timeouts, Events events);

  void begin();
  void open_connection(bool fresh);
  void on_events(std::uint32_t events);
  void on_connected();
  void write_request();
  void read_answer();
  void complete();
  void fail(UpstreamFailure failure, const std::string& detail);
  void arm_read_timer();
  void on_read_timer();
  void detach();

  UpstreamPool& pool_;
  Request request_;
  Timeouts timeouts_;
  Events events_;
  std::string wire_;  // the request as sent
  std::size_t written_ = 0;
  std::unique_ptr<UpstreamConnection> connection_;
  bool reused_ = false;
  bool connecting_ = false;
  bool retried_ = false;
  bool paused_ = false;
  bool readable_ = false;
  bool hangup_ = false;  // the socket reported a hang-up: read to the end, whatever its size
  bool finished_ = false;
  bool head_sent_ = false;
  http::ResponseParser parser_;
  std::string body_;
  std::uint64_t received_ = 0;
  std::chrono::steady_clock::time_point started_{};
  std::chrono::steady_clock::time_point last_read_{};  // the last sign of life (a send or a read)
  http::Reactor::Id connect_timer_ = 0;
  http::Reactor::Id read_timer_ = 0;
};

}  // namespace gpumod::http
