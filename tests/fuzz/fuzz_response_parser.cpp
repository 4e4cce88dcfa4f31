// libFuzzer target: the upstream response parser (http/response_parser.hpp) on any bytes.
// The first byte picks the piece size and whether the request was HEAD; the rest is what a
// model server sent, followed by the server closing the connection. Checks, besides the
// sanitizers: the outcome (head, body, done/failed, reusable) does not depend on the split, and
// a failure has a reason.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "http/response_parser.hpp"

namespace {

using gpumod::http::ResponseParser;

void check(bool ok) {
  if (!ok) std::abort();
}

std::string run(std::string_view wire, std::size_t step, bool head) {
  ResponseParser p(head);
  std::string body;
  ResponseParser::Result r = ResponseParser::Result::need_more;
  // Everything is fed, also after done: bytes past the response must count the same however
  // they arrive (they make the connection unusable).
  for (std::size_t at = 0; at < wire.size() && r != ResponseParser::Result::failed;) {
    const std::size_t n = std::min(step, wire.size() - at);
    r = p.feed(wire.substr(at, n), body);
    at += n;
  }
  if (r != ResponseParser::Result::failed) r = p.feed_eof();
  if (r == ResponseParser::Result::failed) {
    check(!p.error().empty());
    return "failed";
  }
  std::string out = std::to_string(static_cast<int>(r));
  if (p.head_ready()) {
    out += " " + std::to_string(p.head().status);
    for (const auto& [k, v] : p.head().headers) out += " " + k + "=" + v;
  }
  out += " body=" + body;
  if (r == ResponseParser::Result::done) out += p.reusable() ? " reusable" : " not-reusable";
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view wire(reinterpret_cast<const char*>(data) + 1, size - 1);
  const bool head = (data[0] & 0x80) != 0;
  const std::size_t step = 1 + data[0] % 32;
  const std::string whole = run(wire, wire.size() + 1, head);
  const std::string pieces = run(wire, step, head);
  check(whole == pieces);
  return 0;
}
