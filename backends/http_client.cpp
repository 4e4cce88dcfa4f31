#include "backends/http_client.hpp"

#include <httplib.h>

#include <exception>
#include <utility>

namespace gpumod::backends::http {

namespace {

Reply from_result(const httplib::Result& result, std::chrono::milliseconds timeout) {
  Reply reply;
  if (result) {
    reply.status = result->status;
    reply.body = result->body;
    return reply;
  }
  switch (result.error()) {
    case httplib::Error::Connection:
      reply.failure = Failure::refused;
      reply.error = "connection refused";
      break;
    case httplib::Error::ConnectionTimeout:
      reply.failure = Failure::timeout;
      reply.error = "connect timed out after " + std::to_string(timeout.count()) + " ms";
      break;
    case httplib::Error::Read:
      reply.failure = Failure::timeout;
      reply.error =
          "no complete answer within " + std::to_string(timeout.count()) + " ms (read failed or timed out)";
      break;
    default:
      reply.failure = Failure::other;
      reply.error = httplib::to_string(result.error());
      break;
  }
  return reply;
}

httplib::Client make(const std::string& host, int port, std::chrono::milliseconds timeout) {
  httplib::Client client(host, port);
  client.set_tcp_nodelay(true);
  const auto sec = static_cast<time_t>(timeout.count() / 1000);
  const auto usec = static_cast<time_t>((timeout.count() % 1000) * 1000);
  client.set_connection_timeout(sec, usec);
  client.set_read_timeout(sec, usec);
  client.set_write_timeout(sec, usec);
  client.set_keep_alive(false);
  return client;
}

}  // namespace

std::optional<Target> parse_target(const std::string& url_or_path, int default_port) {
  Target target;
  target.port = default_port;
  if (url_or_path.empty()) return std::nullopt;
  if (url_or_path.front() == '/') {
    target.path = url_or_path;
    return target;
  }
  const std::string scheme = "http://";
  if (url_or_path.rfind(scheme, 0) != 0) return std::nullopt;
  const std::string rest = url_or_path.substr(scheme.size());
  const auto slash = rest.find('/');
  const std::string authority = rest.substr(0, slash);
  target.path = slash == std::string::npos ? "/" : rest.substr(slash);
  const auto colon = authority.rfind(':');
  if (colon == std::string::npos) {
    target.host = authority;
    target.port = 80;
  } else {
    target.host = authority.substr(0, colon);
    try {
      target.port = std::stoi(authority.substr(colon + 1));
    } catch (const std::exception&) {
      return std::nullopt;
    }
  }
  if (target.host.empty() || target.port <= 0 || target.port > 65535) return std::nullopt;
  return target;
}

Client::Client(std::string host, int port, std::chrono::milliseconds timeout)
    : host_(std::move(host)), port_(port), timeout_(timeout) {}

Reply Client::get(const std::string& path) const {
  auto client = make(host_, port_, timeout_);
  return from_result(client.Get(path), timeout_);
}

Reply Client::post(const std::string& path, const std::string& body, const std::string& content_type) const {
  auto client = make(host_, port_, timeout_);
  return from_result(client.Post(path, body, content_type), timeout_);
}

std::string Client::url(const std::string& path) const {
  return "http://" + host_ + ":" + std::to_string(port_) + path;
}

std::string excerpt(const std::string& body, std::size_t max) {
  std::string out;
  out.reserve(std::min(body.size(), max));
  for (char c : body) {
    if (out.size() >= max) {
      out += "...";
      break;
    }
    out += (c == '\n' || c == '\r' || c == '\t') ? ' ' : c;
  }
  return out;
}

std::string describe(const std::string& method, const std::string& url, const Reply& reply) {
  std::string text = method + " " + url + ": ";
  if (!reply.answered()) return text + reply.error;
  text += "HTTP " + std::to_string(reply.status);
  if (!reply.body.empty()) text += ": " + excerpt(reply.body);
  return text;
}

}  // namespace gpumod::backends::http
