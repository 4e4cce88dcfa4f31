// Private to config/: typed readers over yaml-cpp nodes that report every problem as a
// Diagnostic (file, 1-based line, dotted key, what was expected) instead of throwing, so one
// pass over a file collects all of its errors.
#pragma once

#include <yaml-cpp/yaml.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "config/config.hpp"

namespace gpumod::config::detail {

// Collects errors and warnings in the order they are found.
class Diagnostics {
 public:
  void error(const std::string& file, int line, const std::string& key, const std::string& message);
  void warning(const std::string& file, int line, const std::string& key, const std::string& message);
  [[nodiscard]] bool has_errors() const { return errors_ > 0; }
  [[nodiscard]] std::size_t error_count() const { return errors_; }
  [[nodiscard]] const std::vector<Diagnostic>& list() const { return list_; }
  std::vector<Diagnostic> take() { return std::move(list_); }

 private:
  std::vector<Diagnostic> list_;
  std::size_t errors_ = 0;
};

// Where the values being read come from and how to expand them.
struct ReadContext {
  std::string file;    // shown in diagnostics
  std::string prefix;  // prepended to keys, e.g. "presets[2]." for inline presets
  Diagnostics* diag = nullptr;
  std::filesystem::path bin_dir;   // replaces ${GPUMOD_BIN_DIR}
  std::filesystem::path base_dir;  // relative paths in the daemon file are relative to this

  // The dotted key as shown to the user: "presets[2].port", or "presets[2]" for the entry itself.
  [[nodiscard]] std::string full_key(const std::string& key) const {
    if (!key.empty()) return prefix + key;
    return !prefix.empty() && prefix.back() == '.' ? prefix.substr(0, prefix.size() - 1) : prefix;
  }
  void error(int line, const std::string& key, const std::string& message) const {
    diag->error(file, line, full_key(key), message);
  }
  void warning(int line, const std::string& key, const std::string& message) const {
    diag->warning(file, line, full_key(key), message);
  }
};

// 1-based line of a node, or `fallback` when yaml-cpp has no mark for it.
int line_of(const YAML::Node& node, int fallback);
// "'text'", "a list", "a mapping" or "nothing": what the user wrote, for "got ..." phrases.
std::string describe(const YAML::Node& node);

// Each reader validates one value; on failure it reports an error and returns std::nullopt.
// `line` is the key's line (used when the value node has no position of its own).
std::optional<std::string> read_string(const ReadContext& c, const YAML::Node& v, int line,
                                       const std::string& key);
std::optional<std::int64_t> read_int(const ReadContext& c, const YAML::Node& v, int line,
                                     const std::string& key, std::int64_t min, std::int64_t max);
std::optional<double> read_number(const ReadContext& c, const YAML::Node& v, int line, const std::string& key,
                                  double min);
std::optional<bool> read_bool(const ReadContext& c, const YAML::Node& v, int line, const std::string& key);
// A number of seconds or a duration string ("500ms", "90s", "3m", "1h", "1m30s").
std::optional<std::chrono::milliseconds> read_duration(const ReadContext& c, const YAML::Node& v, int line,
                                                       const std::string& key, bool allow_zero);
std::optional<std::vector<std::string>> read_string_list(const ReadContext& c, const YAML::Node& v, int line,
                                                         const std::string& key);
std::optional<std::vector<int>> read_index_list(const ReadContext& c, const YAML::Node& v, int line,
                                                const std::string& key);
// A mapping of names to scalar values (numbers and bools become their text).
struct MapEntry {
  std::string key;
  std::string value;
  int line = 0;
};
std::optional<std::vector<MapEntry>> read_scalar_map(const ReadContext& c, const YAML::Node& v, int line,
                                                     const std::string& key);

// One of `names` (the enum's spellings); the error lists them all.
std::optional<std::string> read_choice(const ReadContext& c, const YAML::Node& v, int line,
                                       const std::string& key, const std::vector<std::string>& names);

// Walks a mapping: rejects non-scalar and repeated keys, reports unknown keys with the allowed
// ones (and a "did you mean" for near misses), and calls `on_key(name, key_line, value)` for
// each known key. Returns false when `node` is not a mapping (reported as `what`).
bool for_each_key(const ReadContext& c, const YAML::Node& node, const std::string& what,
                  const std::vector<std::string>& allowed,
                  const std::function<void(const std::string&, int, const YAML::Node&)>& on_key);

// Expansion of `$VAR`, `${VAR}`, `$$` (a literal '$') and a leading "~/" from the environment;
// GPUMOD_BIN_DIR comes from bin_dir. Unknown variables are errors naming the variable.
Result<std::string> expand_env(const std::string& text, const std::filesystem::path& bin_dir);
// Only ${GPUMOD_BIN_DIR} / $GPUMOD_BIN_DIR (argv elements: no shell, so nothing else is special).
std::string expand_bin_dir(const std::string& text, const std::filesystem::path& bin_dir);

std::string join(const std::vector<std::string>& items, const std::string& sep);

}  // namespace gpumod::config::detail
