// UTF-8 well-formedness (RFC 3629), the one check every input edge uses: HTTP bodies, names and
// headers (api/), and config files before YAML parsing (yaml-cpp 0.7 can loop forever on some
// ill-formed input). Pure; any thread.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace gpumod {

// Where `s` stops being well-formed UTF-8 (overlong forms, surrogates and code points above
// U+10FFFF are ill-formed), or nullopt when all of it is.
std::optional<std::size_t> utf8_error_offset(std::string_view s);
inline bool valid_utf8(std::string_view s) {
  return !utf8_error_offset(s).has_value();
}

// A byte as two lower-case hex digits ("e1"): how error messages and escapes name a byte that
// cannot be shown as it is.
inline std::string hex_byte(unsigned char byte) {
  static constexpr char kHex[] = "0123456789abcdef";
  return {kHex[byte >> 4], kHex[byte & 0xF]};
}

}  // namespace gpumod
