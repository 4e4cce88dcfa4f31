// Private to config/: the parsers for the three kinds of document (preset, mode, daemon file)
// and the cross-checks that need all of them at once.
#pragma once

#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "config/yaml_read.hpp"

namespace gpumod::config::detail {

// A parsed entry and the key prefix its diagnostics use ("" for a file of its own,
// "presets[2]." for an entry of an inline list).
struct PresetEntry {
  Preset preset;
  std::string prefix;
};
struct ModeEntry {
  Mode mode;
  std::string prefix;
};

// Returns the preset whenever its id could be read, even if other keys had errors, so that
// modes naming it do not also report it missing; the errors are in c.diag.
std::optional<Preset> parse_preset(const ReadContext& c, const YAML::Node& node);
std::optional<Mode> parse_mode(const ReadContext& c, const YAML::Node& node);

struct DaemonFile {
  DaemonSettings settings;
  bool sim_given = false;  // gpus.sim was written out (so sizes may be checked against it)
  bool state_dir_given = false;
  bool log_dir_given = false;
  int listen_line = 0;
  int gpus_use_line = 0;
  std::optional<std::filesystem::path> presets_dir;
  int presets_dir_line = 0;
  std::optional<std::filesystem::path> modes_dir;
  int modes_dir_line = 0;
  std::vector<PresetEntry> presets;  // inline
  std::vector<ModeEntry> modes;      // inline
};
void parse_daemon(const ReadContext& c, const YAML::Node& root, DaemonFile& out);

// Cross-checks over the whole config: duplicates, mode references and ports, GPU indexes and
// sizes, listen/token rules, unused unit_vars (warnings).
struct CheckInput {
  const std::vector<PresetEntry>* presets = nullptr;
  const std::vector<ModeEntry>* modes = nullptr;
  const DaemonFile* daemon = nullptr;
  std::string listen_file;  // where the listen address came from (the daemon file or "--listen")
  int listen_line = 0;
};
void cross_check(const CheckInput& in, Diagnostics& diag);

}  // namespace gpumod::config::detail
