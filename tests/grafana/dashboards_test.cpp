// The shipped Grafana dashboards and alert rules, checked the way an operator would trip over
// them: JSON that loads, unique uids and panel ids, the datasource variable everywhere, a unit
// on every panel, $__rate_interval in every rate, PromQL that parses, and metric names that a
// real /metrics actually has.
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "exporter/metrics.hpp"
#include "tests/exporter/promtool.hpp"
#include "tests/exporter/sample_metrics.hpp"
#include "tests/grafana/dashboard_queries.hpp"

namespace gpumod {
namespace {

using grafana_check::dashboard_files;
using grafana_check::dashboard_queries;
using grafana_check::is_row;
using grafana_check::kAlertRules;
using grafana_check::load_dashboards;
using grafana_check::panels_of;
using grafana_check::Query;
using grafana_check::read_text;
using grafana_check::substitute_grafana_variables;
using nlohmann::json;

std::vector<Query> alert_queries() {
  std::vector<Query> out;
  const YAML::Node doc = YAML::LoadFile(kAlertRules.string());
  for (const auto& group : doc["groups"]) {
    for (const auto& rule : group["rules"]) {
      const std::string name =
          rule["alert"] ? rule["alert"].as<std::string>() : rule["record"].as<std::string>();
      out.push_back(
          {"alert " + name, rule["expr"].as<std::string>(), true, kAlertRules.filename().string(), name});
    }
  }
  return out;
}

// Metric names a query reads: identifiers outside quoted strings that start with gpumod_.
std::set<std::string> gpumod_metric_names(const std::string& expr) {
  const std::string unquoted = std::regex_replace(expr, std::regex(R"("([^"\\]|\\.)*")"), "\"\"");
  std::set<std::string> names;
  static const std::regex ident(R"([A-Za-z_:][A-Za-z0-9_:]*)");
  for (auto it = std::sregex_iterator(unquoted.begin(), unquoted.end(), ident); it != std::sregex_iterator();
       ++it) {
    const std::string name = it->str();
    if (name.rfind("gpumod_", 0) == 0) names.insert(name);
  }
  return names;
}

TEST(Dashboards, EveryDashboardIsValidJsonWithATitleAndUid) {
  const auto files = dashboard_files();
  ASSERT_GE(files.size(), 2U) << "expected the overview and the per-service dashboard";
  for (const auto& file : files) {
    json doc;
    ASSERT_NO_THROW(doc = json::parse(read_text(file))) << file;
    EXPECT_TRUE(doc.is_object()) << file;
    EXPECT_FALSE(doc.value("uid", "").empty()) << file;
    EXPECT_FALSE(doc.value("title", "").empty()) << file;
    EXPECT_FALSE(panels_of({file.string(), doc}).empty()) << file;
  }
}

TEST(Dashboards, UidsAreUniqueAcrossDashboardsAndPanelIdsWithinEach) {
  std::set<std::string> uids;
  for (const auto& d : load_dashboards()) {
    EXPECT_TRUE(uids.insert(d.doc.value("uid", "")).second) << "duplicate uid in " << d.file;
    std::set<int> ids;
    for (const auto& p : panels_of(d)) {
      ASSERT_TRUE(p.contains("id")) << d.file << ": " << p.value("title", "?");
      EXPECT_TRUE(ids.insert(p["id"].get<int>()).second)
          << d.file << ": panel id " << p["id"] << " (" << p.value("title", "?") << ") is not unique";
    }
  }
}

TEST(Dashboards, DatasourceInstanceAndSvcVariablesExist) {
  for (const auto& d : load_dashboards()) {
    std::map<std::string, json> vars;
    for (const auto& v : d.doc["templating"]["list"]) vars[v.value("name", "")] = v;
    ASSERT_TRUE(vars.count("datasource")) << d.file;
    EXPECT_EQ(vars["datasource"].value("type", ""), "datasource") << d.file;
    EXPECT_EQ(vars["datasource"].value("query", ""), "prometheus") << d.file;
    EXPECT_TRUE(vars.count("instance")) << d.file;
    EXPECT_TRUE(vars.count("svc")) << d.file;
  }
}

TEST(Dashboards, EveryPanelTargetAndVariableUsesTheDatasourceVariable) {
  auto uses_variable = [](const json& ds) {
    if (ds.is_string())
      return ds.get<std::string>() == "${datasource}" || ds.get<std::string>() == "$datasource";
    return ds.is_object() && (ds.value("uid", "") == "${datasource}" || ds.value("uid", "") == "$datasource");
  };
  for (const auto& d : load_dashboards()) {
    for (const auto& p : panels_of(d)) {
      if (is_row(p)) continue;
      const std::string where = d.file + ": " + p.value("title", "?");
      ASSERT_TRUE(p.contains("datasource")) << where;
      EXPECT_TRUE(uses_variable(p["datasource"])) << where << " uses " << p["datasource"];
      ASSERT_FALSE(p.value("targets", json::array()).empty()) << where << " has no query";
      for (const auto& t : p["targets"]) {
        ASSERT_TRUE(t.contains("datasource")) << where << " target " << t.value("refId", "?");
        EXPECT_TRUE(uses_variable(t["datasource"])) << where << " target " << t.value("refId", "?");
      }
    }
    for (const auto& v : d.doc["templating"]["list"]) {
      if (v.value("type", "") == "query") {
        EXPECT_TRUE(uses_variable(v["datasource"])) << d.file << ": variable " << v.value("name", "?");
      }
    }
  }
}

TEST(Dashboards, EveryPanelHasAUnit) {
  for (const auto& d : load_dashboards()) {
    for (const auto& p : panels_of(d)) {
      if (is_row(p)) continue;
      const std::string unit = p.value("/fieldConfig/defaults/unit"_json_pointer, "");
      EXPECT_FALSE(unit.empty()) << d.file << ": " << p.value("title", "?") << " has no unit";
    }
  }
}

TEST(Dashboards, EveryRateIrateAndIncreaseUsesRateInterval) {
  static const std::regex call(R"(\b(rate|irate|increase)\s*\()");
  static const std::regex range(R"(\[([^\]]*)\])");
  int calls = 0;
  for (const auto& q : dashboard_queries(load_dashboards())) {
    const std::string& e = q.expr;
    for (auto it = std::sregex_iterator(e.begin(), e.end(), call); it != std::sregex_iterator(); ++it) {
      ++calls;
      // The argument runs to the matching closing parenthesis.
      std::size_t pos = static_cast<std::size_t>(it->position() + it->length());
      int depth = 1;
      const std::size_t begin = pos;
      for (; pos < e.size() && depth > 0; ++pos) {
        if (e[pos] == '(') ++depth;
        if (e[pos] == ')') --depth;
      }
      const std::string argument = e.substr(begin, pos - begin);
      int ranges = 0;
      for (auto r = std::sregex_iterator(argument.begin(), argument.end(), range);
           r != std::sregex_iterator(); ++r) {
        ++ranges;
        EXPECT_EQ((*r)[1].str(), "$__rate_interval") << q.where << ": " << e;
      }
      EXPECT_EQ(ranges, 1) << q.where << ": " << e;
    }
  }
  EXPECT_GT(calls, 10) << "the dashboards should graph rates";
}

// promtool has no "parse" command: every expression becomes a recording rule in a temporary
// rules file, which `promtool check rules` parses.
TEST(Dashboards, EveryDashboardAndAlertExpressionParsesAsPromQL) {
  const auto promtool = test::find_promtool();
  if (!promtool)
    GTEST_SKIP() << "promtool is not installed (Debian package 'prometheus'); PromQL not checked";
  auto queries = dashboard_queries(load_dashboards());
  for (auto& q : alert_queries()) queries.push_back(q);
  std::ostringstream rules;
  rules << "groups:\n  - name: gpumod_dashboard_expressions\n    rules:\n";
  int n = 0;
  for (const auto& q : queries) {
    if (!q.promql) continue;
    rules << "      # " << q.where << "\n      - record: gpumod_check:expr_" << ++n << "\n        expr: |\n";
    std::istringstream lines(substitute_grafana_variables(q.expr));
    std::string line;
    while (std::getline(lines, line)) rules << "          " << line << "\n";
  }
  ASSERT_GT(n, 20);
  test::TempDir dir;
  const auto file = dir.write("expressions.rules.yml", rules.str());
  const auto result =
      test::run_command(test::shell_quote(*promtool) + " check rules " + test::shell_quote(file));
  EXPECT_EQ(result.exit_code, 0) << result.output << "\n--- generated rules ---\n" << rules.str();
  EXPECT_NE(result.output.find("SUCCESS: " + std::to_string(n) + " rules found"), std::string::npos)
      << result.output;
}

TEST(Dashboards, EveryMetricNameUsedByDashboardsAndAlertsExistsInMetricsOutput) {
  exporter::Metrics metrics({"0.1.0", "test", "g++"});
  test::populate_sample(metrics);
  std::set<std::string> exported;
  std::istringstream in(metrics.render());
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    exported.insert(line.substr(0, line.find_first_of("{ ")));
  }
  auto queries = dashboard_queries(load_dashboards());
  for (auto& q : alert_queries()) queries.push_back(q);
  std::set<std::string> used;
  for (const auto& q : queries) {
    for (const auto& name : gpumod_metric_names(q.expr)) {
      used.insert(name);
      EXPECT_TRUE(exported.count(name)) << q.where << " uses " << name << ", which /metrics does not export";
    }
  }
  EXPECT_GT(used.size(), 25U);
}

TEST(Dashboards, MetricNameExtractionIgnoresLabelValuesAndFindsHistogramSeries) {
  const auto names = gpumod_metric_names(
      R"(histogram_quantile(0.9, sum by (le) (rate(gpumod_x_seconds_bucket{svc="gpumod_not_a_metric"}[5m]))) / gpumod_y)");
  EXPECT_EQ(names, (std::set<std::string>{"gpumod_x_seconds_bucket", "gpumod_y"}));
  EXPECT_EQ(substitute_grafana_variables(R"(rate(m{instance=~"$instance",svc="${svc}"}[$__rate_interval]))"),
            R"(rate(m{instance=~"x",svc="x"}[5m]))");
}

}  // namespace
}  // namespace gpumod
