// The shipped Grafana dashboards as tests see them: load every dashboard JSON, walk its panels
// (rows' nested panels included), list each PromQL target and each query variable, and replace
// Grafana's template variables with values Prometheus accepts. Shared by the static dashboard
// checks (tests/grafana) and the real-Prometheus test (tests/prometheus).
#pragma once

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

namespace gpumod::grafana_check {

namespace fs = std::filesystem;
using nlohmann::json;

inline const fs::path kGrafanaDir = fs::path(GPUMOD_SOURCE_DIR) / "grafana";
inline const fs::path kAlertRules = kGrafanaDir / "alerts" / "gpumod.rules.yml";

struct Dashboard {
  std::string file;  // file name, e.g. "gpumod-overview.json"
  json doc;
};

// One query of a dashboard: a panel target or a template variable's query.
struct Query {
  std::string where;      // "file: panel title" or "file: variable name"
  std::string expr;       // as written in the dashboard, variables not substituted
  bool promql = true;     // template-variable queries like label_values(...) are not PromQL
  std::string dashboard;  // file name
  std::string ref_id;     // target refId ("A", "B", ...); the variable name for variables
};

inline std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline std::vector<fs::path> dashboard_files(const fs::path& grafana_dir = kGrafanaDir) {
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(grafana_dir / "dashboards")) {
    if (entry.path().extension() == ".json") files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

// Throws nlohmann::json::parse_error on a file that is not JSON.
inline std::vector<Dashboard> load_dashboards(const fs::path& grafana_dir = kGrafanaDir) {
  std::vector<Dashboard> out;
  for (const auto& file : dashboard_files(grafana_dir)) {
    out.push_back({file.filename().string(), json::parse(read_text(file))});
  }
  return out;
}

inline void collect_panels(const json& panels, std::vector<json>& out) {
  for (const auto& p : panels) {
    out.push_back(p);
    if (p.contains("panels")) collect_panels(p["panels"], out);
  }
}

// Every panel, rows' nested panels included.
inline std::vector<json> panels_of(const Dashboard& d) {
  std::vector<json> out;
  collect_panels(d.doc.value("panels", json::array()), out);
  return out;
}

inline bool is_row(const json& panel) {
  return panel.value("type", "") == "row";
}

inline std::vector<Query> dashboard_queries(const std::vector<Dashboard>& dashboards) {
  std::vector<Query> out;
  for (const auto& d : dashboards) {
    for (const auto& p : panels_of(d)) {
      for (const auto& t : p.value("targets", json::array())) {
        out.push_back({d.file + ": " + p.value("title", "?"), t.value("expr", ""), true, d.file,
                       t.value("refId", "?")});
      }
    }
    for (const auto& v : d.doc["templating"]["list"]) {
      if (v.value("type", "") != "query") continue;
      const auto& q = v["query"];
      const std::string name = v.value("name", "?");
      out.push_back({d.file + ": variable " + name,
                     q.is_object() ? q.value("query", "") : q.get<std::string>(), false, d.file, name});
    }
  }
  return out;
}

// Values for Grafana's variables. The built-ins default to what a dashboard over a few hours
// would use; any other variable takes its value from `named`, else `fallback`.
struct VariableValues {
  std::string rate_interval = "5m";
  std::string interval = "1m";
  std::string range = "1h";
  std::map<std::string, std::string> named;
  std::string fallback = "x";
};

// Replaces $name, ${name} and ${name:format} (the format is ignored).
inline std::string substitute_grafana_variables(const std::string& expr, const VariableValues& values = {}) {
  static const std::regex variable(R"(\$\{([A-Za-z0-9_]+)(:[A-Za-z]+)?\}|\$([A-Za-z_][A-Za-z0-9_]*))");
  std::string out;
  auto last = expr.cbegin();
  for (auto it = std::sregex_iterator(expr.begin(), expr.end(), variable); it != std::sregex_iterator();
       ++it) {
    const auto& m = *it;
    out.append(last, m[0].first);
    const std::string name = m[1].matched ? m[1].str() : m[3].str();
    if (name == "__rate_interval") {
      out += values.rate_interval;
    } else if (name == "__interval") {
      out += values.interval;
    } else if (name == "__range") {
      out += values.range;
    } else {
      const auto found = values.named.find(name);
      out += found != values.named.end() ? found->second : values.fallback;
    }
    last = m[0].second;
  }
  out.append(last, expr.cend());
  return out;
}

}  // namespace gpumod::grafana_check
