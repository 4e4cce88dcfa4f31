#include "config/yaml_read.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <map>

namespace gpumod::config::detail {

void Diagnostics::error(const std::string& file, int line, const std::string& key,
                        const std::string& message) {
  list_.push_back(Diagnostic{Diagnostic::Severity::error, file, line, key, message});
  ++errors_;
}

void Diagnostics::warning(const std::string& file, int line, const std::string& key,
                          const std::string& message) {
  list_.push_back(Diagnostic{Diagnostic::Severity::warning, file, line, key, message});
}

int line_of(const YAML::Node& node, int fallback) {
  if (!node.IsDefined()) return fallback;
  const YAML::Mark mark = node.Mark();
  return mark.line >= 0 ? mark.line + 1 : fallback;
}

std::string describe(const YAML::Node& node) {
  if (!node.IsDefined() || node.IsNull()) return "nothing";
  if (node.IsScalar()) return "'" + node.Scalar() + "'";
  if (node.IsSequence()) return "a list";
  if (node.IsMap()) return "a mapping";
  return "an unknown node";
}

std::string join(const std::vector<std::string>& items, const std::string& sep) {
  std::string out;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += sep;
    out += items[i];
  }
  return out;
}

namespace {

bool is_name_start(char ch) {
  return std::isalpha(static_cast<unsigned char>(ch)) != 0 || ch == '_';
}
bool is_name_char(char ch) {
  return std::isalnum(static_cast<unsigned char>(ch)) != 0 || ch == '_';
}

std::size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> prev(b.size() + 1);
  std::vector<std::size_t> cur(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t subst = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, subst});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

// Bounds at or above INT32_MAX are only there to keep values in their type: not worth showing.
bool unbounded(std::int64_t max) {
  return max >= std::numeric_limits<std::int32_t>::max();
}

std::string range_text(std::int64_t min, std::int64_t max) {
  if (unbounded(max)) {
    return min == 1 ? "a whole number greater than 0" : "a whole number >= " + std::to_string(min);
  }
  return "a whole number from " + std::to_string(min) + " to " + std::to_string(max);
}

}  // namespace

std::optional<std::string> read_string(const ReadContext& c, const YAML::Node& v, int line,
                                       const std::string& key) {
  if (!v.IsScalar()) {
    c.error(line_of(v, line), key, "expected a string, got " + describe(v));
    return std::nullopt;
  }
  return v.Scalar();
}

std::optional<std::int64_t> read_int(const ReadContext& c, const YAML::Node& v, int line,
                                     const std::string& key, std::int64_t min, std::int64_t max) {
  const int at = line_of(v, line);
  long long value = 0;
  if (!v.IsScalar() || !YAML::convert<long long>::decode(v, value)) {
    c.error(at, key, "expected " + range_text(min, max) + ", got " + describe(v));
    return std::nullopt;
  }
  if (value > max && unbounded(max)) {
    c.error(at, key, "expected at most " + std::to_string(max) + ", got " + std::to_string(value));
    return std::nullopt;
  }
  if (value < min || value > max) {
    c.error(at, key, "expected " + range_text(min, max) + ", got " + std::to_string(value));
    return std::nullopt;
  }
  return static_cast<std::int64_t>(value);
}

std::optional<double> read_number(const ReadContext& c, const YAML::Node& v, int line, const std::string& key,
                                  double min) {
  const int at = line_of(v, line);
  double value = 0;
  if (!v.IsScalar() || !YAML::convert<double>::decode(v, value) || !std::isfinite(value)) {
    c.error(at, key, "expected a number, got " + describe(v));
    return std::nullopt;
  }
  if (value < min) {
    c.error(at, key,
            "expected a number >= " + std::to_string(static_cast<long long>(min)) + ", got " + v.Scalar());
    return std::nullopt;
  }
  return value;
}

std::optional<bool> read_bool(const ReadContext& c, const YAML::Node& v, int line, const std::string& key) {
  bool value = false;
  if (!v.IsScalar() || !YAML::convert<bool>::decode(v, value)) {
    c.error(line_of(v, line), key, "expected true or false, got " + describe(v));
    return std::nullopt;
  }
  return value;
}

std::optional<std::chrono::milliseconds> read_duration(const ReadContext& c, const YAML::Node& v, int line,
                                                       const std::string& key, bool allow_zero) {
  const int at = line_of(v, line);
  const std::string expected =
      std::string("expected a duration ") + (allow_zero ? ">= 0" : "> 0") +
      " (seconds as a number, or a string such as \"500ms\", \"90s\", \"3m\", \"1h\")";
  if (!v.IsScalar()) {
    c.error(at, key, expected + ", got " + describe(v));
    return std::nullopt;
  }
  auto parsed = parse_duration(v.Scalar());
  if (!parsed) {
    c.error(at, key, expected + ", got '" + v.Scalar() + "'");
    return std::nullopt;
  }
  if (!allow_zero && parsed.value().count() <= 0) {
    c.error(at, key, expected + ", got '" + v.Scalar() + "'");
    return std::nullopt;
  }
  return parsed.value();
}

std::optional<std::vector<std::string>> read_string_list(const ReadContext& c, const YAML::Node& v, int line,
                                                         const std::string& key) {
  if (!v.IsSequence()) {
    c.error(line_of(v, line), key, "expected a list of strings, got " + describe(v));
    return std::nullopt;
  }
  std::vector<std::string> out;
  bool ok = true;
  for (std::size_t i = 0; i < v.size(); ++i) {
    const YAML::Node item = v[i];
    if (!item.IsScalar()) {
      c.error(line_of(item, line), key + "[" + std::to_string(i) + "]",
              "expected a string, got " + describe(item));
      ok = false;
      continue;
    }
    out.push_back(item.Scalar());
  }
  if (!ok) return std::nullopt;
  return out;
}

std::optional<std::vector<int>> read_index_list(const ReadContext& c, const YAML::Node& v, int line,
                                                const std::string& key) {
  if (!v.IsSequence()) {
    c.error(line_of(v, line), key, "expected a list of GPU indexes such as [0, 1], got " + describe(v));
    return std::nullopt;
  }
  std::vector<int> out;
  bool ok = true;
  for (std::size_t i = 0; i < v.size(); ++i) {
    auto idx = read_int(c, v[i], line, key + "[" + std::to_string(i) + "]", 0, 1023);
    if (!idx) {
      ok = false;
      continue;
    }
    if (std::find(out.begin(), out.end(), static_cast<int>(*idx)) != out.end()) {
      c.error(line_of(v[i], line), key + "[" + std::to_string(i) + "]",
              "GPU " + std::to_string(*idx) + " is listed twice");
      ok = false;
      continue;
    }
    out.push_back(static_cast<int>(*idx));
  }
  if (!ok) return std::nullopt;
  return out;
}

std::optional<std::vector<MapEntry>> read_scalar_map(const ReadContext& c, const YAML::Node& v, int line,
                                                     const std::string& key) {
  if (v.IsNull()) return std::vector<MapEntry>{};
  if (!v.IsMap()) {
    c.error(line_of(v, line), key, "expected a mapping of names to values, got " + describe(v));
    return std::nullopt;
  }
  std::vector<MapEntry> out;
  std::map<std::string, int> seen;
  bool ok = true;
  for (auto it = v.begin(); it != v.end(); ++it) {
    // Copies: yaml-cpp's iterator hands out a temporary pair, so references into it dangle.
    const YAML::Node k = it->first;
    const YAML::Node val = it->second;
    const int at = line_of(k, line);
    if (!k.IsScalar()) {
      c.error(at, key, "expected names as keys, got " + describe(k));
      ok = false;
      continue;
    }
    const std::string& name = k.Scalar();
    std::string full = key;
    full += '.';
    full += name;
    if (auto prev = seen.find(name); prev != seen.end()) {
      c.error(at, full, "given twice (first at line " + std::to_string(prev->second) + ")");
      ok = false;
      continue;
    }
    seen.emplace(name, at);
    if (val.IsNull()) {
      out.push_back(MapEntry{name, "", at});
      continue;
    }
    if (!val.IsScalar()) {
      c.error(line_of(val, at), full,
              "expected a string, number or bool, got " + describe(val) + " (quote it to pass it as text)");
      ok = false;
      continue;
    }
    std::string text = val.Scalar();
    if (val.Tag() == "?") {  // plain (unquoted) scalar: YAML booleans become "true"/"false"
      std::string lower = text;
      std::transform(lower.begin(), lower.end(), lower.begin(),
                     [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
      if (lower == "true" || lower == "yes" || lower == "on") text = "true";
      if (lower == "false" || lower == "no" || lower == "off") text = "false";
    }
    out.push_back(MapEntry{name, text, at});
  }
  if (!ok) return std::nullopt;
  return out;
}

std::optional<std::string> read_choice(const ReadContext& c, const YAML::Node& v, int line,
                                       const std::string& key, const std::vector<std::string>& names) {
  const std::string expected = "expected one of " + join(names, ", ");
  if (!v.IsScalar()) {
    c.error(line_of(v, line), key, expected + ", got " + describe(v));
    return std::nullopt;
  }
  if (std::find(names.begin(), names.end(), v.Scalar()) == names.end()) {
    c.error(line_of(v, line), key, expected + ", got '" + v.Scalar() + "'");
    return std::nullopt;
  }
  return v.Scalar();
}

bool for_each_key(const ReadContext& c, const YAML::Node& node, const std::string& what,
                  const std::vector<std::string>& allowed,
                  const std::function<void(const std::string&, int, const YAML::Node&)>& on_key) {
  if (!node.IsMap()) {
    c.error(line_of(node, 1), "", "expected a mapping of " + what + ", got " + describe(node));
    return false;
  }
  std::map<std::string, int> seen;
  for (auto it = node.begin(); it != node.end(); ++it) {
    const YAML::Node k = it->first;  // a copy: the iterator's pair is a temporary
    const YAML::Node v = it->second;
    const int at = line_of(k, line_of(node, 1));
    if (!k.IsScalar()) {
      c.error(at, "", "expected a key name, got " + describe(k));
      continue;
    }
    const std::string& name = k.Scalar();
    if (auto prev = seen.find(name); prev != seen.end()) {
      c.error(at, name, "key given twice (first at line " + std::to_string(prev->second) + ")");
      continue;
    }
    seen.emplace(name, at);
    if (std::find(allowed.begin(), allowed.end(), name) == allowed.end()) {
      std::string message = "unknown key";
      std::string best;
      std::size_t best_distance = 3;
      for (const auto& candidate : allowed) {
        // A near miss, or the key written without its unit suffix ("vram" for "vram_mb").
        const bool prefix = name.size() >= 3 && candidate.rfind(name, 0) == 0;
        const std::size_t d = prefix ? 1 : edit_distance(name, candidate);
        if (d < best_distance) {
          best_distance = d;
          best = candidate;
        }
      }
      if (!best.empty()) message += " (did you mean '" + best + "'?)";
      message += "; expected one of: " + join(allowed, ", ");
      c.error(at, name, message);
      continue;
    }
    on_key(name, at, v);
  }
  return true;
}

Result<std::string> expand_env(const std::string& text, const std::filesystem::path& bin_dir) {
  std::string out;
  std::size_t i = 0;
  auto lookup = [&](const std::string& name) -> Result<std::string> {
    if (name == "GPUMOD_BIN_DIR") return bin_dir.string();
    const char* value = std::getenv(name.c_str());  // NOLINT(concurrency-mt-unsafe): read at load only
    if (value == nullptr) return make_error("environment variable " + name + " is not set");
    return std::string(value);
  };
  if (text == "~" || text.rfind("~/", 0) == 0) {
    auto home = lookup("HOME");
    if (!home) return make_error(home.error() + " (needed for '~')");
    out = home.value();
    i = 1;
  }
  while (i < text.size()) {
    const char ch = text[i];
    if (ch != '$' || i + 1 >= text.size()) {
      out += ch;
      ++i;
      continue;
    }
    const char next = text[i + 1];
    if (next == '$') {
      out += '$';
      i += 2;
    } else if (next == '{') {
      const std::size_t close = text.find('}', i + 2);
      if (close == std::string::npos) return make_error("unterminated '${' in '" + text + "'");
      const std::string name = text.substr(i + 2, close - i - 2);
      if (name.empty() || !is_name_start(name[0]) || !std::all_of(name.begin(), name.end(), is_name_char)) {
        return make_error("'${" + name + "}' is not a variable name");
      }
      auto value = lookup(name);
      if (!value) return make_error(value.error());
      out += value.value();
      i = close + 1;
    } else if (is_name_start(next)) {
      std::size_t end = i + 1;
      while (end < text.size() && is_name_char(text[end])) ++end;
      auto value = lookup(text.substr(i + 1, end - i - 1));
      if (!value) return make_error(value.error());
      out += value.value();
      i = end;
    } else {
      out += ch;
      ++i;
    }
  }
  return out;
}

std::string expand_bin_dir(const std::string& text, const std::filesystem::path& bin_dir) {
  const std::string dir = bin_dir.string();
  std::string out = text;
  for (const std::string token : {"${GPUMOD_BIN_DIR}", "$GPUMOD_BIN_DIR"}) {
    std::size_t pos = 0;
    while ((pos = out.find(token, pos)) != std::string::npos) {
      const std::size_t end = pos + token.size();
      if (token[1] != '{' && end < out.size() &&
          is_name_char(out[end])) {  // $GPUMOD_BIN_DIRX is another name
        pos = end;
        continue;
      }
      out.replace(pos, token.size(), dir);
      pos += dir.size();
    }
  }
  return out;
}

}  // namespace gpumod::config::detail
