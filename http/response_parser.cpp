#include "http/response_parser.hpp"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <utility>

#include "http/syntax.hpp"

namespace gpumod::http {

namespace {

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

// Calls `fn(element)` for each non-empty, OWS-trimmed element of a comma-separated list.
std::string_view trim_ows_right(std::string_view s) {
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// *( BWS ";" BWS ext-name [ BWS "=" BWS ( token / quoted-string ) ] ) (RFC 9112 7.1.1), from
// the first ';'. Quoted strings may hold any text byte but '"' and '\\' unescaped.
bool valid_chunk_ext(std::string_view ext) {
  while (!ext.empty()) {
    ext = trim_ows(ext);
    if (ext.empty() || ext.front() != ';') return false;
    ext = trim_ows(ext.substr(1));
    std::size_t n = 0;
    while (n < ext.size() && is_token_char(ext[n])) ++n;
    if (n == 0) return false;
    ext = trim_ows(ext.substr(n));
    if (ext.empty() || ext.front() != '=') continue;
    ext = trim_ows(ext.substr(1));
    if (!ext.empty() && ext.front() == '"') {
      std::size_t i = 1;
      for (; i < ext.size() && ext[i] != '"'; ++i) {
        if (ext[i] == '\\') ++i;
        if (i < ext.size() && is_bad_text_char(ext[i])) return false;
      }
      if (i >= ext.size()) return false;
      ext = ext.substr(i + 1);
    } else {
      n = 0;
      while (n < ext.size() && is_token_char(ext[n])) ++n;
      if (n == 0) return false;
      ext = ext.substr(n);
    }
  }
  return true;
}

// field-name ":" OWS field-value OWS, with no control byte in the value and no obs-fold.
bool valid_trailer_field(std::string_view line) {
  const auto colon = line.find(':');
  if (colon == std::string_view::npos || !is_token(line.substr(0, colon))) return false;
  const std::string_view value = line.substr(colon + 1);
  return std::none_of(value.begin(), value.end(), is_bad_text_char);
}

template <typename Fn>
void for_each_element(std::string_view list, Fn&& fn) {
  while (!list.empty()) {
    const auto comma = list.find(',');
    const std::string_view element = trim_ows(list.substr(0, comma));
    list.remove_prefix(comma == std::string_view::npos ? list.size() : comma + 1);
    if (!element.empty()) fn(element);
  }
}

bool list_has_token(const Headers& headers, std::string_view name, std::string_view token) {
  bool found = false;
  for (const auto& [k, v] : headers) {
    if (!iequals(k, name)) continue;
    for_each_element(v, [&](std::string_view e) { found = found || iequals(e, token); });
  }
  return found;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// LineReader

LineReader::Status LineReader::next(std::string_view& in, std::size_t max_len, std::string_view& out) {
  if (line_taken_) {
    partial_.clear();
    line_taken_ = false;
  }
  // One byte of slack for the CR that may come right before the LF.
  const std::size_t max_with_cr = max_len + 1;
  const void* lf = in.empty() ? nullptr : std::memchr(in.data(), '\n', in.size());
  if (lf == nullptr) {
    if (partial_.size() + in.size() > max_with_cr) return Status::too_long;
    partial_.append(in);
    in = {};
    return Status::need_more;
  }
  const auto n = static_cast<std::size_t>(static_cast<const char*>(lf) - in.data());
  std::string_view line;
  if (partial_.empty()) {
    line = in.substr(0, n);  // the common case: the whole line is in this piece
  } else {
    if (partial_.size() + n > max_with_cr) return Status::too_long;
    partial_.append(in.data(), n);
    line = partial_;
    line_taken_ = true;
  }
  in.remove_prefix(n + 1);
  had_cr_ = !line.empty() && line.back() == '\r';
  if (had_cr_) line.remove_suffix(1);
  if (line.size() > max_len) return Status::too_long;
  out = line;
  return Status::line;
}

// ---------------------------------------------------------------------------------------------
// ChunkDecoder

void ChunkDecoder::reset() {
  state_ = State::size_line;
  lines_.reset();
  remaining_ = 0;
  decoded_ = 0;
  trailer_bytes_ = 0;
  trailer_fields_ = 0;
  too_large_ = false;
  error_.clear();
}

ChunkDecoder::Status ChunkDecoder::fail(std::string message) {
  state_ = State::failed;
  error_ = std::move(message);
  return Status::failed;
}

ChunkDecoder::Status ChunkDecoder::decode(std::string_view& in, std::string& body) {
  for (;;) {
    switch (state_) {
      case State::size_line: {
        std::string_view line;
        const auto st = lines_.next(in, kMaxSizeLineBytes, line);
        if (st == LineReader::Status::need_more) return Status::need_more;
        if (st == LineReader::Status::too_long) {
          return fail("chunk size line longer than " + std::to_string(kMaxSizeLineBytes) + " bytes");
        }
        if (strict() && !lines_.had_cr()) return fail("chunk size line does not end in CR LF");
        // chunk-size [ BWS ";" chunk-ext ]: the extensions are ignored (strict: checked).
        const auto semicolon = line.find(';');
        const std::string_view hex =
            strict() ? trim_ows_right(line.substr(0, semicolon)) : trim_ows(line.substr(0, semicolon));
        if (strict() && semicolon != std::string_view::npos && !valid_chunk_ext(line.substr(semicolon))) {
          return fail("invalid chunk extension in " + quoted(line));
        }
        std::uint64_t size = 0;
        const auto [ptr, ec] = std::from_chars(hex.data(), hex.data() + hex.size(), size, 16);
        // 15 hex digits keep the running total far from overflow.
        if (hex.empty() || hex.size() > 15 || ec != std::errc() || ptr != hex.data() + hex.size()) {
          return fail("invalid chunk size line " + quoted(line));
        }
        if (size == 0) {
          state_ = State::trailer;
          continue;
        }
        if (size > max_body_bytes_ - decoded_) {
          too_large_ = true;
          return fail("chunked body larger than " + std::to_string(max_body_bytes_) + " bytes");
        }
        remaining_ = size;
        state_ = State::data;
        continue;
      }
      case State::data: {
        if (in.empty()) return Status::need_more;
        const auto take = static_cast<std::size_t>(std::min<std::uint64_t>(remaining_, in.size()));
        body.append(in.data(), take);
        in.remove_prefix(take);
        remaining_ -= take;
        decoded_ += take;
        if (remaining_ > 0) return Status::need_more;
        state_ = State::data_cr;
        continue;
      }
      case State::data_cr:  // CR LF after the chunk data (lenient: a bare LF too, as for lines)
      case State::data_lf: {
        if (in.empty()) return Status::need_more;
        const char c = in.front();
        if (state_ == State::data_cr && c == '\r') {
          in.remove_prefix(1);
          state_ = State::data_lf;
          continue;
        }
        if (strict() && state_ == State::data_cr) {
          return fail("chunk data longer than its size, or not followed by CR LF (got " +
                      quoted(in.substr(0, 1)) + ")");
        }
        if (c != '\n') return fail("chunk data not followed by CRLF (got " + quoted(in.substr(0, 1)) + ")");
        in.remove_prefix(1);
        state_ = State::size_line;
        continue;
      }
      case State::trailer: {
        std::string_view line;
        const std::size_t room = kMaxTrailerBytes > trailer_bytes_ ? kMaxTrailerBytes - trailer_bytes_ : 0;
        const auto st = lines_.next(in, room, line);
        if (st == LineReader::Status::need_more) return Status::need_more;
        if (st == LineReader::Status::too_long) {
          return fail("trailer section larger than " + std::to_string(kMaxTrailerBytes) + " bytes");
        }
        if (strict() && !lines_.had_cr()) return fail("trailer line does not end in CR LF");
        if (line.empty()) {
          state_ = State::done;
          return Status::done;
        }
        if (strict() && !valid_trailer_field(line)) return fail("malformed trailer field " + quoted(line));
        trailer_bytes_ += line.size() + 2;
        if (++trailer_fields_ > kMaxTrailerFields) {
          return fail("more than " + std::to_string(kMaxTrailerFields) + " trailer fields");
        }
        continue;  // trailer fields are dropped
      }
      case State::done:
        return Status::done;
      case State::failed:
        return Status::failed;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// ResponseParser

void ResponseParser::reset(bool response_to_head) {
  response_to_head_ = response_to_head;
  state_ = State::status_line;
  lines_.reset();
  chunks_.reset();
  head_ = ResponseHead{};
  header_bytes_ = 0;
  head_ready_ = false;
  keep_alive_ = false;
  length_beside_chunked_ = false;
  framing_ = BodyFraming::none;
  content_length_ = 0;
  remaining_ = 0;
  body_bytes_ = 0;
  unsolicited_ = 0;
  received_any_ = false;
  error_.clear();
}

ResponseParser::Result ResponseParser::result() const {
  switch (state_) {
    case State::done:
      return Result::done;
    case State::failed:
      return Result::failed;
    default:
      return head_ready_ ? Result::head_ready : Result::need_more;
  }
}

ResponseParser::Result ResponseParser::fail(std::string message) {
  state_ = State::failed;
  error_ = std::move(message);
  return Result::failed;
}

bool ResponseParser::reusable() const {
  return state_ == State::done && keep_alive_ && framing_ != BodyFraming::until_close &&
         !length_beside_chunked_ && head_.status != 101 && unsolicited_ == 0;
}

std::optional<std::uint64_t> ResponseParser::content_length() const {
  if (framing_ != BodyFraming::length) return std::nullopt;
  return content_length_;
}

bool ResponseParser::parse_status_line(std::string_view line) {
  // HTTP-version SP 3DIGIT SP [ reason-phrase ]; the SP before an empty reason is often left out.
  constexpr std::string_view kPrefix = "HTTP/1.";
  if (line.size() < kPrefix.size() + 5 || line.substr(0, kPrefix.size()) != kPrefix ||
      !is_digit(line[kPrefix.size()]) || line[kPrefix.size() + 1] != ' ') {
    fail("malformed status line " + quoted(line) + ": expected 'HTTP/1.x NNN reason'");
    return false;
  }
  head_.http10 = line[kPrefix.size()] == '0';  // a higher 1.x minor version reads as 1.1
  const std::string_view code = line.substr(kPrefix.size() + 2, 3);
  const std::string_view rest = line.substr(kPrefix.size() + 5);
  if (!std::all_of(code.begin(), code.end(), is_digit) || (!rest.empty() && rest.front() != ' ')) {
    fail("malformed status line " + quoted(line) + ": the status code is not 3 digits");
    return false;
  }
  const int status = (code[0] - '0') * 100 + (code[1] - '0') * 10 + (code[2] - '0');
  if (status < 100 || status > 599) {
    fail("malformed status line " + quoted(line) + ": status code outside 100-599");
    return false;
  }
  const std::string_view reason = rest.empty() ? rest : rest.substr(1);
  if (std::any_of(reason.begin(), reason.end(), is_bad_text_char)) {
    fail("malformed status line " + quoted(line) + ": control character in the reason phrase");
    return false;
  }
  head_.status = status;
  head_.reason.assign(reason);
  return true;
}

bool ResponseParser::parse_field_line(std::string_view line) {
  if (line.front() == ' ' || line.front() == '\t') {
    fail("obsolete line folding in header field line " + quoted(line));
    return false;
  }
  const auto colon = line.find(':');
  const std::string_view name = line.substr(0, colon);
  if (colon == std::string_view::npos || name.empty() ||
      !std::all_of(name.begin(), name.end(), is_token_char)) {
    fail("malformed header field line " + quoted(line));
    return false;
  }
  const std::string_view value = trim_ows(line.substr(colon + 1));
  if (std::any_of(value.begin(), value.end(), is_bad_text_char)) {
    fail("control character in the value of header field " + quoted(name));
    return false;
  }
  if (head_.headers.size() >= kMaxHeaderFields) {
    fail("more than " + std::to_string(kMaxHeaderFields) + " header fields");
    return false;
  }
  head_.headers.add(std::string(name), std::string(value));
  return true;
}

bool ResponseParser::pick_framing() {
  const Headers& h = head_.headers;
  if (h.has("Transfer-Encoding")) {
    // Only "chunked" is understood; another coding would leave the body still encoded.
    std::string_view other;
    int chunked = 0;
    for (const auto& [k, v] : h) {
      if (!iequals(k, "Transfer-Encoding")) continue;
      for_each_element(v, [&](std::string_view e) {
        if (iequals(e, "chunked")) {
          ++chunked;
        } else if (other.empty()) {
          other = e;
        }
      });
    }
    if (!other.empty()) {
      fail("unsupported Transfer-Encoding " + quoted(other) + " (only chunked is understood)");
      return false;
    }
    if (chunked != 1) {
      fail("malformed Transfer-Encoding " + quoted(h.get("Transfer-Encoding")));
      return false;
    }
    framing_ = BodyFraming::chunked;
    // Both framings at once smell of response splitting: the body is read as chunked (RFC 9112
    // 6.3), but the connection is not trusted with another request.
    length_beside_chunked_ = h.has("Content-Length");
    state_ = State::body_chunked;
    return true;
  }
  std::optional<std::uint64_t> length;
  std::string_view first_text;
  bool bad = false;
  for (const auto& [k, v] : h) {
    if (!iequals(k, "Content-Length")) continue;
    int elements = 0;
    // "5, 5" (a list of the same value, from merged fields) is accepted; see RFC 9110 8.6.
    for_each_element(v, [&](std::string_view e) {
      ++elements;
      if (bad) return;
      std::uint64_t n = 0;
      const auto [ptr, ec] = std::from_chars(e.data(), e.data() + e.size(), n);
      if (!std::all_of(e.begin(), e.end(), is_digit) || ec != std::errc() || ptr != e.data() + e.size()) {
        bad = true;
        fail("invalid Content-Length " + quoted(e));
      } else if (length && *length != n) {
        bad = true;
        fail("conflicting Content-Length values " + quoted(first_text) + " and " + quoted(e));
      } else {
        length = n;
        first_text = e;
      }
    });
    if (bad) return false;
    if (elements == 0) {
      fail("invalid Content-Length " + quoted(v));
      return false;
    }
  }
  if (length) {
    framing_ = BodyFraming::length;
    content_length_ = *length;
    remaining_ = *length;
    state_ = remaining_ == 0 ? State::done : State::body_length;
    return true;
  }
  framing_ = BodyFraming::until_close;
  state_ = State::body_until_close;
  return true;
}

bool ResponseParser::finish_head() {
  const int status = head_.status;
  if (status >= 100 && status < 200 && status != 101) {
    // Interim response (100 Continue, 103 Early Hints): skipped, the real one follows.
    head_ = ResponseHead{};
    header_bytes_ = 0;
    state_ = State::status_line;
    return true;
  }
  keep_alive_ = head_.http10 ? list_has_token(head_.headers, "Connection", "keep-alive")
                             : !list_has_token(head_.headers, "Connection", "close");
  head_ready_ = true;
  if (status == 101 || status == 204 || status == 304 || response_to_head_) {
    // No body. After 101 the connection speaks another protocol: never reusable.
    framing_ = BodyFraming::none;
    state_ = State::done;
    return true;
  }
  return pick_framing();
}

ResponseParser::Result ResponseParser::feed(std::string_view data, std::string& body) {
  if (!data.empty()) received_any_ = true;
  while (!data.empty()) {
    switch (state_) {
      case State::status_line: {
        std::string_view line;
        const auto st = lines_.next(data, kMaxStatusLineBytes, line);
        if (st == LineReader::Status::need_more) return result();
        if (st == LineReader::Status::too_long) {
          return fail("status line longer than " + std::to_string(kMaxStatusLineBytes) + " bytes");
        }
        if (!parse_status_line(line)) return Result::failed;
        state_ = State::headers;
        break;
      }
      case State::headers: {
        std::string_view line;
        const std::size_t room = kMaxHeaderBytes > header_bytes_ ? kMaxHeaderBytes - header_bytes_ : 0;
        // The room counts the line's CR LF as well.
        const auto st = lines_.next(data, room >= 2 ? room - 2 : 0, line);
        if (st == LineReader::Status::need_more) return result();
        if (st == LineReader::Status::too_long) {
          return fail("header section larger than " + std::to_string(kMaxHeaderBytes) + " bytes");
        }
        if (line.empty()) {
          if (!finish_head()) return Result::failed;
          break;
        }
        header_bytes_ += line.size() + 2;
        if (!parse_field_line(line)) return Result::failed;
        break;
      }
      case State::body_length: {
        const auto take = static_cast<std::size_t>(std::min<std::uint64_t>(remaining_, data.size()));
        body.append(data.data(), take);
        data.remove_prefix(take);
        remaining_ -= take;
        body_bytes_ += take;
        if (remaining_ == 0) state_ = State::done;
        break;
      }
      case State::body_chunked: {
        const auto st = chunks_.decode(data, body);
        body_bytes_ = chunks_.decoded_bytes();
        if (st == ChunkDecoder::Status::failed) return fail(chunks_.error());
        if (st == ChunkDecoder::Status::done) state_ = State::done;
        break;
      }
      case State::body_until_close:
        body.append(data);
        body_bytes_ += data.size();
        data = {};
        break;
      case State::done:
        unsolicited_ += data.size();
        data = {};
        break;
      case State::failed:
        return Result::failed;
    }
  }
  return result();
}

ResponseParser::Result ResponseParser::feed_eof() {
  switch (state_) {
    case State::status_line:
    case State::headers:
      return fail(received_any_ ? "connection closed before the response head was complete"
                                : "connection closed before any byte of the response");
    case State::body_length:
      return fail("connection closed after " + std::to_string(content_length_ - remaining_) + " of " +
                  std::to_string(content_length_) + " body bytes");
    case State::body_chunked:
      return fail("connection closed inside the chunked body, after " + std::to_string(body_bytes_) +
                  " body bytes");
    case State::body_until_close:
      state_ = State::done;
      return Result::done;
    case State::done:
    case State::failed:
      break;
  }
  return result();
}

}  // namespace gpumod::http
