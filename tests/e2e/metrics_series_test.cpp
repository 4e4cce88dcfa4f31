// Every metric family and label set that docs/metrics.md promises, read off a freshly started
// `gpumod serve` before anything happened, and again after a reload that adds and removes
// services and modes. The expected families come from the doc's own tables, so a family the doc
// lists and the daemon does not export (or exports only after its first event, when increase()
// can no longer see that event) fails here.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "tests/e2e/daemon_fixture.hpp"
#include "tests/e2e/e2e_helpers.hpp"

namespace gpumod::e2e {
namespace {

struct DocFamily {
  std::string name;
  std::string type;                 // gauge, counter, histogram ("gauge (=1)" -> gauge)
  std::vector<std::string> labels;  // as the doc lists them
};

// The rows of docs/metrics.md's tables: | `gpumod_x` | type | labels | meaning |.
std::vector<DocFamily> documented_families() {
  std::ifstream in(std::string(GPUMOD_SOURCE_DIR) + "/docs/metrics.md");
  std::vector<DocFamily> out;
  const std::regex row(R"(^\| `(gpumod_[a-z_]+)` \| ([a-z]+)[^|]*\| ([^|]*)\|)");
  std::string line;
  while (std::getline(in, line)) {
    std::smatch m;
    if (!std::regex_search(line, m, row)) continue;
    DocFamily f{m[1], m[2], {}};
    std::stringstream labels(m[3].str());
    std::string label;
    while (std::getline(labels, label, ',')) {
      label.erase(0, label.find_first_not_of(' '));
      label.erase(label.find_last_not_of(' ') + 1);
      if (!label.empty() && label != "–" && label != "-") f.labels.push_back(label);
    }
    out.push_back(std::move(f));
  }
  return out;
}

using LabelSet = std::map<std::string, std::string>;

// /metrics text -> series name -> every label set seen.
std::map<std::string, std::set<LabelSet>> parse_exposition(const std::string& text) {
  std::map<std::string, std::set<LabelSet>> out;
  std::istringstream in(text);
  std::string line;
  const std::regex pair(R"re(([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)")re");
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const auto brace = line.find('{');
    const auto space = line.find(' ');
    const std::string name = line.substr(0, std::min(brace, space));
    LabelSet labels;
    if (brace != std::string::npos && brace < space) {
      const std::string inner = line.substr(brace + 1, line.find('}') - brace - 1);
      for (std::sregex_iterator it(inner.begin(), inner.end(), pair), end; it != end; ++it) {
        labels[(*it)[1]] = (*it)[2];
      }
    }
    out[name].insert(labels);
  }
  return out;
}

// What each label of the doc's tables ranges over, for a daemon with these GPUs, services and
// modes; the fixed sets are the ones docs/metrics.md names ("Series exist before the first
// event").
std::map<std::string, std::vector<std::string>> label_values(const std::vector<std::string>& services,
                                                             const std::vector<std::string>& modes) {
  return {
      {"gpu", {"0"}},
      {"svc", services},
      {"mode", modes},
      {"state", {"stopped", "starting", "ready", "sleeping", "waking", "stopping", "failed"}},
      {"action", {"sleep", "stop"}},
      {"endpoint", {"/v1/chat/completions", "/v1/completions", "/v1/embeddings"}},
      {"code", {"200"}},
      {"result", {"success", "failure"}},
      {"reason",
       {"queue_full", "never_fits", "unknown_model", "cancelled", "bad_request", "vram_not_released",
        "shutting_down"}},
  };
}

// Identity labels whose values are not a fixed set: present, with some value.
bool free_valued(const std::string& label) {
  return label == "uuid" || label == "name" || label == "version" || label == "revision" ||
         label == "compiler";
}

// Families the doc says are absent until the probe can read them.
bool absent_until_read(const std::string& family) {
  return family == "gpumod_service_vram_measured_bytes";
}

// Every documented family has a series for every combination of its labels' values; a
// histogram's _count carries the labels. Returns what is missing, one line each.
std::vector<std::string> missing_series(const std::map<std::string, std::set<LabelSet>>& exported,
                                        const std::vector<std::string>& services,
                                        const std::vector<std::string>& modes) {
  const auto values = label_values(services, modes);
  std::vector<std::string> missing;
  for (const auto& f : documented_families()) {
    if (absent_until_read(f.name)) continue;
    const std::string series = f.type == "histogram" ? f.name + "_count" : f.name;
    auto it = exported.find(series);
    if (it == exported.end()) {
      missing.push_back(series + " (no series at all)");
      continue;
    }
    // Expand the fixed-valued labels into every combination.
    std::vector<LabelSet> wanted{LabelSet{}};
    for (const auto& label : f.labels) {
      if (free_valued(label)) continue;
      auto v = values.find(label);
      if (v == values.end()) {
        missing.push_back(f.name + ": the test does not know label '" + label + "'");
        continue;
      }
      std::vector<LabelSet> next;
      for (const auto& partial : wanted) {
        for (const auto& value : v->second) {
          LabelSet with = partial;
          with[label] = value;
          next.push_back(with);
        }
      }
      wanted = std::move(next);
    }
    for (const auto& w : wanted) {
      const bool found = std::any_of(it->second.begin(), it->second.end(), [&](const LabelSet& have) {
        for (const auto& [k, v] : w) {
          auto h = have.find(k);
          if (h == have.end() || h->second != v) return false;
        }
        for (const auto& label : f.labels) {
          if (free_valued(label) && have.count(label) == 0) return false;
        }
        return true;
      });
      if (!found) {
        std::string desc = series + "{";
        for (const auto& [k, v] : w) desc += k + "=\"" + v + "\",";
        missing.push_back(desc + "}");
      }
    }
  }
  return missing;
}

// Series of a service or mode that is no longer configured.
std::vector<std::string> stale_series(const std::map<std::string, std::set<LabelSet>>& exported,
                                      const std::string& label, const std::string& value) {
  std::vector<std::string> stale;
  for (const auto& [name, sets] : exported) {
    for (const auto& s : sets) {
      auto it = s.find(label);
      if (it != s.end() && it->second == value) stale.push_back(name);
    }
  }
  return stale;
}

TEST(MetricsSeries, EveryDocumentedSeriesExistsAtStartupAndFollowsAReload) {
  ASSERT_GE(documented_families().size(), 30U) << "docs/metrics.md tables not found or changed shape";
  TempDir dir;
  GeneratedConfig cfg;
  cfg.presets = {engine_preset("alpha", "vllm", free_port(), 1000),
                 engine_preset("beta", "router", free_port(), 1000)};
  cfg.modes = {{"one", {"alpha"}}, {"two", {"alpha", "beta"}}};
  write_config(dir.path() / "config", cfg);
  Daemon d(dir.path() / "config", dir.path() / "state");
  ASSERT_TRUE(d.started());

  auto exported = parse_exposition(d.get("/metrics").body);
  for (const auto& m : missing_series(exported, {"alpha", "beta"}, {"one", "two"}))
    ADD_FAILURE() << "at startup: " << m;

  // Reload: beta and mode "one" go, gamma and mode "three" come.
  cfg.presets = {engine_preset("alpha", "vllm", cfg.presets[0].port, 1000),
                 engine_preset("gamma", "vllm", free_port(), 1000)};
  cfg.modes = {{"two", {"alpha"}}, {"three", {"gamma"}}};
  fs::remove_all(dir.path() / "config");
  write_config(dir.path() / "config", cfg);
  auto reload = d.post("/reload");
  ASSERT_EQ(reload.status, 200) << reload.body;

  exported = parse_exposition(d.get("/metrics").body);
  for (const auto& m : missing_series(exported, {"alpha", "gamma"}, {"two", "three"})) {
    ADD_FAILURE() << "after the reload: " << m;
  }
  for (const auto& s : stale_series(exported, "svc", "beta")) ADD_FAILURE() << "removed service kept: " << s;
  for (const auto& s : stale_series(exported, "mode", "one")) ADD_FAILURE() << "removed mode kept: " << s;
}

}  // namespace
}  // namespace gpumod::e2e
