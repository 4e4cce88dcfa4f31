// The character rules of HTTP/1.1 (RFC 9110 5.6, RFC 9112) that both of gpumod's parsers use
// (http/request_parser.hpp for requests, http/response_parser.hpp for answers). Pure
// functions; any thread.
#pragma once

#include <string>
#include <string_view>

#include "base/utf8.hpp"

namespace gpumod::http {

// tchar: what a method, a field name and a transfer coding are made of.
bool is_token_char(char c);
// A non-empty run of tchar.
bool is_token(std::string_view s);

// A control byte that may not appear in a field value, a reason phrase or a request target:
// 0x00-0x1F except HTAB, and DEL. CR, LF and NUL are among them.
bool is_bad_text_char(char c);

// Optional whitespace (SP, HTAB) trimmed from both ends.
std::string_view trim_ows(std::string_view s);

// UTF-8 checks: the project's one copy is base/utf8.hpp.
using gpumod::utf8_error_offset;
using gpumod::valid_utf8;

// Wire text for an error message: at most 40 bytes, quoted, with every byte that is not
// printable ASCII shown as \xNN, so a message can always be echoed (as JSON or in a log).
std::string quoted(std::string_view s);

}  // namespace gpumod::http
