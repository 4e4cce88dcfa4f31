// The strict request parser (http/request_parser.hpp): every rule it enforces, one table
// row each, fed whole and one byte at a time (the server loop hands it whatever recv() got), and
// the requests it must take as they are.
#include "http/request_parser.hpp"

#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>

#include "http/syntax.hpp"

namespace gpumod::http {
namespace {

using namespace std::string_literals;

struct Parsed {
  RequestParser::Result result = RequestParser::Result::need_more;
  int status = 0;
  std::string error;
  HttpRequest req;
  std::size_t consumed = 0;  // bytes of the input the request took
};

RequestLimits small_limits() {
  RequestLimits l;
  l.max_line_bytes = 256;
  l.max_header_bytes = 1024;
  l.max_header_count = 8;
  l.max_body_bytes = 64;
  return l;
}

// Feeds `wire` in pieces of `step` bytes as a connection buffer would hold them: the parser
// sees everything not yet consumed, and more after each recv().
Parsed feed(std::string_view wire, std::size_t step, RequestLimits limits = small_limits()) {
  RequestParser p(limits);
  Parsed out;
  std::string buffer;
  std::size_t consumed = 0;
  for (std::size_t at = 0; at < wire.size() || step == 0;) {
    const std::size_t n = step == 0 ? wire.size() : std::min(step, wire.size() - at);
    buffer.append(wire.substr(at, n));
    at += n;
    std::string_view rest(buffer.data() + consumed, buffer.size() - consumed);
    const std::size_t before = rest.size();
    out.result = p.parse(rest);
    consumed += before - rest.size();
    if (out.result != RequestParser::Result::need_more || step == 0) break;
  }
  out.status = p.status();
  out.error = p.error();
  out.req = p.request();
  out.consumed = consumed;
  return out;
}

struct Refusal {
  const char* rule;
  std::string wire;
  int status;
  const char* says;  // a piece of the error message
};

std::string get(std::string_view headers) {
  return "GET /status HTTP/1.1\r\n" + std::string(headers) + "\r\n";
}

std::string post(std::string_view headers, std::string_view body) {
  return "POST /request HTTP/1.1\r\nHost: h\r\n" + std::string(headers) + "\r\n" + std::string(body);
}

std::vector<Refusal> refusals() {
  using std::string;
  using namespace std::string_literals;
  return {
      // control characters in field names and values
      {"NUL in a value", get("Host: h\r\nAccept: a\0b\r\n"s), 400, "control byte"},
      {"bare CR in a value", get("Host: h\r\nAccept: a\rb\r\n"), 400, "bare CR"},
      {"bare LF ends a header line", get("Host: h\nAccept: a\r\n"), 400, "bare LF"},
      {"bare LF ends the request line", "GET / HTTP/1.1\nHost: h\r\n\r\n", 400, "CR LF"},
      {"DEL in a value", get("Host: h\r\nAccept: a\x7f\r\n"), 400, "control byte"},
      {"other CTL in a value", get("Host: h\r\nAccept: a\x01\r\n"), 400, "control byte"},
      {"CTL in a name",
       get("Host: h\r\nAc\x01"
           "cept: a\r\n"),
       400, "invalid header name"},
      {"invalid UTF-8 in a value", get("Host: h\r\nX-Name: \xff\xfe\r\n"), 400, "UTF-8"},
      {"overlong UTF-8 in a value", get("Host: h\r\nX-Name: \xc0\xaf\r\n"), 400, "UTF-8"},
      // Host
      {"no Host in HTTP/1.1", get("Accept: */*\r\n"), 400, "without a Host"},
      {"two Hosts", get("Host: a\r\nHost: b\r\n"), 400, "more than one Host"},
      {"a Host with a path", get("Host: a/b\r\n"), 400, "invalid Host"},
      {"a Host with userinfo", get("Host: u@a\r\n"), 400, "invalid Host"},
      // framing ambiguities
      {"Content-Length with Transfer-Encoding",
       post("Content-Length: 3\r\nTransfer-Encoding: chunked\r\n", "3\r\nabc\r\n0\r\n\r\n"), 400,
       "both Content-Length and Transfer-Encoding"},
      {"two equal Content-Lengths", post("Content-Length: 2\r\nContent-Length: 2\r\n", "ab"), 400,
       "more than one Content-Length"},
      {"conflicting Content-Lengths", post("Content-Length: 2\r\nContent-Length: 3\r\n", "abc"), 400,
       "more than one Content-Length"},
      {"signed Content-Length +", post("Content-Length: +2\r\n", "ab"), 400, "invalid Content-Length"},
      {"signed Content-Length -", post("Content-Length: -2\r\n", "ab"), 400, "invalid Content-Length"},
      {"listed Content-Length", post("Content-Length: 2, 2\r\n", "ab"), 400, "invalid Content-Length"},
      {"overflowing Content-Length", post("Content-Length: 18446744073709551616\r\n", ""), 400,
       "invalid Content-Length"},
      {"empty Content-Length", post("Content-Length: \r\n", ""), 400, "invalid Content-Length"},
      {"hex Content-Length", post("Content-Length: 0x2\r\n", "ab"), 400, "invalid Content-Length"},
      {"Transfer-Encoding not chunked", post("Transfer-Encoding: gzip\r\n", ""), 400,
       "final coding is not chunked"},
      {"chunked not last", post("Transfer-Encoding: chunked, gzip\r\n", ""), 400,
       "final coding is not chunked"},
      {"chunked twice", post("Transfer-Encoding: chunked, chunked\r\n", ""), 400, "more than once"},
      {"chunked twice across fields",
       post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", ""), 400, "more than once"},
      {"another coding before chunked", post("Transfer-Encoding: gzip, chunked\r\n", ""), 501,
       "not supported"},
      {"a non-token coding", post("Transfer-Encoding: \"chunked\"\r\n", ""), 400, "invalid transfer coding"},
      {"Transfer-Encoding in HTTP/1.0",
       "POST /request HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "HTTP/1.0"},
      {"obs-fold", get("Host: h\r\nAccept: a\r\n b\r\n"), 400, "folding"},
      {"whitespace before the colon", get("Host : h\r\n"), 400, "whitespace between"},
      {"tab before the colon", get("Host\t: h\r\n"), 400, "whitespace between"},
      {"a field line without a colon", get("Host: h\r\nnonsense\r\n"), 400, "no colon"},
      {"an empty field name", get("Host: h\r\n: v\r\n"), 400, "invalid header name"},
      // chunked bodies
      {"a chunk size that is not hex", post("Transfer-Encoding: chunked\r\n", "zz\r\n"), 400, "chunk size"},
      {"an overflowing chunk size", post("Transfer-Encoding: chunked\r\n", "10000000000000000\r\n"), 400,
       "chunk size"},
      {"whitespace before a chunk size", post("Transfer-Encoding: chunked\r\n", " 3\r\nabc\r\n0\r\n\r\n"),
       400, "chunk size"},
      {"an empty chunk size", post("Transfer-Encoding: chunked\r\n", "\r\n"), 400, "chunk size"},
      {"chunk data longer than its size", post("Transfer-Encoding: chunked\r\n", "3\r\nabcd\r\n0\r\n\r\n"),
       400, "longer than its size"},
      {"a bare LF after a chunk size", post("Transfer-Encoding: chunked\r\n", "3\nabc\r\n0\r\n\r\n"), 400,
       "CR LF"},
      {"a bare LF after chunk data", post("Transfer-Encoding: chunked\r\n", "3\r\nabc\n0\r\n\r\n"), 400,
       "longer than its size"},
      {"a malformed trailer", post("Transfer-Encoding: chunked\r\n", "0\r\nno colon here\r\n\r\n"), 400,
       "malformed trailer"},
      {"a trailer with NUL", post("Transfer-Encoding: chunked\r\n", "0\r\nX-T: a\0b\r\n\r\n"s), 400,
       "malformed trailer"},
      {"a trailer ending in a bare LF", post("Transfer-Encoding: chunked\r\n", "0\r\nX-T: a\n\r\n"), 400,
       "CR LF"},
      {"a chunk extension with a CTL", post("Transfer-Encoding: chunked\r\n", "3;a=\x01\r\nabc\r\n0\r\n\r\n"),
       400, "chunk extension"},
      {"a chunk extension without a name", post("Transfer-Encoding: chunked\r\n", "3;=x\r\nabc\r\n0\r\n\r\n"),
       400, "chunk extension"},
      // request line and target
      {"an invalid method token", "GE(T / HTTP/1.1\r\nHost: h\r\n\r\n", 400, "invalid method"},
      {"an empty method", " / HTTP/1.1\r\nHost: h\r\n\r\n", 400, "invalid method"},
      {"two spaces in the request line", "GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400, "malformed request line"},
      {"a trailing space in the request line", "GET / HTTP/1.1 \r\nHost: h\r\n\r\n", 400,
       "malformed request line"},
      {"no version", "GET /\r\nHost: h\r\n\r\n", 400, "malformed request line"},
      {"a lowercase version", "GET / http/1.1\r\nHost: h\r\n\r\n", 400, "invalid HTTP version"},
      {"HTTP/2.0", "GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505, "not supported"},
      {"a target without a slash", "GET status HTTP/1.1\r\nHost: h\r\n\r\n", 400, "not a path"},
      {"a target with a fragment", "GET /status#x HTTP/1.1\r\nHost: h\r\n\r\n", 400,
       "invalid request target"},
      {"a target with raw non-ASCII", "GET /\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n", 400,
       "invalid request target"},
      {"a target with DEL", "GET /a\x7f HTTP/1.1\r\nHost: h\r\n\r\n", 400, "invalid request target"},
      {"a broken escape", "GET /a%zz HTTP/1.1\r\nHost: h\r\n\r\n", 400, "percent escape"},
      {"a truncated escape", "GET /a%2 HTTP/1.1\r\nHost: h\r\n\r\n", 400, "percent escape"},
      {"an escaped NUL in the path", "GET /a%00 HTTP/1.1\r\nHost: h\r\n\r\n", 400, "control bytes"},
      {"escaped invalid UTF-8 in the path", "GET /services/%ff HTTP/1.1\r\nHost: h\r\n\r\n", 400, "UTF-8"},
      {"escaped invalid UTF-8 in the query", "GET /plan?model=%ff HTTP/1.1\r\nHost: h\r\n\r\n", 400, "UTF-8"},
      {"an escaped NUL in the query", "GET /plan?model=a%00 HTTP/1.1\r\nHost: h\r\n\r\n", 400, "NUL"},
      {"a broken escape in the query", "GET /plan?model=%g1 HTTP/1.1\r\nHost: h\r\n\r\n", 400,
       "percent escape"},
      // limits
      {"a body over the limit by Content-Length", post("Content-Length: 65\r\n", ""), 413, "over the limit"},
      {"a chunked body over the limit", post("Transfer-Encoding: chunked\r\n", "41\r\n"), 413, "larger than"},
      {"too many fields", get("Host: h\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\nF: 1\r\nG: 1\r\nH: 1\r\n"),
       431, "header fields"},
      {"a header section too large", get("Host: h\r\nX-Big: " + string(1100, 'a') + "\r\n"), 431,
       "larger than"},
      {"a request line too long", "GET /" + string(300, 'a') + " HTTP/1.1\r\nHost: h\r\n\r\n", 400,
       "request line longer"},
  };
}

TEST(HttpRequestParser, RefusesEveryMalformedOrAmbiguousRequestWholeAndBytewise) {
  for (const auto& r : refusals()) {
    for (const std::size_t step : {std::size_t{0}, std::size_t{1}, std::size_t{7}}) {
      SCOPED_TRACE(std::string(r.rule) + " (step " + std::to_string(step) + ")");
      const Parsed p = feed(r.wire, step);
      ASSERT_EQ(p.result, RequestParser::Result::failed) << "error: " << p.error;
      EXPECT_EQ(p.status, r.status) << p.error;
      EXPECT_NE(p.error.find(r.says), std::string::npos) << p.error;
      // Whatever it quotes of the input is escaped: printable ASCII only.
      for (const char c : p.error) {
        EXPECT_TRUE(static_cast<unsigned char>(c) >= 0x20 && static_cast<unsigned char>(c) < 0x7f) << p.error;
      }
    }
  }
}

TEST(HttpRequestParser, TakesWellFormedRequestsAsTheyAre) {
  struct Accepted {
    const char* what;
    std::string wire;
    std::string method, path, body;
  };
  const std::vector<Accepted> cases = {
      {"a GET", get("Host: 127.0.0.1:7979\r\nAccept: */*\r\n"), "GET", "/status", ""},
      {"HTTP/1.0 without Host", "GET /healthz HTTP/1.0\r\n\r\n", "GET", "/healthz", ""},
      {"blank lines before the request line", "\r\n\r\n" + get("Host: h\r\n"), "GET", "/status", ""},
      {"a Content-Length body", post("Content-Length: 5\r\n", "hello"), "POST", "/request", "hello"},
      {"Content-Length 0", post("Content-Length: 0\r\n", ""), "POST", "/request", ""},
      {"no framing: an empty body", post("", ""), "POST", "/request", ""},
      {"a chunked body with extensions and trailers",
       post("Transfer-Encoding: chunked\r\n",
            "3;name=v;q=\"x y\"\r\nabc\r\n2 ; ext\r\nde\r\n0\r\nX-Sum: 1\r\n\r\n"),
       "POST", "/request", "abcde"},
      {"chunked in any case, after empty list elements",
       post("Transfer-Encoding: , Chunked\r\n", "1\r\na\r\n0\r\n\r\n"), "POST", "/request", "a"},
      {"an absolute-form target", "GET http://h:1/v1/models?x=1 HTTP/1.1\r\nHost: h:1\r\n\r\n", "GET",
       "/v1/models", ""},
      {"an absolute-form target without a path", "GET http://h HTTP/1.1\r\nHost: h\r\n\r\n", "GET", "/", ""},
      {"an empty Host", get("Host:\r\n"), "GET", "/status", ""},
      {"an IPv6 Host", get("Host: [::1]:7979\r\n"), "GET", "/status", ""},
      {"UTF-8 in a value and an escaped path",
       "GET /a%20b%C3%A9 HTTP/1.1\r\nHost: h\r\nX-Name: caf\xc3\xa9\r\n\r\n", "GET", "/a b\xc3\xa9", ""},
      {"OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", "OPTIONS", "*", ""},
      {"an odd but valid method", "M-SEARCH /x HTTP/1.1\r\nHost: h\r\n\r\n", "M-SEARCH", "/x", ""},
      {"a value with HTAB and trailing whitespace", get("Host: h\r\nAccept:\ta\tb \t\r\n"), "GET", "/status",
       ""},
  };
  for (const auto& c : cases) {
    for (const std::size_t step : {std::size_t{0}, std::size_t{1}, std::size_t{5}}) {
      SCOPED_TRACE(std::string(c.what) + " (step " + std::to_string(step) + ")");
      const Parsed p = feed(c.wire, step);
      ASSERT_EQ(p.result, RequestParser::Result::done) << p.status << " " << p.error;
      EXPECT_EQ(p.req.method, c.method);
      EXPECT_EQ(p.req.path, c.path);
      EXPECT_EQ(p.req.body, c.body);
      EXPECT_EQ(p.consumed, c.wire.size());
    }
  }
}

// Fuzzer finding: a request line of exactly max_line_bytes was taken whole but refused when its
// CR arrived before its LF (the CR was counted as part of the line).
TEST(HttpRequestParser, ARequestLineOfExactlyTheLimitIsTakenHoweverItArrives) {
  const std::string line_start = "GET /";
  const std::string line_end = " HTTP/1.1";
  const std::string at_limit =
      line_start + std::string(256 - line_start.size() - line_end.size(), 'a') + line_end;
  ASSERT_EQ(at_limit.size(), 256U);
  for (const std::size_t step : {std::size_t{0}, std::size_t{1}, std::size_t{3}, std::size_t{257}}) {
    SCOPED_TRACE(step);
    EXPECT_EQ(feed(at_limit + "\r\nHost: h\r\n\r\n", step).result, RequestParser::Result::done);
    const Parsed over = feed("GET /a" + at_limit.substr(5) + "\r\nHost: h\r\n\r\n", step);
    EXPECT_EQ(over.result, RequestParser::Result::failed);
    EXPECT_EQ(over.status, 400);
  }
}

TEST(HttpRequestParser, KeepsFieldsQueryAndVersion) {
  const Parsed p =
      feed("GET /plan?model=qwen%2Bcoder&x=a+b&flag HTTP/1.1\r\nHost: h\r\nAccept:  text/plain  \r\n\r\n", 0);
  ASSERT_EQ(p.result, RequestParser::Result::done);
  EXPECT_EQ(p.req.param("model"), "qwen+coder");
  EXPECT_EQ(p.req.param("x"), "a b");
  EXPECT_TRUE(p.req.has_param("flag"));
  EXPECT_EQ(p.req.header("accept"), "text/plain");
  EXPECT_EQ(p.req.target, "/plan?model=qwen%2Bcoder&x=a+b&flag");
  EXPECT_FALSE(p.req.http10);
}

TEST(HttpRequestParser, StopsAtTheEndOfARequestSoPipelinedOnesFollow) {
  const std::string two = post("Content-Length: 2\r\n", "ab") + get("Host: h\r\n");
  RequestParser p(small_limits());
  std::string_view in = two;
  ASSERT_EQ(p.parse(in), RequestParser::Result::done);
  EXPECT_EQ(p.request().body, "ab");
  EXPECT_EQ(in, get("Host: h\r\n"));
  p.reset();
  ASSERT_EQ(p.parse(in), RequestParser::Result::done);
  EXPECT_EQ(p.request().path, "/status");
  EXPECT_TRUE(in.empty());
}

TEST(HttpRequestParser, ConsumesNothingOfAnIncompleteHeadAndReportsExpectContinue) {
  RequestParser p(small_limits());
  const std::string head = post("Content-Length: 3\r\nExpect: 100-continue\r\n", "");
  std::string_view partial(head.data(), head.size() - 3);
  ASSERT_EQ(p.parse(partial), RequestParser::Result::need_more);
  EXPECT_EQ(partial.size(), head.size() - 3);  // nothing consumed
  EXPECT_FALSE(p.head_complete());
  std::string_view whole = head;
  ASSERT_EQ(p.parse(whole), RequestParser::Result::need_more);
  EXPECT_TRUE(whole.empty());
  EXPECT_TRUE(p.head_complete());
  EXPECT_TRUE(p.expects_continue());
  std::string_view body = "xyz";
  ASSERT_EQ(p.parse(body), RequestParser::Result::done);
  EXPECT_EQ(p.request().body, "xyz");
}

TEST(HttpRequestParser, Utf8CheckFollowsRfc3629) {
  EXPECT_TRUE(valid_utf8(""));
  EXPECT_TRUE(valid_utf8("plain ascii"));
  EXPECT_TRUE(valid_utf8("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"));  // é € 😀
  EXPECT_FALSE(valid_utf8("\x80"));                                 // a lone continuation byte
  EXPECT_FALSE(valid_utf8("\xc3"));                                 // truncated
  EXPECT_FALSE(valid_utf8("\xc0\x80"));                             // overlong NUL
  EXPECT_FALSE(valid_utf8("\xe0\x80\xaf"));                         // overlong
  EXPECT_FALSE(valid_utf8("\xed\xa0\x80"));                         // a surrogate
  EXPECT_FALSE(valid_utf8("\xf4\x90\x80\x80"));                     // past U+10FFFF
  EXPECT_FALSE(valid_utf8("\xff"));
  EXPECT_EQ(utf8_error_offset("ab\xff"), std::optional<std::size_t>(2));
}

}  // namespace
}  // namespace gpumod::http
