// Loading: finds the files of a config (daemon file, presets/**, modes/**), parses each, applies
// the command-line overrides and defaults, and runs the cross-checks. Every problem becomes a
// Diagnostic; a Config is returned only when there are no errors.
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <sstream>
#include <system_error>

#include <yaml-cpp/eventhandler.h>

#include "base/utf8.hpp"
#include "config/parse.hpp"

namespace gpumod::config {
namespace {

namespace fs = std::filesystem;
using detail::Diagnostics;
using detail::ModeEntry;
using detail::PresetEntry;
using detail::ReadContext;

constexpr const char* kDaemonFileName = "gpumod.yaml";

std::string env_or_empty(const char* name) {
  const char* value = std::getenv(name);  // NOLINT(concurrency-mt-unsafe): read at load only
  return value != nullptr ? std::string(value) : std::string();
}

// $GPUMOD_BIN_DIR, else the directory of the running program. In a build tree the daemon is
// <build>/app/gpumod and the engine <build>/tools/test-engine/gpumod-test-engine: when the
// program's own directory has no engine but that sibling does, use the sibling.
fs::path default_bin_dir() {
  if (std::string env = env_or_empty("GPUMOD_BIN_DIR"); !env.empty()) return env;
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (ec) return fs::current_path(ec);
  fs::path dir = exe.parent_path();
  fs::path build_tree_engine_dir = dir.parent_path() / "tools" / "test-engine";
  if (!fs::exists(dir / "gpumod-test-engine", ec) &&
      fs::exists(build_tree_engine_dir / "gpumod-test-engine", ec)) {
    return build_tree_engine_dir;
  }
  return dir;
}

Result<fs::path> default_state_dir() {
  if (std::string v = env_or_empty("GPUMOD_STATE_DIR"); !v.empty()) return fs::path(v);
  if (std::string v = env_or_empty("XDG_STATE_HOME"); !v.empty()) return fs::path(v) / "gpumod";
  if (std::string v = env_or_empty("HOME"); !v.empty()) return fs::path(v) / ".local" / "state" / "gpumod";
  if (geteuid() == 0) return fs::path("/var/lib/gpumod");
  return make_error(
      "cannot choose a state directory: none of GPUMOD_STATE_DIR, XDG_STATE_HOME, HOME is set; "
      "expected state_dir in the daemon file or --state-dir");
}

std::optional<std::string> read_text(const fs::path& path, const std::string& name, Diagnostics& diag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    diag.error(name, 0, "", "cannot read the file");
    return std::nullopt;
  }
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

// Where `text` (well-formed UTF-8) holds a character YAML does not allow in a stream
// (c-printable, YAML 1.2 5.1): C0 controls other than TAB, LF and CR, DEL, C1 controls other
// than NEL, U+FFFE and U+FFFF.
std::optional<std::size_t> non_printable_offset(std::string_view text) {
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    const auto next = i + 1 < text.size() ? static_cast<unsigned char>(text[i + 1]) : 0;
    const auto third = i + 2 < text.size() ? static_cast<unsigned char>(text[i + 2]) : 0;
    if ((c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0x7f) return i;
    if (c == 0xc2 && next >= 0x80 && next <= 0x9f && next != 0x85) return i;
    if (c == 0xef && next == 0xbf && (third == 0xbe || third == 0xbf)) return i;
  }
  return std::nullopt;
}

// Counts the documents of a YAML stream through yaml-cpp's event parser, and notices when the
// parser stops making progress: yaml-cpp 0.7's LoadAll loops forever, allocating, when a
// document is followed by a token no document can begin with (a ',' outside [ ] and { }: ",",
// "!!str ," and "a\n,b" all hang it; fuzzer findings). Each such round starts a new document
// at the same place, so two document starts at one position mean the parser is stuck there.
class DocumentCounter final : public YAML::EventHandler {
 public:
  void OnDocumentStart(const YAML::Mark& mark) override { starts.push_back(mark); }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t, const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {
  }
  void OnMapEnd() override {}

  std::vector<YAML::Mark> starts;
  [[nodiscard]] bool stuck() const {
    return starts.size() >= 2 && starts.back().pos == starts[starts.size() - 2].pos;
  }
};

// One YAML document; syntax errors (with their line) become diagnostics. YAML is printable UTF-8
// text: anything else is refused before yaml-cpp sees it (0.7 loops forever on some ill-formed
// bytes and on some control characters, fuzzer findings).
std::optional<YAML::Node> parse_yaml(const std::string& text, const std::string& name, Diagnostics& diag) {
  const auto bad_utf8 = utf8_error_offset(text);
  const auto bad = bad_utf8 ? bad_utf8 : non_printable_offset(text);
  if (bad) {
    const std::string_view before(text.data(), *bad);
    const auto last_newline = before.rfind('\n');
    const std::size_t column = *bad - (last_newline == std::string_view::npos ? 0 : last_newline + 1) + 1;
    const int line = 1 + static_cast<int>(std::count(before.begin(), before.end(), '\n'));
    const std::string where =
        "byte 0x" + hex_byte(static_cast<unsigned char>(text[*bad])) + " at column " + std::to_string(column);
    diag.error(name, line, "",
               bad_utf8 ? "not valid UTF-8: " + where + " (save the file as UTF-8)"
                        : "a control character (" + where + ") that YAML does not allow");
    return std::nullopt;
  }
  try {
    std::istringstream in(text);
    YAML::Parser parser(in);
    DocumentCounter counter;
    while (parser.HandleNextDocument(counter)) {
      if (!counter.stuck()) continue;
      const YAML::Mark& at = counter.starts.back();
      diag.error(name, at.line + 1, "",
                 "YAML syntax error at column " + std::to_string(at.column + 1) +
                     ": nothing can begin there (a ',' belongs between the items of [ ] or { })");
      return std::nullopt;
    }
    // The stream is known to parse to its end now, so LoadAll is safe.
    std::vector<YAML::Node> docs = YAML::LoadAll(text);
    if (docs.size() > 1) {
      diag.error(name, detail::line_of(docs[1], 0), "",
                 "expected one YAML document per file, found " + std::to_string(docs.size()));
      return std::nullopt;
    }
    return docs.empty() ? YAML::Node(YAML::NodeType::Null) : docs[0];
  } catch (const YAML::ParserException& e) {
    diag.error(name, e.mark.line >= 0 ? e.mark.line + 1 : 0, "", "YAML syntax error: " + e.msg);
  } catch (const YAML::Exception& e) {
    diag.error(name, e.mark.line >= 0 ? e.mark.line + 1 : 0, "", std::string("YAML error: ") + e.what());
  }
  return std::nullopt;
}

// A presets or modes folder is a few dozen files; a walk that meets more entries than this is
// pointed at the wrong place (`presets_dir: /` or `$HOME` would read the whole disk, a fuzzer
// finding: the load never ended), and stops with an error instead.
constexpr std::size_t kMaxEntriesInConfigDir = 20000;

// *.yaml and *.yml below `dir` (any depth), sorted so that loading is deterministic; nullopt
// when the folder holds more than kMaxEntriesInConfigDir entries.
std::optional<std::vector<fs::path>> yaml_files_under(const fs::path& dir) {
  std::vector<fs::path> files;
  std::error_code ec;
  std::size_t seen = 0;
  for (fs::recursive_directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec), end;
       !ec && it != end; it.increment(ec)) {
    if (++seen > kMaxEntriesInConfigDir) return std::nullopt;
    const fs::path& p = it->path();
    const std::string name = p.filename().string();
    if (!name.empty() && name[0] == '.') {
      if (it->is_directory(ec)) it.disable_recursion_pending();
      continue;
    }
    if (it->is_regular_file(ec) && (p.extension() == ".yaml" || p.extension() == ".yml")) files.push_back(p);
  }
  std::sort(files.begin(), files.end());
  return files;
}

// What to read: a daemon file (or none), and whether presets/ and modes/ next to it count.
struct Sources {
  std::optional<std::string> daemon_text;
  std::string daemon_name;  // shown in diagnostics
  fs::path base_dir;
  bool default_dirs = false;
  std::string source;  // Config::source
  // Preset and mode files given as text (name, text), read as if they lay in presets/, modes/.
  std::vector<std::pair<std::string, std::string>> preset_texts, mode_texts;
};

// A file's problems when it holds a preset or mode where a daemon file was expected.
bool looks_like_entry_file(const YAML::Node& root) {
  return root.IsMap() && root["id"] && (root["driver"] || root["vram_mb"] || root["services"]);
}

LoadResult assemble(const Sources& src, const LoadOptions& opts) {
  Diagnostics diag;
  const fs::path bin_dir = opts.bin_dir.empty() ? default_bin_dir() : opts.bin_dir;
  ReadContext ctx;
  ctx.file = src.daemon_name;
  ctx.diag = &diag;
  ctx.bin_dir = bin_dir;
  ctx.base_dir = src.base_dir;

  detail::DaemonFile df;
  df.settings.loc = SourceLoc{src.daemon_name, 0};
  if (src.daemon_text) {
    if (auto root = parse_yaml(*src.daemon_text, src.daemon_name, diag)) {
      if (looks_like_entry_file(*root)) {
        diag.error(
            src.daemon_name, detail::line_of(*root, 1), "",
            "this looks like a preset or mode file; expected a daemon file (listen, gpus, policy, ...) or "
            "the directory holding presets/ and modes/");
      } else {
        detail::parse_daemon(ctx, *root, df);
      }
    }
  }

  // presets/ and modes/: named in the daemon file, else next to it.
  auto entry_dir = [&](const std::optional<fs::path>& named, int line, const std::string& key,
                       const char* default_name) -> std::optional<fs::path> {
    std::error_code ec;
    if (named) {
      if (!fs::is_directory(*named, ec)) {
        diag.error(src.daemon_name, line, key,
                   "'" + named->string() + "' is not a directory; expected the folder of " +
                       std::string(default_name) + " files");
        return std::nullopt;
      }
      return named;
    }
    if (src.default_dirs) {
      const fs::path p = src.base_dir / default_name;
      if (fs::is_directory(p, ec)) return p;
    }
    return std::nullopt;
  };

  std::vector<PresetEntry> presets = std::move(df.presets);
  std::vector<ModeEntry> modes = std::move(df.modes);
  using Take = std::function<void(const ReadContext&, const YAML::Node&)>;
  auto load_entry = [&](const std::string& name, const std::string& text, const fs::path& base,
                        const Take& take) {
    auto root = parse_yaml(text, name, diag);
    if (!root) return;
    ReadContext fc = ctx;
    fc.file = name;
    fc.base_dir = base;
    take(fc, *root);
  };
  auto load_entries = [&](const fs::path& dir, int line, const std::string& key, const Take& take) {
    const auto found = yaml_files_under(dir);
    if (!found) {
      diag.error(src.daemon_name, line, key,
                 "'" + dir.string() + "' holds more than " + std::to_string(kMaxEntriesInConfigDir) +
                     " files and folders; expected the folder of " + key.substr(0, key.size() - 4) +
                     " files");
      return;
    }
    for (const auto& file : *found) {
      const std::string name = file.lexically_normal().string();
      if (auto text = read_text(file, name, diag)) load_entry(name, *text, file.parent_path(), take);
    }
  };
  const Take take_preset = [&](const ReadContext& fc, const YAML::Node& root) {
    if (auto p = detail::parse_preset(fc, root)) presets.push_back(PresetEntry{std::move(*p), ""});
  };
  const Take take_mode = [&](const ReadContext& fc, const YAML::Node& root) {
    if (auto m = detail::parse_mode(fc, root)) modes.push_back(ModeEntry{std::move(*m), ""});
  };
  std::vector<Config::WatchedDir> watched;
  if (!src.base_dir.empty() && src.default_dirs) watched.push_back({src.base_dir, false});
  if (auto dir = entry_dir(df.presets_dir, df.presets_dir_line, "presets_dir", "presets")) {
    load_entries(*dir, df.presets_dir_line, "presets_dir", take_preset);
    watched.push_back({*dir, true});
  }
  if (auto dir = entry_dir(df.modes_dir, df.modes_dir_line, "modes_dir", "modes")) {
    load_entries(*dir, df.modes_dir_line, "modes_dir", take_mode);
    watched.push_back({*dir, true});
  }
  for (const auto& [name, text] : src.preset_texts) load_entry(name, text, src.base_dir, take_preset);
  for (const auto& [name, text] : src.mode_texts) load_entry(name, text, src.base_dir, take_mode);

  // Overrides from the command line, then defaults.
  DaemonSettings& d = df.settings;
  detail::CheckInput check;
  check.listen_file = src.daemon_name;
  check.listen_line = df.listen_line;
  if (opts.listen) {
    check.listen_file = "--listen";
    check.listen_line = 0;
    auto hp = parse_host_port(*opts.listen);
    if (hp) {
      d.listen_host = hp.value().host;
      d.listen_port = hp.value().port;
    } else {
      diag.error("--listen", 0, "listen", hp.error());
    }
  }
  std::error_code ec;
  if (opts.state_dir) {
    d.state_dir = fs::absolute(*opts.state_dir, ec);
  } else if (!df.state_dir_given) {
    auto dir = default_state_dir();
    if (dir) {
      d.state_dir = dir.value();
    } else {
      diag.error(src.daemon_name, 0, "state_dir", dir.error());
    }
  }
  if (!df.log_dir_given) d.log_dir = d.state_dir / "logs";

  check.presets = &presets;
  check.modes = &modes;
  check.daemon = &df;
  detail::cross_check(check, diag);

  if (presets.empty() && !diag.has_errors()) {
    diag.warning(
        src.daemon_name, 0, "presets",
        "no presets found (expected presets/**/*.yaml next to the daemon file, presets_dir, or inline "
        "presets)");
  }

  LoadResult result;
  result.diagnostics = diag.take();
  const bool failed =
      std::any_of(result.diagnostics.begin(), result.diagnostics.end(),
                  [](const Diagnostic& x) { return x.severity == Diagnostic::Severity::error; });
  if (failed) return result;
  Config cfg;
  cfg.daemon = std::move(d);
  for (auto& e : presets) cfg.presets.push_back(std::move(e.preset));
  for (auto& e : modes) cfg.modes.push_back(std::move(e.mode));
  for (const auto& x : result.diagnostics) {
    if (x.severity == Diagnostic::Severity::warning) cfg.warnings.push_back(x);
  }
  cfg.source = src.source;
  cfg.watched_dirs = std::move(watched);
  result.config = std::move(cfg);
  return result;
}

LoadResult single_error(const std::string& file, const std::string& message) {
  LoadResult r;
  r.diagnostics.push_back(Diagnostic{Diagnostic::Severity::error, file, 0, "", message});
  return r;
}

// Config directories below `dir` (not descending into one once found), sorted.
void find_config_dirs(const fs::path& dir, int depth, std::vector<fs::path>& out) {
  if (depth > 6) return;
  std::error_code ec;
  std::vector<fs::path> subdirs;
  for (fs::directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec), end;
       !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.empty() || name[0] == '.' || it->is_symlink(ec) || !it->is_directory(ec)) continue;
    subdirs.push_back(it->path());
  }
  std::sort(subdirs.begin(), subdirs.end());
  for (const auto& sub : subdirs) {
    if (is_config_dir(sub)) {
      out.push_back(sub);
    } else {
      find_config_dirs(sub, depth + 1, out);
    }
  }
}

}  // namespace

bool is_config_dir(const std::filesystem::path& path) {
  std::error_code ec;
  return fs::is_directory(path, ec) &&
         (fs::is_directory(path / "presets", ec) || fs::is_directory(path / "modes", ec) ||
          fs::is_regular_file(path / kDaemonFileName, ec));
}

LoadResult load(const std::filesystem::path& path, const LoadOptions& opts) {
  std::error_code ec;
  const std::string shown = path.string();
  if (!fs::exists(path, ec))
    return single_error(shown, "does not exist; expected a daemon file or a config directory");
  Sources src;
  src.source = shown;
  src.default_dirs = true;
  fs::path daemon_file;
  if (fs::is_directory(path, ec)) {
    if (!is_config_dir(path)) {
      std::vector<fs::path> found;
      find_config_dirs(path, 0, found);
      std::string message =
          "is not a gpumod config: expected presets/, modes/ or " + std::string(kDaemonFileName) + " in it";
      if (!found.empty()) {
        std::vector<std::string> names;
        names.reserve(found.size());
        for (const auto& f : found) names.push_back(f.lexically_relative(path).string());
        message += "; it holds configs in " + detail::join(names, ", ") +
                   " (load one of them, or check them all with "
                   "`gpumod config check`)";
      }
      return single_error(shown, message);
    }
    src.base_dir = path;
    if (fs::is_regular_file(path / kDaemonFileName, ec)) daemon_file = path / kDaemonFileName;
  } else {
    daemon_file = path;
    src.base_dir = path.has_parent_path() ? path.parent_path() : fs::path(".");
  }
  Diagnostics read_diag;
  if (!daemon_file.empty()) {
    src.daemon_name = daemon_file.lexically_normal().string();
    src.daemon_text = read_text(daemon_file, src.daemon_name, read_diag);
    if (!src.daemon_text) {
      LoadResult r;
      r.diagnostics = read_diag.take();
      return r;
    }
  } else {
    src.daemon_name = shown;  // no daemon file: messages about daemon settings name the directory
  }
  return assemble(src, opts);
}

LoadResult load_daemon_string(const std::string& yaml, const std::string& name, const LoadOptions& opts) {
  ConfigTexts texts;
  texts.daemon = yaml;
  texts.daemon_name = name;
  return load_texts(texts, opts);
}

LoadResult load_texts(const ConfigTexts& texts, const LoadOptions& opts) {
  Sources src;
  src.daemon_text = texts.daemon;
  src.daemon_name = texts.daemon_name;
  src.base_dir = ".";
  src.default_dirs = false;
  src.source = texts.daemon_name;
  src.preset_texts = texts.presets;
  src.mode_texts = texts.modes;
  return assemble(src, opts);
}

std::vector<std::pair<std::filesystem::path, LoadResult>> check_tree(const std::filesystem::path& path,
                                                                     const LoadOptions& opts) {
  std::vector<std::pair<fs::path, LoadResult>> out;
  std::error_code ec;
  if (!fs::exists(path, ec) || !fs::is_directory(path, ec) || is_config_dir(path)) {
    out.emplace_back(path, load(path, opts));
    return out;
  }
  std::vector<fs::path> found;
  find_config_dirs(path, 0, found);
  for (const auto& dir : found) out.emplace_back(dir, load(dir, opts));
  if (out.empty()) {
    out.emplace_back(path, single_error(path.string(),
                                        "no gpumod config found in it or below it (expected a "
                                        "directory with presets/, modes/ or " +
                                            std::string(kDaemonFileName) + ")"));
  }
  return out;
}

}  // namespace gpumod::config
