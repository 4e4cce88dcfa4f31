// Strict, incremental HTTP/1.1 request parser (RFC 9112, RFC 9110) for gpumod's server loop
// (http/server.hpp). No I/O: the loop hands it the bytes a connection has buffered; it says
// when a request is complete, or why the bytes are not one. Only requests that pass it reach a
// handler, so every header the proxy forwards upstream has passed it too.
//
// What it refuses (the connection is closed after the error answer, as the framing of whatever
// follows can no longer be trusted):
//   * 400: a request line that is not `token SP request-target SP HTTP/1.x`; a target that is
//     not origin-form ("/path?query") or absolute-form ("http://host/path"); a percent escape
//     that is broken, or decodes to a control byte in the path, NUL in the query, or invalid
//     UTF-8 in either; a line that does not end in CR LF (bare LF), a bare CR anywhere in the
//     head; obs-fold (a field line starting with SP or HTAB); a field name that is not a token
//     (whitespace before the colon included); a field value holding a control byte (NUL, CR,
//     DEL...) or invalid UTF-8; HTTP/1.1 without Host; more than one Host; a Host that is not
//     host[:port]; Content-Length that is empty, signed, a list, not decimal, beyond 2^64 or
//     given twice; Content-Length beside Transfer-Encoding; Transfer-Encoding in HTTP/1.0, or
//     one whose last coding is not `chunked`, or that names `chunked` twice; a chunked body
//     whose size line is not hex (or overflows), whose data is longer than its size, or whose
//     trailer fields are malformed.
//   * 413: a body over max_body_bytes (from Content-Length before any of it is read; while
//     de-chunking otherwise).
//   * 431: a header section over max_header_bytes or max_header_count fields.
//   * 501: a transfer coding other than chunked (gzip, ...) before the final chunked.
//   * 505: a well-formed HTTP version other than 1.0 and 1.1.
// Blank lines before a request line are skipped (RFC 9112 2.2).
//
// Not thread-safe: one parser per connection, used by the thread that owns the connection.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "http/message.hpp"
#include "http/response_parser.hpp"

namespace gpumod::http {

struct RequestLimits {
  std::size_t max_line_bytes = 8 * 1024;     // the request line
  std::size_t max_header_bytes = 64 * 1024;  // the field lines, CR LF included
  std::size_t max_header_count = 100;        // field lines
  std::uint64_t max_body_bytes = 8 * 1024 * 1024;
};

class RequestParser {
 public:
  enum class Result {
    need_more,  // the request is not complete yet
    done,       // request() holds a whole request
    failed,     // status() and error() say why; close the connection after answering
  };

  explicit RequestParser(RequestLimits limits = {});

  // Parses from the front of `in`. Until the head is complete nothing is consumed: call again
  // with the same bytes plus what arrived since (what was already scanned is not scanned
  // again). Once the head is complete it is consumed, and body bytes are consumed as they are
  // decoded. On done, `in` starts right after the request (a pipelined next one, perhaps).
  Result parse(std::string_view& in);

  // True once the head of the current request was parsed (the body may still be coming).
  [[nodiscard]] bool head_complete() const { return state_ != State::head && state_ != State::failed; }
  // The client sent "Expect: 100-continue" with a body it has not sent yet.
  [[nodiscard]] bool expects_continue() const { return expect_continue_; }
  // The request so far (whole once parse() said done). Move it out, then reset().
  HttpRequest& request() { return req_; }
  // Ready for the next request on the same connection.
  void reset();

  // For failed: the status to answer (400, 413, 431, 501, 505) and what is wrong, for a person
  // ("header field 'Accept' holds control byte \x00"). Any input bytes it quotes are escaped.
  [[nodiscard]] int status() const { return status_; }
  [[nodiscard]] const std::string& error() const { return error_; }

 private:
  enum class State { head, body_length, body_chunked, done, failed };

  Result fail(int status, std::string message);
  // The head is bytes [0, head_len) of `in`, without its final empty line.
  bool parse_head(std::string_view head);
  bool parse_request_line(std::string_view line);
  bool parse_target(std::string_view target);
  bool parse_field(std::string_view line);
  bool pick_framing();

  RequestLimits limits_;
  State state_ = State::head;
  std::size_t scanned_ = 0;           // head bytes already searched for line ends
  std::size_t skipped_ = 0;           // blank lines before the request line, already skipped
  std::size_t lines_ = 0;             // head lines seen so far
  std::size_t request_line_end_ = 0;  // where the field lines begin
  HttpRequest req_;
  std::uint64_t body_remaining_ = 0;
  ChunkDecoder chunks_;
  bool expect_continue_ = false;
  int status_ = 0;
  std::string error_;
};

// RFC 3986 percent-decoding ('+' is a space only when `plus_is_space`). False on a broken
// escape.
bool percent_decode(std::string_view in, bool plus_is_space, std::string& out);

}  // namespace gpumod::http
