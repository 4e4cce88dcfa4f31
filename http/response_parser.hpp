// Incremental HTTP/1.1 response parser (RFC 9112) for gpumod's non-blocking upstream client:
// feed it whatever bytes recv() returned, split anywhere, and it reports when the head is
// ready, streams the de-chunked body out, and says whether the connection can be reused.
// No I/O here. The pieces it is built from (LineReader, ChunkDecoder) work on their own too,
// e.g. for the server's request bodies.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>

#include "http/message.hpp"

namespace gpumod::http {

// Splits a byte stream into lines ending in LF (a CR right before the LF is dropped), whatever
// pieces the stream arrives in. A line that lies whole inside one piece is handed back in place;
// only a line split across pieces is copied, into a buffer whose capacity is kept.
class LineReader {
 public:
  enum class Status { line, need_more, too_long };

  // Takes bytes from the front of `in`, up to and including the next LF.
  //  line:      `out` is the line without its CR LF; it points into `in` or into this reader and
  //             stays valid until the next call (and while `in`'s bytes live).
  //  need_more: all of `in` was taken and kept; the line continues in the next piece.
  //  too_long:  the line has more than `max_len` bytes; what was taken is lost, so the caller
  //             should give up on the stream (or reset()).
  Status next(std::string_view& in, std::size_t max_len, std::string_view& out);

  // Whether the line last returned ended in CR LF (false: a bare LF).
  [[nodiscard]] bool had_cr() const { return had_cr_; }
  // Bytes of an unfinished line held from earlier pieces.
  [[nodiscard]] std::size_t pending() const { return line_taken_ ? 0 : partial_.size(); }
  void reset() {
    partial_.clear();
    line_taken_ = false;
  }

 private:
  std::string partial_;
  bool line_taken_ = false;  // partial_ holds the line last returned: drop it on the next call
  bool had_cr_ = false;
};

// Decodes a chunked body (RFC 9112 7.1): chunk extensions are ignored, trailer fields read and
// dropped. Stops exactly at the end of the trailer section, so bytes after the body stay with
// the caller. Syntax::lenient (answers from a model server) takes bare LF line ends and does not
// look inside extensions and trailers; Syntax::strict (requests to gpumod) refuses bare LF, a
// size line that starts with whitespace, malformed extensions and malformed trailer fields.
class ChunkDecoder {
 public:
  static constexpr std::size_t kMaxSizeLineBytes = 4 * 1024;  // hex size plus extensions
  static constexpr std::size_t kMaxTrailerBytes = 64 * 1024;
  static constexpr std::size_t kMaxTrailerFields = 100;

  enum class Status { need_more, done, failed };

  // `max_body_bytes`: a chunk that would take the decoded body past it fails the body, with
  // too_large() set (the server answers 413 then, 400 for the other failures).
  enum class Syntax { lenient, strict };

  explicit ChunkDecoder(std::uint64_t max_body_bytes = std::numeric_limits<std::uint64_t>::max(),
                        Syntax syntax = Syntax::lenient)
      : max_body_bytes_(max_body_bytes), syntax_(syntax) {}

  // Consumes bytes from the front of `in` (advancing it) and appends chunk data to `body`
  // (which the caller may empty between calls). On done, `in` starts right after the body.
  Status decode(std::string_view& in, std::string& body);

  [[nodiscard]] bool done() const { return state_ == State::done; }
  [[nodiscard]] bool failed() const { return state_ == State::failed; }
  [[nodiscard]] bool too_large() const { return too_large_; }
  [[nodiscard]] const std::string& error() const { return error_; }
  // Body bytes decoded so far.
  [[nodiscard]] std::uint64_t decoded_bytes() const { return decoded_; }
  // Bytes of the current chunk still to come (0 between chunks).
  [[nodiscard]] std::uint64_t chunk_remaining() const { return remaining_; }
  // Ready for the next body; keeps the limit and the line buffer's capacity.
  void reset();

 private:
  enum class State { size_line, data, data_cr, data_lf, trailer, done, failed };
  Status fail(std::string message);
  [[nodiscard]] bool strict() const { return syntax_ == Syntax::strict; }

  std::uint64_t max_body_bytes_;
  Syntax syntax_;
  State state_ = State::size_line;
  LineReader lines_;
  std::uint64_t remaining_ = 0;
  std::uint64_t decoded_ = 0;
  std::size_t trailer_bytes_ = 0;
  std::size_t trailer_fields_ = 0;
  bool too_large_ = false;
  std::string error_;
};

struct ResponseHead {
  int status = 0;
  std::string reason;   // may be empty
  Headers headers;      // as received, Content-Length and Transfer-Encoding included
  bool http10 = false;  // the server spoke HTTP/1.0
};

// How the body of the current response is delimited.
enum class BodyFraming {
  none,         // 1xx/204/304, a response to HEAD, or 101 Switching Protocols
  length,       // Content-Length
  chunked,      // Transfer-Encoding: chunked (wins over Content-Length)
  until_close,  // neither: the body ends when the server closes the connection
};

// One response at a time; reset() readies it for the next response on the same connection.
class ResponseParser {
 public:
  static constexpr std::size_t kMaxStatusLineBytes = 8 * 1024;
  static constexpr std::size_t kMaxHeaderBytes = 64 * 1024;  // header field lines, CR LF included
  static constexpr std::size_t kMaxHeaderFields = 100;

  // Where the response stands. Level-triggered: every call returns the current state, so a
  // caller that forwards the head must remember that it did (a small response often goes from
  // need_more straight to done in one feed).
  enum class Result {
    need_more,   // the head is not complete yet (interim 1xx responses are skipped)
    head_ready,  // head() is valid; the body is not complete yet
    done,        // head and body complete
    failed,      // error() says what is wrong; the connection must be closed
  };

  // `response_to_head`: the request was HEAD, so the response has no body whatever its headers.
  explicit ResponseParser(bool response_to_head = false) : response_to_head_(response_to_head) {}

  // Consumes `data` (any split, even one byte). Body bytes, de-chunked, are appended to `body`;
  // the caller may move them out between calls to stream them. Bytes after a complete response
  // are not part of it: they are counted (unsolicited_bytes()) and make the connection
  // unusable for another request.
  Result feed(std::string_view data, std::string& body);
  // The server closed the connection: completes a body that runs until close, fails a response
  // that is not complete. (No body parameter: EOF never adds body bytes.)
  Result feed_eof();

  // Ready for the next response on the same connection (or a retry on a new one); keeps buffer
  // capacity. The first form keeps the HEAD flag, the second sets it for the next request.
  void reset() { reset(response_to_head_); }
  void reset(bool response_to_head);

  [[nodiscard]] Result result() const;
  [[nodiscard]] bool head_ready() const { return head_ready_; }
  [[nodiscard]] const ResponseHead& head() const { return head_; }
  [[nodiscard]] bool done() const { return state_ == State::done; }
  [[nodiscard]] bool failed() const { return state_ == State::failed; }
  // What is wrong, for a log line ("invalid chunk size line 'zz'"); "" unless failed().
  [[nodiscard]] const std::string& error() const { return error_; }

  // The connection may carry another request: the response is complete, its length was known
  // from its framing (Content-Length, chunked without a Content-Length beside it, or no body),
  // the server did not ask to close (HTTP/1.1 without "Connection: close", or HTTP/1.0 with
  // "Connection: keep-alive"), and no byte arrived after the response.
  [[nodiscard]] bool reusable() const;
  // What the head's version and Connection header ask for (valid once head_ready()).
  [[nodiscard]] bool keep_alive() const { return keep_alive_; }
  [[nodiscard]] BodyFraming framing() const { return framing_; }
  // The body length the head announced, when framing() is length (a proxy can pass it on
  // instead of re-chunking).
  [[nodiscard]] std::optional<std::uint64_t> content_length() const;
  // Body bytes handed out so far (de-chunked).
  [[nodiscard]] std::uint64_t body_bytes() const { return body_bytes_; }
  // Body bytes still to come with framing() length; 0 otherwise.
  [[nodiscard]] std::uint64_t body_remaining() const {
    return framing_ == BodyFraming::length ? remaining_ : 0;
  }
  // Bytes that arrived after the response was complete.
  [[nodiscard]] std::uint64_t unsolicited_bytes() const { return unsolicited_; }
  // No byte of this response has arrived. After feed_eof() on a reused connection this means
  // the server had closed it while idle, so the request can be retried on a fresh connection.
  [[nodiscard]] bool nothing_received() const { return !received_any_; }

 private:
  enum class State { status_line, headers, body_length, body_chunked, body_until_close, done, failed };

  Result fail(std::string message);
  bool parse_status_line(std::string_view line);
  bool parse_field_line(std::string_view line);
  // The blank line after the fields arrived: skips an interim response or picks the framing.
  bool finish_head();
  bool pick_framing();

  bool response_to_head_;
  State state_ = State::status_line;
  LineReader lines_;
  ChunkDecoder chunks_;
  ResponseHead head_;
  std::size_t header_bytes_ = 0;
  bool head_ready_ = false;
  bool keep_alive_ = false;
  bool length_beside_chunked_ = false;  // Content-Length and chunked together: do not reuse
  BodyFraming framing_ = BodyFraming::none;
  std::uint64_t content_length_ = 0;
  std::uint64_t remaining_ = 0;
  std::uint64_t body_bytes_ = 0;
  std::uint64_t unsolicited_ = 0;
  bool received_any_ = false;
  std::string error_;
};

}  // namespace gpumod::http
