// A client of one streamed answer (GET /events, a followed log) for tests: sends the GET over a
// raw connection (raw_http.hpp), reads the head, then Server-Sent Events frames or plain text
// as they arrive. Every read gives up after kRawDeadline.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/support/raw_http.hpp"

namespace gpumod::testing {

// One SSE frame with data (comments are skipped).
struct Frame {
  std::string id, event;
  nlohmann::json data;
};

// A client of one stream: sends the GET, reads the head, then frames as they come.
class StreamClient {
 public:
  StreamClient(int port, const std::string& target, const std::string& extra_headers = "") : raw_(port) {
    raw_.send("GET " + target + " HTTP/1.1\r\nHost: t\r\n" + extra_headers + "\r\n");
    auto h = raw_.head();
    if (h) head_ = *h;
  }
  [[nodiscard]] const Reply& head() const { return head_; }
  // The rest of a non-streamed answer (an error).
  std::string body() {
    auto r = raw_.take(content_length());
    return r ? *r : "";
  }
  // Reads until `n` SSE frames (comments skipped) have come; false when the stream ended first.
  bool frames(std::size_t n, std::vector<Frame>& out) {
    while (out.size() < n) {
      const auto end = text_.find("\n\n");
      if (end == std::string::npos) {
        auto chunk = raw_.next_chunk();
        if (!chunk || chunk->empty()) return false;
        text_ += *chunk;
        continue;
      }
      const std::string frame = text_.substr(0, end);
      text_.erase(0, end + 2);
      Frame f;
      std::size_t begin = 0;
      bool any = false;
      while (begin < frame.size()) {
        std::size_t nl = frame.find('\n', begin);
        if (nl == std::string::npos) nl = frame.size();
        const std::string line = frame.substr(begin, nl - begin);
        begin = nl + 1;
        if (line.rfind("id: ", 0) == 0) f.id = line.substr(4);
        if (line.rfind("event: ", 0) == 0) f.event = line.substr(7);
        if (line.rfind("data: ", 0) == 0) {
          f.data = nlohmann::json::parse(line.substr(6));
          any = true;
        }
      }
      if (any) out.push_back(std::move(f));
    }
    return true;
  }
  // Reads plain text (a log stream) until it contains `part`.
  bool text_until(const std::string& part) {
    while (text_.find(part) == std::string::npos) {
      auto chunk = raw_.next_chunk();
      if (!chunk || chunk->empty()) return false;
      text_ += *chunk;
    }
    return true;
  }
  [[nodiscard]] const std::string& text() const { return text_; }
  Raw& raw() { return raw_; }

 private:
  std::size_t content_length() const {
    const auto at = head_.head.find("Content-Length: ");
    return at == std::string::npos ? 0 : std::stoul(head_.head.substr(at + 16));
  }
  Raw raw_;
  Reply head_;
  std::string text_;
};

}  // namespace gpumod::testing
