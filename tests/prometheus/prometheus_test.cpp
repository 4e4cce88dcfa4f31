// gpumod as its operators watch it: a real Prometheus scrapes a running `gpumod serve` that drives
// test engines on a simulated GPU through a scripted day (a mode switch, proxied /v1 calls, a
// sleep and a wake, requests that evict by sleeping and by stopping, a reload, and an eviction
// whose memory is not released in time). Afterwards every panel query of both shipped Grafana
// dashboards must return data from that Prometheus, the dashboards' variable queries must list
// the daemon and its services, every shipped alert rule must evaluate cleanly, and the VRAM
// release timeout alert must be firing.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "tests/e2e/daemon_fixture.hpp"
#include "tests/e2e/e2e_helpers.hpp"
#include "tests/grafana/dashboard_queries.hpp"
#include "tests/prometheus/prometheus_server.hpp"
#include "tests/support/eventually.hpp"
#include "tests/support/net.hpp"
#include "tests/support/temp_dir.hpp"

namespace gpumod::prom {
namespace {

using e2e::Daemon;
using e2e::EnginePreset;
using e2e::GeneratedConfig;
using gpumod::testing::eventually;
using gpumod::testing::free_port;
using gpumod::testing::TempDir;
using grafana_check::Query;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

// The service the per-service dashboard is checked for: it cold-starts, serves /v1 calls,
// sleeps (asked to, and evicted), and wakes, so every panel of that dashboard has something to show.
constexpr const char* kServiceUnderWatch = "chat";

// A 10 GiB simulated GPU. chat + coder fill 9 GB; `big` then fits only if chat sleeps (the
// planner prefers that to stopping coder); waking chat again needs coder or big stopped.
// `laggy` holds its memory for 4 s after SIGTERM (its engine delays its exit), gpumod kills it
// after stop_grace (3 s) and the sim driver keeps a killed process' memory for 2.5 s more, so
// evicting it for `huge` outlasts a 1 s vram_release_timeout. The daemon starts with a generous
// timeout (slow machines and sanitizer builds take more than a second to stop an engine) and the
// scenario's reload lowers it to 1 s just before that eviction.
GeneratedConfig scenario_config() {
  GeneratedConfig cfg;
  cfg.gpu_mb = 10000;
  cfg.release_lag_ms = 2500;
  cfg.vram_release_timeout = "20s";
  auto engine = [](const std::string& id, const std::string& driver, int vram_mb,
                   const std::string& sleep_mode) {
    EnginePreset p;
    p.id = id;
    p.protocol = driver;  // the test engine speaks the protocol of the driver that runs it
    p.driver = driver;
    p.port = free_port();
    p.vram_mb = vram_mb;
    p.load_ms = 150;
    p.sleep_mode = sleep_mode;
    return p;
  };
  cfg.presets.push_back(engine("chat", "vllm", 4000, "l1"));
  cfg.presets.push_back(engine("coder", "llamacpp", 5000, "none"));
  cfg.presets.push_back(engine("big", "generic", 4000, "none"));
  cfg.presets.push_back(engine("laggy", "generic", 3000, "none"));
  cfg.presets.back().extra_engine_args = {"--release-lag-ms", "4000"};
  cfg.presets.push_back(engine("huge", "generic", 8000, "none"));
  cfg.modes = {{"work", {"chat", "coder"}}, {"solo", {"laggy"}}};
  return cfg;
}

std::string describe(const e2e::Response& r) {
  return "HTTP " + std::to_string(r.status) + ": " + r.body.substr(0, 600);
}

std::int64_t gpu_used_bytes(const Daemon& d) {
  const auto st = d.get("/status").js();
  if (!st.is_object() || st["gpus"].empty()) return -1;
  return st["gpus"][0].value("used_bytes", std::int64_t{-1});
}

// The first value of an instant query, NaN when the result is empty or the query failed.
double scalar_of(const PrometheusServer& p, const std::string& expr) {
  const auto answer = p.query(expr);
  if (!answer.ok) return std::nan("");
  const auto values = instant_values(answer.data);
  return values.empty() ? std::nan("") : values.front().second;
}

// label_values(<selector>, <label>): the label's values over the series the selector matches,
// as Grafana's Prometheus datasource computes a query variable.
struct LabelValuesQuery {
  std::string selector;
  std::string label;
};
std::optional<LabelValuesQuery> parse_label_values(const std::string& query) {
  static const std::regex form(R"(^\s*label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$)");
  std::smatch m;
  if (!std::regex_match(query, m, form)) return std::nullopt;
  return LabelValuesQuery{m[1].str(), m[2].str()};
}
std::set<std::string> label_values(const PrometheusServer& p, const LabelValuesQuery& q, std::string* error) {
  std::set<std::string> out;
  const auto answer = p.api("series", {{"match[]", q.selector}});
  if (!answer.ok) {
    *error = answer.error;
    return out;
  }
  for (const auto& s : answer.data) {
    if (s.contains(q.label)) out.insert(s[q.label].get<std::string>());
  }
  return out;
}

// What a panel target returned: empty, only NaN/Inf (a panel with gaps only), or data.
struct TargetCheck {
  Query query;
  std::string expr;     // with variables substituted
  std::string problem;  // empty when the target returned finite data
};
TargetCheck check_target(const PrometheusServer& p, const Query& q, const std::string& expr) {
  TargetCheck c{q, expr, ""};
  const auto answer = p.query(expr);
  if (!answer.ok) {
    c.problem = "query failed: " + answer.error;
    return c;
  }
  const auto values = instant_values(answer.data);
  if (values.empty()) {
    c.problem = "returned no series";
    return c;
  }
  for (const auto& [labels, v] : values) {
    if (std::isfinite(v)) return c;
  }
  c.problem = "returned only NaN/Inf: " + answer.data["result"].dump().substr(0, 400);
  return c;
}

class RealPrometheus : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto binary = find_prometheus();
    ASSERT_TRUE(binary.has_value())
        << "prometheus is not installed (Debian package 'prometheus'); this test needs a real one";
    binary_ = *binary;
    e2e::write_config(dir_.path() / "config", config_);
  }

  TempDir dir_{"gpumod-prom"};
  GeneratedConfig config_ = scenario_config();
  fs::path binary_;
};

TEST_F(RealPrometheus, DashboardsShowDataAndTheVramReleaseTimeoutAlertFires) {
  Daemon daemon(dir_.path() / "config", dir_.path() / "state");
  ASSERT_TRUE(daemon.started());
  const std::string target = "127.0.0.1:" + std::to_string(daemon.port());
  PrometheusServer prometheus(binary_, dir_.path() / "prometheus", target, {grafana_check::kAlertRules});
  ASSERT_TRUE(prometheus.ready());

  // Prometheus has scraped the daemon (so every counter has a sample at 0 before the events).
  ASSERT_TRUE(eventually([&] { return scalar_of(prometheus, R"(up{job="gpumod"})") == 1.0; }, seconds(30)))
      << "up{job=\"gpumod\"} never became 1; targets: " << prometheus.api("targets").data.dump()
      << "\nprometheus log:\n"
      << prometheus.log();
  const auto scenario_start = Clock::now();

  // --- the scripted sequence ---
  auto r = daemon.post("/modes/work/switch");
  ASSERT_EQ(r.status, 200) << describe(r);
  for (const auto& [path, body] : std::vector<std::pair<std::string, std::string>>{
           {"/v1/chat/completions",
            R"({"model":"chat","messages":[{"role":"user","content":"hello there"}]})"},
           {"/v1/completions", R"({"model":"coder","prompt":"int main() {"})"},
           {"/v1/embeddings", R"({"model":"chat","input":["a","b"]})"},
       }) {
    r = daemon.post(path, body);
    EXPECT_EQ(r.status, 200) << path << ": " << describe(r);
  }
  // 1 GB free: big fits once chat sleeps (an eviction by sleep).
  r = daemon.post("/request", R"({"model":"big"})");
  ASSERT_EQ(r.status, 200) << describe(r);
  EXPECT_EQ(e2e::service_state(daemon, "chat"), "sleeping");
  // Waking chat needs coder or big stopped (an eviction by stop), then a wake.
  r = daemon.post("/v1/chat/completions",
                  R"({"model":"chat","messages":[{"role":"user","content":"again"}]})");
  EXPECT_EQ(r.status, 200) << describe(r);
  // A sleep and, at once, a wake asked for through the API. The scheduler plans the wake on a
  // probe sample taken after the sleep (not on the last one, which still shows chat's memory in
  // use), so it wakes chat without evicting anything. The states are read once settled: the
  // service the chat call evicted may still be "stopping" after its memory is free (the wake
  // waits for the memory, not for the process to be reaped), and it then becomes "stopped" on its
  // own, which is not what this check is about.
  const auto settled = [&](const char* id) {
    const std::string state = e2e::service_state(daemon, id);
    return state != "stopping" && state != "starting" && state != "waking";
  };
  ASSERT_TRUE(eventually([&] { return settled("coder") && settled("big"); }, seconds(20)))
      << "coder or big never left its transition; status: " << daemon.get("/status").body;
  const std::string coder_before = e2e::service_state(daemon, "coder");
  const std::string big_before = e2e::service_state(daemon, "big");
  r = daemon.post("/services/chat/sleep");
  ASSERT_EQ(r.status, 200) << describe(r);
  r = daemon.post("/services/chat/wake");
  ASSERT_EQ(r.status, 200) << describe(r);
  EXPECT_EQ(e2e::service_state(daemon, "coder"), coder_before) << "the wake evicted coder for nothing";
  EXPECT_EQ(e2e::service_state(daemon, "big"), big_before) << "the wake evicted big for nothing";

  r = daemon.post("/modes/solo/switch");
  ASSERT_EQ(r.status, 200) << describe(r);
  ASSERT_EQ(e2e::service_state(daemon, "laggy"), "ready");

  // The reload shortens vram_release_timeout to 1 s for what follows.
  config_.vram_release_timeout = "1s";
  e2e::write_config(dir_.path() / "config", config_);
  r = daemon.post("/reload");
  ASSERT_EQ(r.status, 200) << describe(r);

  // huge needs laggy's memory, which is not released within vram_release_timeout: 503.
  r = daemon.post("/request", R"({"model":"huge"})");
  EXPECT_EQ(r.status, 503) << describe(r);
  EXPECT_NE(r.body.find("not released within 1.0 s"), std::string::npos) << describe(r);

  // Once the memory is back, leave a service running so the memory panels have a service to show.
  ASSERT_TRUE(eventually([&] { return gpu_used_bytes(daemon) == 0; }, seconds(20)))
      << "the simulated GPU never showed laggy's memory released; status: " << daemon.get("/status").body;
  r = daemon.post("/v1/chat/completions",
                  R"({"model":"chat","messages":[{"role":"user","content":"last"}]})");
  EXPECT_EQ(r.status, 200) << describe(r);

  // --- what Prometheus saw ---
  // The timeout counter has been scraped after its increase.
  ASSERT_TRUE(eventually(
      [&] { return scalar_of(prometheus, "sum(gpumod_vram_release_timeouts_total)") >= 1.0; }, seconds(20)))
      << "Prometheus never saw gpumod_vram_release_timeouts_total increase; daemon /metrics:\n"
      << daemon.get("/metrics").body;

  // The alert fires: the rule has no `for:`, so the first evaluation that sees the increase fires it.
  json firing;
  const bool fired = eventually(
      [&] {
        const auto alerts = prometheus.api("alerts");
        if (!alerts.ok) return false;
        for (const auto& a : alerts.data["alerts"]) {
          if (a["labels"].value("alertname", "") == "GpumodVramReleaseTimeout" &&
              a.value("state", "") == "firing") {
            firing = a;
            return true;
          }
        }
        return false;
      },
      seconds(20));
  ASSERT_TRUE(fired) << "GpumodVramReleaseTimeout is not firing; /api/v1/alerts: "
                     << prometheus.api("alerts").data.dump()
                     << "\nrules: " << prometheus.api("rules").data.dump();
  EXPECT_EQ(firing["labels"].value("gpu", ""), "0") << firing.dump();
  EXPECT_EQ(firing["labels"].value("instance", ""), target) << firing.dump();
  EXPECT_EQ(firing["labels"].value("severity", ""), "critical") << firing.dump();

  // Every shipped rule evaluates without error against real data.
  const auto rules = prometheus.api("rules");
  ASSERT_TRUE(rules.ok) << rules.error;
  int rule_count = 0;
  for (const auto& group : rules.data["groups"]) {
    for (const auto& rule : group["rules"]) {
      ++rule_count;
      EXPECT_EQ(rule.value("health", ""), "ok")
          << rule.value("name", "?") << ": " << rule.value("lastError", "") << "\n"
          << rule.value("query", "");
    }
  }
  EXPECT_GE(rule_count, 8) << rules.data.dump();

  EXPECT_EQ(scalar_of(prometheus, R"(up{job="gpumod"})"), 1.0);

  // --- the dashboards, as Grafana would query them ---
  const auto dashboards = grafana_check::load_dashboards();
  ASSERT_GE(dashboards.size(), 2U);
  const auto queries = grafana_check::dashboard_queries(dashboards);

  // The variable queries first: the instance variable lists this daemon, svc every service.
  std::map<std::string, std::string> instance_value;  // per dashboard, what Grafana would pick
  for (const auto& q : queries) {
    if (q.promql) continue;
    grafana_check::VariableValues vars;
    vars.named["instance"] = target;
    const auto parsed = parse_label_values(grafana_check::substitute_grafana_variables(q.expr, vars));
    ASSERT_TRUE(parsed.has_value()) << q.where << ": not a label_values() query: " << q.expr;
    std::string error;
    const auto values = label_values(prometheus, *parsed, &error);
    EXPECT_TRUE(error.empty()) << q.where << ": " << error;
    if (q.ref_id == "instance") {
      EXPECT_EQ(values, std::set<std::string>{target}) << q.where << ": " << q.expr;
      if (!values.empty()) instance_value[q.dashboard] = *values.begin();
    } else if (q.ref_id == "svc") {
      for (const auto& p : config_.presets)
        EXPECT_TRUE(values.count(p.id)) << q.where << " does not list " << p.id;
    } else {
      EXPECT_FALSE(values.empty()) << q.where << ": " << q.expr;
    }
  }

  // $__rate_interval spans the whole scenario, so every rate and histogram quantile covers the
  // events above (the dashboards' 1 s scrape would give 4 s in Grafana; an instant query at the
  // end needs the window that a panel's time range would show).
  const auto elapsed = std::chrono::duration_cast<seconds>(Clock::now() - scenario_start).count();
  grafana_check::VariableValues vars;
  vars.rate_interval = std::to_string(elapsed + 15) + "s";
  vars.interval = "1s";
  vars.range = vars.rate_interval;

  std::vector<TargetCheck> checks;
  for (const auto& q : queries) {
    if (!q.promql) continue;
    auto v = vars;
    v.named["instance"] = instance_value.count(q.dashboard) ? instance_value[q.dashboard] : target;
    // The overview's svc is multi-value with "All" (allValue .*); the service dashboard's is one service.
    v.named["svc"] = q.dashboard == "gpumod-service.json" ? kServiceUnderWatch : ".*";
    checks.push_back({q, grafana_check::substitute_grafana_variables(q.expr, v), "?"});
  }
  ASSERT_GT(checks.size(), 30U);
  // Some series need a second scrape after the last events: retry the failing ones for a while.
  eventually(
      [&] {
        bool all_ok = true;
        for (auto& c : checks) {
          if (c.problem.empty()) continue;
          c = check_target(prometheus, c.query, c.expr);
          all_ok = all_ok && c.problem.empty();
        }
        return all_ok;
      },
      seconds(15));
  std::ostringstream failures;
  int failed = 0;
  for (const auto& c : checks) {
    if (c.problem.empty()) continue;
    ++failed;
    failures << "\n  " << c.query.where << " [" << c.query.ref_id << "] " << c.problem
             << "\n    expr: " << c.expr;
  }
  EXPECT_EQ(failed, 0) << failed << " of " << checks.size()
                       << " dashboard targets show no data:" << failures.str();
}

}  // namespace
}  // namespace gpumod::prom
