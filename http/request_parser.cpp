#include "http/request_parser.hpp"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <utility>
#include <vector>

#include "http/syntax.hpp"

namespace gpumod::http {

namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

bool starts_with_icase(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

// uri-host [ ":" port ] (RFC 3986 3.2.2): reg-name, IPv4 or a bracketed IP literal. Checked by
// the characters it may hold, which is what matters for anything that echoes or forwards it.
bool valid_host_value(std::string_view v) {
  return std::all_of(v.begin(), v.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           std::strchr("-._~!$&'()*+,;=%:[]", c) != nullptr;
  });
}

// The request target's own characters (RFC 3986 pchar, '/' and '?', with '%' escapes): printable
// ASCII other than SP, '#', '"', '<', '>', '\\', '^', '`', '{', '|', '}'.
bool is_target_char(char c) {
  const auto u = static_cast<unsigned char>(c);
  if (u <= 0x20 || u >= 0x7f) return false;
  return std::strchr("#\"<>\\^`{|}", c) == nullptr;
}

bool has_control_byte(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7f;
  });
}

}  // namespace

bool percent_decode(std::string_view in, bool plus_is_space, std::string& out) {
  out.clear();
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    const char c = in[i];
    if (c == '%') {
      if (i + 2 >= in.size()) return false;
      const int hi = hex_value(in[i + 1]);
      const int lo = hex_value(in[i + 2]);
      if (hi < 0 || lo < 0) return false;
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  return true;
}

RequestParser::RequestParser(RequestLimits limits)
    : limits_(limits), chunks_(limits.max_body_bytes, ChunkDecoder::Syntax::strict) {}

void RequestParser::reset() {
  state_ = State::head;
  scanned_ = 0;
  skipped_ = 0;
  lines_ = 0;
  request_line_end_ = 0;
  req_ = HttpRequest{};
  body_remaining_ = 0;
  chunks_.reset();
  expect_continue_ = false;
  status_ = 0;
  error_.clear();
}

RequestParser::Result RequestParser::fail(int status, std::string message) {
  state_ = State::failed;
  status_ = status;
  error_ = std::move(message);
  return Result::failed;
}

RequestParser::Result RequestParser::parse(std::string_view& in) {
  if (state_ == State::head) {
    for (;;) {
      const std::size_t line_start = scanned_;
      const void* lf = line_start < in.size()
                           ? std::memchr(in.data() + line_start, '\n', in.size() - line_start)
                           : nullptr;
      if (lf == nullptr) {
        const std::size_t partial = in.size() - line_start;
        // + 1: the CR of the line's CR LF may already be here, and is not part of the line.
        if (lines_ == 0 && partial > limits_.max_line_bytes + 1) {
          return fail(400, "request line longer than " + std::to_string(limits_.max_line_bytes) + " bytes");
        }
        if (lines_ > 0 && in.size() - request_line_end_ > limits_.max_header_bytes) {
          return fail(431, "request header section larger than " + std::to_string(limits_.max_header_bytes) +
                               " bytes");
        }
        return Result::need_more;
      }
      const auto nl = static_cast<std::size_t>(static_cast<const char*>(lf) - in.data());
      if (nl == line_start || in[nl - 1] != '\r') {
        return fail(400, lines_ == 0 ? "the request line does not end in CR LF"
                                     : "a header line does not end in CR LF (bare LF)");
      }
      const std::string_view line = in.substr(line_start, nl - 1 - line_start);
      if (line.find('\r') != std::string_view::npos) return fail(400, "bare CR in the request head");
      if (line.empty() && lines_ == 0) {
        // Blank lines before a request line are skipped (and consumed) (RFC 9112 2.2).
        in.remove_prefix(nl + 1);
        scanned_ = 0;
        if (++skipped_ > 8) return fail(400, "too many empty lines before the request line");
        continue;
      }
      if (lines_ == 0 && line.size() > limits_.max_line_bytes) {
        return fail(400, "request line longer than " + std::to_string(limits_.max_line_bytes) + " bytes");
      }
      scanned_ = nl + 1;
      if (line.empty()) {
        // The head is complete: bytes [0, line_start) are its lines, each with CR LF.
        const std::string_view head = in.substr(0, line_start);
        in.remove_prefix(scanned_);
        scanned_ = 0;
        if (!parse_head(head)) return Result::failed;
        break;
      }
      if (++lines_ == 1) request_line_end_ = scanned_;
      if (lines_ > limits_.max_header_count + 1) {
        return fail(431, "more than " + std::to_string(limits_.max_header_count) + " header fields");
      }
      if (scanned_ - request_line_end_ > limits_.max_header_bytes) {
        return fail(
            431, "request header section larger than " + std::to_string(limits_.max_header_bytes) + " bytes");
      }
    }
  }
  switch (state_) {
    case State::head:
      return Result::need_more;
    case State::body_length: {
      const auto take = static_cast<std::size_t>(std::min<std::uint64_t>(body_remaining_, in.size()));
      req_.body.append(in.data(), take);
      in.remove_prefix(take);
      body_remaining_ -= take;
      if (body_remaining_ > 0) return Result::need_more;
      state_ = State::done;
      return Result::done;
    }
    case State::body_chunked: {
      const auto st = chunks_.decode(in, req_.body);
      if (st == ChunkDecoder::Status::need_more) return Result::need_more;
      if (st == ChunkDecoder::Status::failed) return fail(chunks_.too_large() ? 413 : 400, chunks_.error());
      state_ = State::done;
      return Result::done;
    }
    case State::done:
      return Result::done;
    case State::failed:
      return Result::failed;
  }
  return Result::failed;
}

bool RequestParser::parse_head(std::string_view head) {
  auto next_line = [&head]() {
    const auto end = head.find("\r\n");  // every line ends in CR LF: parse() checked
    const std::string_view line = head.substr(0, end);
    head.remove_prefix(end == std::string_view::npos ? head.size() : end + 2);
    return line;
  };
  if (!parse_request_line(next_line())) return false;
  while (!head.empty()) {
    if (!parse_field(next_line())) return false;
  }
  return pick_framing();
}

bool RequestParser::parse_request_line(std::string_view line) {
  // method SP request-target SP HTTP-version, single spaces (RFC 9112 3).
  const auto sp1 = line.find(' ');
  const auto sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) {
    fail(400, "malformed request line " + quoted(line) + " (expected METHOD SP TARGET SP HTTP/1.1)");
    return false;
  }
  const std::string_view method = line.substr(0, sp1);
  const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string_view version = line.substr(sp2 + 1);
  if (!is_token(method)) {
    fail(400, "invalid method " + quoted(method));
    return false;
  }
  if (version == "HTTP/1.1") {
    req_.http10 = false;
  } else if (version == "HTTP/1.0") {
    req_.http10 = true;
  } else if (version.size() == 8 && version.substr(0, 5) == "HTTP/" && is_digit(version[5]) &&
             version[6] == '.' && is_digit(version[7])) {
    fail(505, "HTTP version " + quoted(version) + " is not supported (HTTP/1.1 and HTTP/1.0 are)");
    return false;
  } else {
    fail(400, "invalid HTTP version " + quoted(version));
    return false;
  }
  req_.method = std::string(method);
  return parse_target(target);
}

bool RequestParser::parse_target(std::string_view target) {
  if (target.empty() || !std::all_of(target.begin(), target.end(), is_target_char)) {
    fail(400, "invalid request target " + quoted(target) +
                  " (control bytes, spaces, '#' and non-ASCII bytes must be percent-encoded)");
    return false;
  }
  req_.target = std::string(target);
  if (target == "*" && req_.method == "OPTIONS") {
    req_.path = "*";  // asterisk-form: no route serves it, so it is answered 404
    return true;
  }
  // absolute-form: the authority is the Host's business; keep the path and query.
  if (starts_with_icase(target, "http://") || starts_with_icase(target, "https://")) {
    const auto authority = target.find("//") + 2;
    const auto end = target.find_first_of("/?", authority);
    target = end == std::string_view::npos ? std::string_view("/") : target.substr(end);
    if (target.front() == '?') {
      fail(400, "absolute-form request target without a path");
      return false;
    }
  }
  if (target.front() != '/') {
    fail(400, "request target " + quoted(target) + " is not a path such as /status");
    return false;
  }
  const auto q = target.find('?');
  if (!percent_decode(target.substr(0, q), false, req_.path)) {
    fail(400, "broken percent escape in the path " + quoted(target.substr(0, q)));
    return false;
  }
  if (has_control_byte(req_.path) || !valid_utf8(req_.path)) {
    fail(400, "the path " + quoted(target.substr(0, q)) + " decodes to control bytes or invalid UTF-8");
    return false;
  }
  if (q == std::string_view::npos) return true;
  std::string_view query = target.substr(q + 1);
  std::string key;
  std::string value;
  while (!query.empty()) {
    const auto amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    query.remove_prefix(amp == std::string_view::npos ? query.size() : amp + 1);
    if (pair.empty()) continue;
    const auto eq = pair.find('=');
    const bool decoded =
        percent_decode(pair.substr(0, eq), true, key) &&
        percent_decode(eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1), true, value);
    if (!decoded) {
      fail(400, "broken percent escape in the query parameter " + quoted(pair));
      return false;
    }
    if (key.find('\0') != std::string::npos || value.find('\0') != std::string::npos || !valid_utf8(key) ||
        !valid_utf8(value)) {
      fail(400, "the query parameter " + quoted(pair) + " decodes to NUL or invalid UTF-8");
      return false;
    }
    req_.query[key] = value;
  }
  return true;
}

bool RequestParser::parse_field(std::string_view line) {
  if (line.front() == ' ' || line.front() == '\t') {
    fail(400, "obsolete line folding (a header line starting with whitespace) is not accepted");
    return false;
  }
  const auto colon = line.find(':');
  if (colon == std::string_view::npos) {
    fail(400, "header line " + quoted(line) + " has no colon");
    return false;
  }
  const std::string_view name = line.substr(0, colon);
  if (!name.empty() && (name.back() == ' ' || name.back() == '\t')) {
    fail(400, "whitespace between the header name " + quoted(trim_ows(name)) + " and its colon");
    return false;
  }
  if (!is_token(name)) {
    fail(400, "invalid header name " + quoted(name));
    return false;
  }
  const std::string_view value = trim_ows(line.substr(colon + 1));
  const auto bad = std::find_if(value.begin(), value.end(), is_bad_text_char);
  if (bad != value.end()) {
    fail(400, "header " + quoted(name) + " holds the control byte " + quoted(std::string_view(&*bad, 1)));
    return false;
  }
  if (!valid_utf8(value)) {
    fail(400, "header " + quoted(name) + " is not valid UTF-8");
    return false;
  }
  req_.headers.add(std::string(name), std::string(value));
  return true;
}

bool RequestParser::pick_framing() {
  std::size_t hosts = 0;
  std::size_t lengths = 0;
  std::uint64_t length = 0;
  bool has_te = false;
  std::vector<std::string_view> codings;  // into req_.headers, which outlives this call
  for (const auto& [name, value] : req_.headers) {
    if (iequals(name, "Host")) {
      if (++hosts > 1) {
        fail(400, "more than one Host header");
        return false;
      }
      if (!valid_host_value(value)) {
        fail(400, "invalid Host " + quoted(value));
        return false;
      }
    } else if (iequals(name, "Content-Length")) {
      if (++lengths > 1) {
        fail(400, "more than one Content-Length header");
        return false;
      }
      const auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), length);
      const bool digits = !value.empty() && std::all_of(value.begin(), value.end(), is_digit);
      if (!digits || ec != std::errc() || ptr != value.data() + value.size()) {
        fail(400, "invalid Content-Length " + quoted(value) + " (one decimal number of at most 2^64-1)");
        return false;
      }
    } else if (iequals(name, "Transfer-Encoding")) {
      // The codings of every Transfer-Encoding field, in order. Empty list elements are
      // ignored (RFC 9110 5.6.1).
      std::string_view list = value;
      while (!list.empty()) {
        const auto comma = list.find(',');
        const std::string_view coding = trim_ows(list.substr(0, comma));
        list.remove_prefix(comma == std::string_view::npos ? list.size() : comma + 1);
        if (coding.empty()) continue;
        if (!is_token(trim_ows(coding.substr(0, coding.find(';'))))) {
          fail(400, "invalid transfer coding " + quoted(coding));
          return false;
        }
        codings.push_back(coding);
      }
      has_te = true;
    } else if (iequals(name, "Expect")) {
      expect_continue_ = iequals(value, "100-continue");
    }
  }
  if (hosts == 0 && !req_.http10) {
    fail(400, "HTTP/1.1 request without a Host header");
    return false;
  }
  if (has_te) {
    if (req_.http10) {
      fail(400, "Transfer-Encoding in an HTTP/1.0 request");
      return false;
    }
    if (lengths > 0) {
      // Both framings: refuse rather than guess which one a proxy in front used (smuggling).
      fail(400, "both Content-Length and Transfer-Encoding");
      return false;
    }
    // RFC 9112 6.3: without chunked last, the body's length cannot be known (400, must); a
    // coding we do not implement before it is 501.
    if (codings.empty() || !iequals(codings.back(), "chunked")) {
      fail(400, "Transfer-Encoding whose final coding is not chunked");
      return false;
    }
    for (std::size_t i = 0; i + 1 < codings.size(); ++i) {
      if (iequals(codings[i], "chunked")) {
        fail(400, "Transfer-Encoding names chunked more than once");
        return false;
      }
      fail(501, "transfer coding " + quoted(codings[i]) + " is not supported (only chunked is)");
      return false;
    }
    state_ = State::body_chunked;
  } else if (length > 0) {
    if (length > limits_.max_body_bytes) {
      fail(413, "request body of " + std::to_string(length) + " bytes is over the limit of " +
                    std::to_string(limits_.max_body_bytes) + " bytes");
      return false;
    }
    state_ = State::body_length;
    body_remaining_ = length;
    req_.body.reserve(static_cast<std::size_t>(length));
  } else {
    state_ = State::done;
  }
  expect_continue_ = expect_continue_ && state_ != State::done && !req_.http10;
  return true;
}

}  // namespace gpumod::http
