// What a Prometheus user sees at /metrics: lint-clean families, every series present at 0 from
// registration, removal of dropped services, one-hot states, and histogram buckets that fit
// what they measure.
#include "exporter/metrics.hpp"

#include <gtest/gtest.h>

#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/exporter/promtool.hpp"
#include "tests/exporter/sample_metrics.hpp"

namespace gpumod::exporter {
namespace {

const BuildInfo kBuild{"0.1.0", "0123abc", "g++ 12.2.0"};

// Every sample of a text exposition, keyed by "name{labels}" exactly as rendered.
std::map<std::string, double> samples(const std::string& text) {
  std::map<std::string, double> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const auto space = line.rfind(' ');
    out[line.substr(0, space)] = std::stod(line.substr(space + 1));
  }
  return out;
}

std::optional<double> value(const Metrics& m, const std::string& series) {
  const auto all = samples(m.render());
  auto it = all.find(series);
  if (it == all.end()) return std::nullopt;
  return it->second;
}

int count_containing(const std::string& text, const std::string& needle) {
  int n = 0;
  for (auto pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + 1)) ++n;
  return n;
}

TEST(Metrics, RenderOfABusyDaemonPassesPromtoolLintWithNoOutput) {
  const auto promtool = test::find_promtool();
  if (!promtool) GTEST_SKIP() << "promtool is not installed (Debian package 'prometheus'); lint not checked";
  Metrics m(kBuild);
  test::populate_sample(m);
  test::TempDir dir;
  const auto file = dir.write("metrics.txt", m.render());
  const auto result =
      test::run_command(test::shell_quote(*promtool) + " check metrics < " + test::shell_quote(file));
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_EQ(result.output, "");
}

TEST(Metrics, FreshDaemonRendersScalarsAndKnownReasonsAtZero) {
  Metrics m(kBuild);
  const auto all = samples(m.render());
  for (const char* series :
       {"gpumod_queue_length", "gpumod_queue_oldest_age_seconds", "gpumod_request_timeouts_total",
        "gpumod_gpu_probe_errors_total", "gpumod_admission_wait_seconds_count",
        "gpumod_config_reloads_total{result=\"success\"}",
        "gpumod_config_reloads_total{result=\"failure\"}"}) {
    ASSERT_TRUE(all.count(series)) << series;
    EXPECT_EQ(all.at(series), 0) << series;
  }
  for (const auto& reason : rejection_reasons()) {
    const std::string series = "gpumod_request_rejections_total{reason=\"" + reason + "\"}";
    ASSERT_TRUE(all.count(series)) << series;
    EXPECT_EQ(all.at(series), 0);
  }
  EXPECT_EQ(all.at("gpumod_gpu_probe_up"), 1);
  EXPECT_EQ(all.at("gpumod_config_last_reload_successful"), 1);
  EXPECT_GT(all.at("gpumod_config_last_reload_success_timestamp_seconds"), 1.6e9);
  EXPECT_EQ(all.at("gpumod_build_info{compiler=\"g++ 12.2.0\",revision=\"0123abc\",version=\"0.1.0\"}"), 1);
}

TEST(Metrics, RegisteredGpuHasIdentityAndEveryCounterAtZero) {
  Metrics m(kBuild);
  m.register_gpu(0, "GPU-aaaa", "NVIDIA GeForce RTX 4090");
  m.register_gpu(1, "GPU-bbbb", "NVIDIA A100");
  const auto all = samples(m.render());
  EXPECT_EQ(all.at("gpumod_gpu_info{gpu=\"0\",name=\"NVIDIA GeForce RTX 4090\",uuid=\"GPU-aaaa\"}"), 1);
  EXPECT_EQ(all.at("gpumod_gpu_info{gpu=\"1\",name=\"NVIDIA A100\",uuid=\"GPU-bbbb\"}"), 1);
  for (const char* gpu : {"0", "1"}) {
    const std::string l = std::string("{gpu=\"") + gpu + "\"}";
    EXPECT_EQ(all.at("gpumod_vram_release_timeouts_total" + l), 0);
    EXPECT_EQ(all.at("gpumod_vram_release_wait_seconds_count" + l), 0);
    EXPECT_EQ(all.at("gpumod_gpu_memory_total_bytes" + l), 0);
    EXPECT_EQ(all.at("gpumod_gpu_memory_reserved_bytes" + l), 0);
  }
  // Re-registering with a new identity replaces the info series instead of adding one.
  m.register_gpu(1, "GPU-cccc", "NVIDIA H100");
  const std::string text = m.render();
  EXPECT_EQ(count_containing(text, "gpumod_gpu_info{gpu=\"1\""), 1);
  EXPECT_NE(text.find("uuid=\"GPU-cccc\""), std::string::npos);
}

TEST(Metrics, RegisteredServiceHasEveryCounterAtZeroAndStartsStopped) {
  Metrics m(kBuild);
  m.set_services({"qwen3-coder"});
  const auto all = samples(m.render());
  const std::string l = "{svc=\"qwen3-coder\"}";
  for (const char* family :
       {"gpumod_service_starts_total", "gpumod_service_start_failures_total", "gpumod_service_sleeps_total",
        "gpumod_service_wakes_total", "gpumod_service_active_leases", "gpumod_service_vram_declared_bytes",
        "gpumod_service_start_duration_seconds_count", "gpumod_service_wake_duration_seconds_count"}) {
    ASSERT_TRUE(all.count(family + l)) << family;
    EXPECT_EQ(all.at(family + l), 0) << family;
  }
  for (const auto& action : eviction_actions()) {
    EXPECT_EQ(all.at("gpumod_service_evictions_total{action=\"" + action + "\",svc=\"qwen3-coder\"}"), 0);
  }
  for (const auto& endpoint : proxy_endpoints()) {
    EXPECT_EQ(
        all.at("gpumod_proxy_requests_total{code=\"200\",endpoint=\"" + endpoint + "\",svc=\"qwen3-coder\"}"),
        0);
  }
  EXPECT_EQ(all.at("gpumod_service_state{state=\"stopped\",svc=\"qwen3-coder\"}"), 1);
  // Not measured yet: absent rather than a misleading 0.
  EXPECT_EQ(all.count("gpumod_service_vram_measured_bytes" + l), 0U);
}

TEST(Metrics, ModesAndTheirFailuresExistAtZeroAndDroppedModesDisappear) {
  Metrics m(kBuild);
  m.set_modes({"code", "rag"});
  EXPECT_EQ(value(m, "gpumod_mode_switches_total{mode=\"rag\"}"), 0);
  EXPECT_EQ(value(m, "gpumod_mode_switch_failures_total{mode=\"code\"}"), 0);
  m.inc_mode_switch("code");
  m.inc_mode_switch_failure("code");
  m.set_modes({"code"});
  EXPECT_EQ(value(m, "gpumod_mode_switches_total{mode=\"code\"}"), 1);
  EXPECT_EQ(value(m, "gpumod_mode_switch_failures_total{mode=\"code\"}"), 1);
  EXPECT_EQ(value(m, "gpumod_mode_switches_total{mode=\"rag\"}"), std::nullopt);
}

TEST(Metrics, SetServicesRemovesEverySeriesOfADroppedServiceAndKeepsTheOthers) {
  Metrics m(kBuild);
  m.set_services({"a", "b"});
  m.set_service_vram("b", 1000, 900);
  m.inc_service_start("a");
  m.inc_service_start("b");
  m.observe_wake_seconds("b", 1.0);
  m.inc_proxied_request("b", "/v1/embeddings", 503);
  ASSERT_NE(m.render().find("svc=\"b\""), std::string::npos);

  m.set_services({"a", "c"});
  const std::string text = m.render();
  EXPECT_EQ(text.find("svc=\"b\""), std::string::npos) << text;
  EXPECT_EQ(value(m, "gpumod_service_starts_total{svc=\"a\"}"), 1);  // kept, not reset
  EXPECT_EQ(value(m, "gpumod_service_starts_total{svc=\"c\"}"), 0);

  // Events for a service that is no longer configured are ignored, not resurrected.
  m.inc_service_start("b");
  m.set_service_state("b", "ready");
  EXPECT_EQ(m.render().find("svc=\"b\""), std::string::npos);

  // Coming back into the config starts from fresh series.
  m.set_services({"a", "b", "c"});
  EXPECT_EQ(value(m, "gpumod_service_starts_total{svc=\"b\"}"), 0);
  EXPECT_EQ(value(m, "gpumod_service_wake_duration_seconds_count{svc=\"b\"}"), 0);
}

TEST(Metrics, ServiceStatesAreThePolicysStatesInItsOrder) {
  // The label values are a wire contract (dashboards, alert rules): the names and order below
  // are what policy::to_string gives for each SvcState.
  EXPECT_EQ(service_states(), (std::vector<std::string>{"stopped", "starting", "ready", "sleeping", "waking",
                                                        "stopping", "failed"}));
}

TEST(Metrics, ServiceStateIsOneHotThroughTheLifecycle) {
  Metrics m(kBuild);
  m.set_services({"svc1"});
  for (const std::string state :
       {"starting", "ready", "sleeping", "waking", "ready", "stopping", "stopped", "failed"}) {
    m.set_service_state("svc1", state);
    const auto all = samples(m.render());
    double sum = 0;
    for (const auto& s : service_states()) {
      const std::string series = "gpumod_service_state{state=\"" + s + "\",svc=\"svc1\"}";
      ASSERT_TRUE(all.count(series)) << series;
      sum += all.at(series);
    }
    EXPECT_EQ(sum, 1) << "after " << state;
    EXPECT_EQ(all.at("gpumod_service_state{state=\"" + state + "\",svc=\"svc1\"}"), 1) << state;
  }
  // An unknown state is refused and leaves the current one in place.
  m.set_service_state("svc1", "exploded");
  EXPECT_EQ(value(m, "gpumod_service_state{state=\"failed\",svc=\"svc1\"}"), 1);
}

TEST(Metrics, HistogramBucketsCoverWhatTheyMeasure) {
  Metrics m(kBuild);
  m.register_gpu(0, "GPU-0", "sim");
  m.set_services({"s"});
  m.observe_start_seconds("s", 150.0);  // a slow cold start
  m.observe_vram_release_wait(0, 0.02);
  m.observe_vram_release_wait(0, 200.0);
  m.observe_wake_seconds("s", 0.3);
  m.observe_admission_wait(0.002);
  const auto all = samples(m.render());

  const std::string start = "gpumod_service_start_duration_seconds_bucket{svc=\"s\",le=\"";
  EXPECT_EQ(all.at(start + "120\"}"), 0);
  EXPECT_EQ(all.at(start + "180\"}"), 1);
  EXPECT_EQ(all.at(start + "600\"}"), 1);  // cold starts resolved up to 10 min
  EXPECT_EQ(all.at(start + "+Inf\"}"), 1);

  const std::string release = "gpumod_vram_release_wait_seconds_bucket{gpu=\"0\",le=\"";
  EXPECT_EQ(all.at(release + "0.01\"}"), 0);  // from 10 ms ...
  EXPECT_EQ(all.at(release + "0.025\"}"), 1);
  EXPECT_EQ(all.at(release + "120\"}"), 1);
  EXPECT_EQ(all.at(release + "300\"}"), 2);  // ... to 5 min
  EXPECT_EQ(all.at("gpumod_vram_release_wait_seconds_count{gpu=\"0\"}"), 2);
  EXPECT_DOUBLE_EQ(all.at("gpumod_vram_release_wait_seconds_sum{gpu=\"0\"}"), 200.02);

  const std::string wake = "gpumod_service_wake_duration_seconds_bucket{svc=\"s\",le=\"";
  EXPECT_EQ(all.at(wake + "0.25\"}"), 0);
  EXPECT_EQ(all.at(wake + "0.5\"}"), 1);
  EXPECT_EQ(all.at("gpumod_admission_wait_seconds_bucket{le=\"0.005\"}"), 1);
}

TEST(Metrics, ProbeFailureShowsProbeDownWhileTheRestKeepsExporting) {
  Metrics m(kBuild);
  m.register_gpu(0, "GPU-0", "sim");
  m.set_gpu_memory(0, 24000, 1000, 23000, 500);
  m.set_gpu_telemetry(0, 0.5, 60.0, 200.0);
  m.set_probe_up(false);
  m.inc_probe_errors();
  // A reading the probe could not take disappears instead of showing a stale or zero value.
  m.set_gpu_telemetry(0, std::nullopt, 61.0, std::nullopt);
  const auto all = samples(m.render());
  EXPECT_EQ(all.at("gpumod_gpu_probe_up"), 0);
  EXPECT_EQ(all.at("gpumod_gpu_probe_errors_total"), 1);
  EXPECT_EQ(all.at("gpumod_gpu_memory_free_bytes{gpu=\"0\"}"), 23000);
  EXPECT_EQ(all.at("gpumod_gpu_memory_reserved_bytes{gpu=\"0\"}"), 500);
  EXPECT_EQ(all.at("gpumod_gpu_temperature_celsius{gpu=\"0\"}"), 61);
  EXPECT_EQ(all.count("gpumod_gpu_utilization_ratio{gpu=\"0\"}"), 0U);
  EXPECT_EQ(all.count("gpumod_gpu_power_watts{gpu=\"0\"}"), 0U);
  m.set_probe_up(true);
  EXPECT_EQ(value(m, "gpumod_gpu_probe_up"), 1);
}

TEST(Metrics, EventsCountWhereAUserLooksForThem) {
  Metrics m(kBuild);
  m.register_gpu(0, "GPU-0", "sim");
  m.set_services({"s"});
  m.inc_eviction("s", "sleep");
  m.inc_eviction("s", "stop");
  m.inc_eviction("s", "stop");
  m.inc_eviction("s", "teleport");  // not an action: ignored
  m.inc_sleep("s");
  m.inc_wake("s");
  m.set_active_leases("s", 3);
  m.inc_proxied_request("s", "/v1/chat/completions", 200);
  m.inc_proxied_request("s", "/v1/chat/completions", 504);
  m.set_service_vram("s", 2500LL << 20, 2400LL << 20);
  m.set_queue(4, 30.5);
  m.inc_rejection("queue_full");
  m.inc_rejection("deadline_too_short");
  m.inc_request_timeout();
  m.inc_vram_release_timeout(0);
  m.inc_config_reload(false);
  const auto all = samples(m.render());
  EXPECT_EQ(all.at("gpumod_service_evictions_total{action=\"sleep\",svc=\"s\"}"), 1);
  EXPECT_EQ(all.at("gpumod_service_evictions_total{action=\"stop\",svc=\"s\"}"), 2);
  EXPECT_EQ(all.count("gpumod_service_evictions_total{action=\"teleport\",svc=\"s\"}"), 0U);
  EXPECT_EQ(all.at("gpumod_service_sleeps_total{svc=\"s\"}"), 1);
  EXPECT_EQ(all.at("gpumod_service_wakes_total{svc=\"s\"}"), 1);
  EXPECT_EQ(all.at("gpumod_service_active_leases{svc=\"s\"}"), 3);
  EXPECT_EQ(all.at("gpumod_proxy_requests_total{code=\"200\",endpoint=\"/v1/chat/completions\",svc=\"s\"}"),
            1);
  EXPECT_EQ(all.at("gpumod_proxy_requests_total{code=\"504\",endpoint=\"/v1/chat/completions\",svc=\"s\"}"),
            1);
  EXPECT_EQ(all.at("gpumod_service_vram_declared_bytes{svc=\"s\"}"), 2500.0 * 1024 * 1024);
  EXPECT_EQ(all.at("gpumod_service_vram_measured_bytes{svc=\"s\"}"), 2400.0 * 1024 * 1024);
  EXPECT_EQ(all.at("gpumod_queue_length"), 4);
  EXPECT_EQ(all.at("gpumod_queue_oldest_age_seconds"), 30.5);
  EXPECT_EQ(all.at("gpumod_request_rejections_total{reason=\"queue_full\"}"), 1);
  EXPECT_EQ(all.at("gpumod_request_rejections_total{reason=\"deadline_too_short\"}"), 1);
  EXPECT_EQ(all.at("gpumod_request_timeouts_total"), 1);
  EXPECT_EQ(all.at("gpumod_vram_release_timeouts_total{gpu=\"0\"}"), 1);
  EXPECT_EQ(all.at("gpumod_config_reloads_total{result=\"failure\"}"), 1);
  EXPECT_EQ(all.at("gpumod_config_last_reload_successful"), 0);
  m.set_service_vram("s", 2500LL << 20, std::nullopt);
  EXPECT_EQ(value(m, "gpumod_service_vram_measured_bytes{svc=\"s\"}"), std::nullopt);
}

// Run under ASan in CI: concurrent events, reloads that drop and re-add services, and renders.
TEST(Metrics, ConcurrentEventsReloadsAndRendersAreSafe) {
  Metrics m(kBuild);
  m.register_gpu(0, "GPU-0", "sim");
  m.set_services({"a", "b"});
  std::vector<std::thread> threads;
  threads.emplace_back([&] {
    for (int i = 0; i < 300; ++i)
      m.set_services(i % 2 == 0 ? std::vector<std::string>{"a"} : std::vector<std::string>{"a", "b"});
  });
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 300; ++i) {
        m.inc_service_start("b");
        m.observe_start_seconds("b", 1.0);
        m.set_service_state("b", i % 2 == 0 ? "ready" : "stopped");
        m.inc_proxied_request("b", "/v1/completions", 200);
        m.inc_service_start("a");
        m.observe_vram_release_wait(0, 0.1);
      }
    });
  }
  threads.emplace_back([&] {
    for (int i = 0; i < 50; ++i) EXPECT_FALSE(m.render().empty());
  });
  for (auto& t : threads) t.join();
  m.set_services({"a", "b"});
  EXPECT_EQ(value(m, "gpumod_service_starts_total{svc=\"a\"}"), 600);
  EXPECT_EQ(value(m, "gpumod_vram_release_wait_seconds_count{gpu=\"0\"}"), 600);
}

}  // namespace
}  // namespace gpumod::exporter
