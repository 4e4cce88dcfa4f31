// libFuzzer target: the strict request parser (http/request_parser.hpp) on any bytes. The
// first byte picks the piece size the bytes arrive in; the rest is the wire. Checks, besides
// the sanitizers: every request it takes is well-formed (method token, path, UTF-8 headers
// without control bytes), every refusal has a status it documents and a printable reason, and
// the result does not depend on how the bytes were split (whole vs pieces).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "http/request_parser.hpp"
#include "http/syntax.hpp"

namespace {

using gpumod::http::RequestLimits;
using gpumod::http::RequestParser;

void check(bool ok) {
  if (!ok) std::abort();
}

// What a parse of the whole wire produced: each request's summary, then the refusal or "".
std::vector<std::string> run(std::string_view wire, std::size_t step) {
  RequestLimits limits;
  limits.max_line_bytes = 512;
  limits.max_header_bytes = 2048;
  limits.max_header_count = 16;
  limits.max_body_bytes = 4096;
  RequestParser p(limits);
  std::vector<std::string> out;
  std::string buffer;
  std::size_t consumed = 0;
  for (std::size_t at = 0; at < wire.size();) {
    const std::size_t n = std::min(step, wire.size() - at);
    buffer.append(wire.substr(at, n));
    at += n;
    for (;;) {
      std::string_view rest(buffer.data() + consumed, buffer.size() - consumed);
      const std::size_t before = rest.size();
      const auto r = p.parse(rest);
      consumed += before - rest.size();
      if (r == RequestParser::Result::need_more) break;
      if (r == RequestParser::Result::failed) {
        const int s = p.status();
        check(s == 400 || s == 413 || s == 431 || s == 501 || s == 505);
        check(!p.error().empty());
        for (const char c : p.error())
          check(static_cast<unsigned char>(c) >= 0x20 && static_cast<unsigned char>(c) < 0x7f);
        out.push_back("failed " + std::to_string(s));
        return out;
      }
      const auto& req = p.request();
      check(gpumod::http::is_token(req.method));
      check(!req.path.empty() && (req.path.front() == '/' || req.path == "*"));
      check(gpumod::http::valid_utf8(req.path));
      check(req.body.size() <= limits.max_body_bytes);
      std::string summary = req.method + " " + req.path + " " + std::to_string(req.body.size());
      for (const auto& [k, v] : req.headers) {
        check(gpumod::http::is_token(k));
        check(gpumod::http::valid_utf8(v));
        for (const char c : v) check(!gpumod::http::is_bad_text_char(c));
        summary += " " + k + "=" + v;
      }
      summary += " " + req.body;
      out.push_back(std::move(summary));
      p.reset();
    }
  }
  out.emplace_back("");
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view wire(reinterpret_cast<const char*>(data) + 1, size - 1);
  const std::size_t step = 1 + data[0] % 32;
  const auto whole = run(wire, wire.size() + 1);
  const auto pieces = run(wire, step);
  if (whole != pieces) {
    std::fprintf(stderr, "whole and pieces of %zu bytes differ:\n", step);
    for (const auto& w : whole) std::fprintf(stderr, "  whole:  %s\n", w.c_str());
    for (const auto& p : pieces) std::fprintf(stderr, "  pieces: %s\n", p.c_str());
    std::abort();
  }
  return 0;
}
