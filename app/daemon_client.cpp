#include "app/daemon_client.hpp"

#include <httplib.h>

#include <cctype>

namespace gpumod::app {

using nlohmann::json;

namespace {

std::string unreachable(const std::string& url, httplib::Error error) {
  return "cannot reach the daemon at " + url + " (" + httplib::to_string(error) +
         "); is `gpumod serve` running? (set --url or GPUMOD_URL)";
}

}  // namespace

Result<Reply> DaemonClient::call(const std::string& method, const std::string& path, const std::string& body,
                                 std::chrono::seconds read_timeout) const {
  httplib::Client client(url_);
  client.set_connection_timeout(std::chrono::seconds(5));
  client.set_read_timeout(read_timeout);
  if (token_) client.set_bearer_token_auth(*token_);
  httplib::Result result = method == "GET"      ? client.Get(path)
                           : method == "DELETE" ? client.Delete(path)
                                                : client.Post(path, body, "application/json");
  if (!result) return make_error(unreachable(url_, result.error()));
  Reply reply;
  reply.status = result->status;
  reply.text = result->body;
  if (result->get_header_value("Content-Type").find("json") != std::string::npos) {
    try {
      reply.body = json::parse(result->body);
    } catch (const json::parse_error&) {
      reply.body = json();
    }
  }
  return reply;
}

Result<Reply> DaemonClient::stream(const std::string& path,
                                   const std::function<bool(std::string_view data)>& on_data) const {
  httplib::Client client(url_);
  client.set_connection_timeout(std::chrono::seconds(5));
  // The daemon writes at least every 15 s on an event stream; a log follower may be quiet for
  // longer, so a read does not time out.
  client.set_read_timeout(std::chrono::hours(24 * 365));
  if (token_) client.set_bearer_token_auth(*token_);
  Reply reply;
  bool stopped = false;
  httplib::Result result = client.Get(
      path,
      [&](const httplib::Response& r) {
        reply.status = r.status;
        return true;
      },
      [&](const char* data, std::size_t len) {
        if (reply.status != 200) {
          reply.text.append(data, len);
          return true;
        }
        if (!on_data(std::string_view(data, len))) stopped = true;
        return !stopped;
      });
  if (!result && !stopped && reply.status == 0) return make_error(unreachable(url_, result.error()));
  if (reply.status != 200) {
    try {
      reply.body = json::parse(reply.text);
    } catch (const json::parse_error&) {
      reply.body = json();
    }
  }
  return reply;
}

Result<Reply> DaemonClient::events(
    const std::string& path,
    const std::function<bool(const std::string& kind, const std::string& data)>& on_event) const {
  std::string pending;  // a frame not yet complete
  return stream(path, [&](std::string_view data) {
    pending.append(data);
    for (std::size_t end; (end = pending.find("\n\n")) != std::string::npos;) {
      const std::string frame = pending.substr(0, end);
      pending.erase(0, end + 2);
      std::string kind, body;
      for (std::size_t begin = 0; begin < frame.size();) {
        std::size_t nl = frame.find('\n', begin);
        if (nl == std::string::npos) nl = frame.size();
        const std::string_view line(frame.data() + begin, nl - begin);
        if (line.rfind("event: ", 0) == 0) kind = line.substr(7);
        if (line.rfind("data: ", 0) == 0) body += line.substr(6);
        begin = nl + 1;
      }
      if (!body.empty() && !on_event(kind, body)) return false;
    }
    return true;
  });
}

Result<Reply> DaemonClient::follow_request(
    const std::string& request_id, std::chrono::steady_clock::time_point give_up,
    const std::function<void(const std::string& state, double elapsed_s)>& on_state) const {
  const auto started = std::chrono::steady_clock::now();
  for (;;) {
    auto info = call("GET", "/requests/" + percent_encode(request_id));
    if (!info || info->status != 200) return info;
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    on_state(info->body.value("status", std::string("-")), elapsed);
    if (info->body.contains("outcome") && info->body["outcome"].is_object()) return info;
    if (std::chrono::steady_clock::now() > give_up) return info;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

std::string DaemonClient::percent_encode(const std::string& s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 0xF]);
    }
  }
  return out;
}

std::string DaemonClient::error_message(const Reply& reply) {
  if (reply.body.is_object() && reply.body.contains("error") && reply.body["error"].is_object()) {
    const json& e = reply.body["error"];
    if (e.contains("message") && e["message"].is_string()) return e["message"].get<std::string>();
  }
  return reply.text;
}

}  // namespace gpumod::app
