// Value types of gpumod's HTTP/1.1 server (http/server.hpp): one request as parsed off the
// wire and the response a handler fills in. Plain data plus small lookups; no I/O here.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace gpumod::http {

// ASCII case-insensitive equality (header names, "chunked", "close").
bool iequals(std::string_view a, std::string_view b);

// Header fields in arrival order. A request carries a handful, so a linear scan beats a map.
class Headers {
 public:
  // The first value of `name` (case-insensitive), or "" when absent.
  [[nodiscard]] const std::string& get(std::string_view name) const;
  [[nodiscard]] bool has(std::string_view name) const;
  // Replaces every field called `name` by one with `value`.
  void set(std::string_view name, std::string_view value);
  void add(std::string name, std::string value) { fields_.emplace_back(std::move(name), std::move(value)); }
  void erase(std::string_view name);
  [[nodiscard]] std::size_t size() const { return fields_.size(); }
  [[nodiscard]] auto begin() const { return fields_.begin(); }
  [[nodiscard]] auto end() const { return fields_.end(); }

 private:
  std::vector<std::pair<std::string, std::string>> fields_;
};

struct HttpRequest {
  std::string method;                        // "GET", "POST", ... as sent (methods are case-sensitive)
  std::string target;                        // the request target as sent ("/plan?model=x")
  std::string path;                          // percent-decoded path, without the query
  std::map<std::string, std::string> query;  // decoded query parameters (last one wins)
  Headers headers;
  std::string body;                   // de-chunked
  std::vector<std::string> captures;  // the "{}" segments of the matched route, in order
  std::string remote_addr;            // peer IP address
  bool http10 = false;                // the client spoke HTTP/1.0

  [[nodiscard]] const std::string& header(std::string_view name) const { return headers.get(name); }
  [[nodiscard]] bool has_header(std::string_view name) const { return headers.has(name); }
  [[nodiscard]] bool has_param(const std::string& name) const { return query.count(name) != 0; }
  [[nodiscard]] std::string param(const std::string& name) const {
    auto it = query.find(name);
    return it == query.end() ? std::string() : it->second;
  }
};

class Responder;  // http/async.hpp

// Where a streaming response's producer writes its chunks (see HttpResponse::stream).
class StreamSink {
 public:
  virtual ~StreamSink() = default;
  // Sends one chunk now (blocking until the kernel took it). False once the client is gone,
  // a write timed out or the server is stopping: the producer should give up then.
  virtual bool write(std::string_view data) = 0;
  // True when the client has hung up or the server is stopping; cheap (one poll()), meant for
  // producers that wait a while between chunks.
  virtual bool cancelled() = 0;
};

struct HttpResponse {
  int status = 200;
  Headers headers;  // Content-Length, Transfer-Encoding and Connection are the server's
  std::string body;
  std::string content_type;  // sent as Content-Type when not empty

  // Chunked response: when set, `body` is ignored and the producer runs on a worker thread
  // after the status line and headers went out; it writes chunks to the sink and returns true
  // when the body is complete (the last chunk is sent, the connection stays usable) or false to
  // abort (the connection is closed, so the client sees a truncated body). It is destroyed
  // without running if the server stops first, so it must release what it holds in its
  // destructor.
  std::function<bool(StreamSink&)> stream;

  // Set by an inline handler that cannot finish without blocking: the server runs it on a
  // worker thread, with the same request, to complete this response (the fast path answers
  // inline and defers only when it has to wait).
  std::function<void(HttpRequest&, HttpResponse&)> deferred;

  // Set by an inline handler that answers later without holding any thread (http/async.hpp):
  // the server parks the connection and calls this on the loop thread with the Responder
  // through which the answer goes out.
  std::function<void(const std::shared_ptr<Responder>&)> async;

  void set_content(std::string content, std::string type) {
    body = std::move(content);
    content_type = std::move(type);
  }
  [[nodiscard]] const std::string& header(std::string_view name) const { return headers.get(name); }
  void set_header(std::string_view name, std::string_view value) { headers.set(name, value); }
};

// "OK", "Not Found", ... ("" for codes it does not know).
const char* reason_phrase(int status);

}  // namespace gpumod::http
