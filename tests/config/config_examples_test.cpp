// The shipped configs: the embedded default, examples/demo (the same demo as files),
// examples/real-host, and `config check` over a tree of configs.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "config_test_support.hpp"

namespace gpumod::config::test {
namespace {

const std::filesystem::path kExamples = std::filesystem::path(GPUMOD_SOURCE_DIR) / "examples";

// The value after `flag` in an argv, or "" when absent.
std::string arg_after(const std::vector<std::string>& argv, const std::string& flag) {
  auto it = std::find(argv.begin(), argv.end(), flag);
  return (it != argv.end() && it + 1 != argv.end()) ? *(it + 1) : std::string();
}

LoadOptions with_bin_dir() {
  LoadOptions opts;
  opts.bin_dir = "/opt/gpumod/bin";
  return opts;
}

TEST(EmbeddedDefault, IsValidAndShapedLikeTheQaSetup) {
  const LoadResult r = embedded_default(with_bin_dir());
  ASSERT_TRUE(r.ok()) << all_text(r);
  EXPECT_TRUE(r.diagnostics.empty()) << all_text(r);
  const Config& c = *r.config;
  EXPECT_EQ(c.source, "embedded default");
  EXPECT_EQ(c.daemon.probe, ProbeKind::auto_detect);
  ASSERT_EQ(c.daemon.sim_gpus.size(), 1U);
  EXPECT_EQ(c.daemon.sim_gpus[0].memory_mb, 24576);
  EXPECT_EQ(c.daemon.listen_host, "127.0.0.1");
  EXPECT_EQ(c.daemon.policy.health_poll_interval, std::chrono::milliseconds(5));  // the daemon default

  struct Want {
    const char* id;
    std::int64_t vram_mb;
    int port;
    Driver driver;
    SleepMode sleep;
  };
  const std::vector<Want> want = {{"vllm-embedding-code", 2500, 8210, Driver::vllm, SleepMode::l1},
                                  {"qwen3-coder", 20000, 7070, Driver::llamacpp, SleepMode::router},
                                  {"vllm-embedding", 5000, 8200, Driver::vllm, SleepMode::none},
                                  {"nemotron-3-nano", 20000, 7070, Driver::llamacpp, SleepMode::none},
                                  {"devstral-small-2", 15000, 8000, Driver::vllm, SleepMode::l1}};
  ASSERT_EQ(c.presets.size(), want.size());
  for (const auto& w : want) {
    const Preset* p = c.find_preset(w.id);
    ASSERT_NE(p, nullptr) << w.id;
    EXPECT_EQ(p->vram_mb, w.vram_mb) << w.id;
    EXPECT_EQ(p->port, w.port) << w.id;
    EXPECT_EQ(p->driver, w.driver) << w.id;
    EXPECT_EQ(p->sleep_mode, w.sleep) << w.id;
    // Played by the bundled engine, with flags that agree with the preset.
    ASSERT_FALSE(p->cmd.empty());
    EXPECT_EQ(p->cmd[0], "/opt/gpumod/bin/gpumod-test-engine") << w.id;
    EXPECT_EQ(arg_after(p->cmd, "--port"), std::to_string(w.port)) << w.id;
    EXPECT_EQ(arg_after(p->cmd, "--vram-mb"), std::to_string(w.vram_mb)) << w.id;
    const std::string protocol = arg_after(p->cmd, "--protocol");
    EXPECT_EQ(protocol, w.driver == Driver::vllm ? "vllm" : "router") << w.id;
    EXPECT_EQ(arg_after(p->cmd, "--model"), p->model_id) << w.id;
    if (p->can_sleep()) {
      EXPECT_EQ(arg_after(p->cmd, "--sleep-residual-mb"), std::to_string(p->sleep_residual_mb())) << w.id;
    }
    const int load_ms = std::stoi(arg_after(p->cmd, "--load-ms"));
    EXPECT_GE(load_ms, 300) << w.id;
    EXPECT_LE(load_ms, 1500) << w.id;
  }
  // Every mode fits on the one 24 GiB GPU after headroom; blank/code/rag/nemotron as in QA.
  std::vector<std::string> modes;
  for (const auto& m : c.modes) {
    modes.push_back(m.id);
    std::int64_t sum = 0;
    for (const auto& id : m.services) sum += c.find_preset(id)->vram_mb;
    EXPECT_LE(sum, 24576 - c.daemon.policy.headroom_mb) << m.id;
  }
  EXPECT_EQ(modes, (std::vector<std::string>{"blank", "code", "rag", "nemotron"}));
  EXPECT_EQ(c.find_mode("code")->services, (std::vector<std::string>{"vllm-embedding-code", "qwen3-coder"}));
}

TEST(EmbeddedDefault, MatchesExamplesDemo) {
  const LoadResult e = embedded_default(with_bin_dir());
  const LoadResult d = load(kExamples / "demo", with_bin_dir());
  ASSERT_TRUE(e.ok()) << all_text(e);
  ASSERT_TRUE(d.ok()) << all_text(d);
  const Config& a = *e.config;
  const Config& b = *d.config;
  ASSERT_EQ(a.presets.size(), b.presets.size());
  for (const auto& p : a.presets) {
    const Preset* q = b.find_preset(p.id);
    ASSERT_NE(q, nullptr) << p.id;
    EXPECT_EQ(p.name, q->name) << p.id;
    EXPECT_EQ(p.driver, q->driver) << p.id;
    EXPECT_EQ(p.port, q->port) << p.id;
    EXPECT_EQ(p.vram_mb, q->vram_mb) << p.id;
    EXPECT_EQ(p.model_id, q->model_id) << p.id;
    EXPECT_EQ(p.models, q->models) << p.id;
    EXPECT_EQ(p.aliases, q->aliases) << p.id;
    EXPECT_EQ(p.sleep_mode, q->sleep_mode) << p.id;
    EXPECT_EQ(p.sleep_vram_mb, q->sleep_vram_mb) << p.id;
    EXPECT_EQ(p.priority, q->priority) << p.id;
    EXPECT_EQ(p.startup_timeout, q->startup_timeout) << p.id;
    EXPECT_EQ(p.cmd, q->cmd) << p.id;
  }
  ASSERT_EQ(a.modes.size(), b.modes.size());
  for (const auto& m : a.modes) {
    const Mode* n = b.find_mode(m.id);
    ASSERT_NE(n, nullptr) << m.id;
    EXPECT_EQ(m.services, n->services) << m.id;
    EXPECT_EQ(m.description, n->description) << m.id;
  }
  EXPECT_EQ(a.daemon.listen_port, b.daemon.listen_port);
  EXPECT_EQ(a.daemon.probe, b.daemon.probe);
  EXPECT_EQ(a.daemon.sim_gpus.at(0).memory_mb, b.daemon.sim_gpus.at(0).memory_mb);
  EXPECT_EQ(a.daemon.sim_release_lag, b.daemon.sim_release_lag);
  EXPECT_EQ(a.daemon.policy.headroom_mb, b.daemon.policy.headroom_mb);
  EXPECT_EQ(a.daemon.policy.stop_grace, b.daemon.policy.stop_grace);
}

TEST(Examples, DemoLoadsWithoutErrorsOrWarnings) {
  const LoadResult r = load(kExamples / "demo");
  ASSERT_TRUE(r.ok()) << all_text(r);
  EXPECT_TRUE(r.diagnostics.empty()) << all_text(r);
}

TEST(Examples, RealHostLoadsWithoutErrorsOrWarnings) {
  ScopedEnv home("HOME", "/home/tester");
  const LoadResult r = load(kExamples / "real-host");
  ASSERT_TRUE(r.ok()) << all_text(r);
  EXPECT_TRUE(r.diagnostics.empty()) << all_text(r);
  const Config& c = *r.config;
  EXPECT_EQ(c.daemon.probe, ProbeKind::nvml);
  for (const auto& p : c.presets) EXPECT_TRUE(p.cmd.empty()) << p.id << ": rendered from driver + unit_vars";
  const Preset* router = c.find_preset("llama-router");
  ASSERT_NE(router, nullptr);
  EXPECT_EQ(router->unit_vars.at("models_dir"), "/home/tester/models");
  EXPECT_EQ(router->sleep_mode, SleepMode::router);
  EXPECT_FALSE(router->models.empty());
  const Preset* devstral = c.find_preset("devstral-small-2");
  ASSERT_NE(devstral, nullptr);
  EXPECT_EQ(devstral->driver, Driver::vllm);
  EXPECT_EQ(devstral->unit_vars.at("gpu_mem_util"), "0.85");
  EXPECT_EQ(devstral->startup_timeout, std::chrono::seconds(300));
  EXPECT_EQ(c.find_preset("gemma3-12b")->model_path, "/home/tester/models/gemma-3-12b-it-Q4_K_M.gguf");
  EXPECT_EQ(c.resolve_model("Nemotron-3-Nano-30B-A3B-Q4_K_M")->id, "llama-router");
  EXPECT_TRUE(c.find_mode("off")->services.empty());
}

TEST(CheckTree, ExamplesHoldsTwoConfigsAndBothPass) {
  ScopedEnv home("HOME", "/home/tester");
  const auto results = check_tree(kExamples);
  ASSERT_EQ(results.size(), 2U);
  EXPECT_EQ(results[0].first, kExamples / "demo");
  EXPECT_EQ(results[1].first, kExamples / "real-host");
  for (const auto& [path, r] : results) EXPECT_TRUE(r.ok()) << path << "\n" << all_text(r);
}

TEST(CheckTree, LoadOfATreeNamesTheConfigsInIt) {
  const LoadResult r = load(kExamples);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error_text().find("is not a gpumod config"), std::string::npos) << r.error_text();
  EXPECT_NE(r.error_text().find("demo, real-host"), std::string::npos) << r.error_text();
}

TEST(CheckTree, ReportsEachBrokenConfigSeparately) {
  TempDir dir;
  dir.write("team/good/presets/a.yaml", "id: a\ndriver: vllm\nport: 8000\nvram_mb: 10\n");
  dir.write("team/bad/presets/a.yaml", "id: a\ndriver: vllm\nport: nope\nvram_mb: 10\n");
  dir.write("other/readme.txt", "nothing here");
  const auto results = check_tree(dir.path());
  ASSERT_EQ(results.size(), 2U);
  EXPECT_EQ(results[0].first, dir.path() / "team" / "bad");
  EXPECT_FALSE(results[0].second.ok());
  EXPECT_NE(results[0].second.error_text().find("presets/a.yaml:3: port: expected a whole number"),
            std::string::npos)
      << results[0].second.error_text();
  EXPECT_EQ(results[1].first, dir.path() / "team" / "good");
  EXPECT_TRUE(results[1].second.ok()) << all_text(results[1].second);
}

TEST(CheckTree, AConfigPathIsCheckedItself) {
  const auto results = check_tree(kExamples / "demo");
  ASSERT_EQ(results.size(), 1U);
  EXPECT_TRUE(results[0].second.ok()) << all_text(results[0].second);
  const auto file = check_tree(kExamples / "demo" / "gpumod.yaml");
  ASSERT_EQ(file.size(), 1U);
  EXPECT_TRUE(file[0].second.ok()) << all_text(file[0].second);
}

TEST(CheckTree, NothingFoundIsAnError) {
  TempDir dir;
  dir.write("docs/notes.md", "hello");
  const auto results = check_tree(dir.path());
  ASSERT_EQ(results.size(), 1U);
  EXPECT_FALSE(results[0].second.ok());
  EXPECT_NE(results[0].second.error_text().find("no gpumod config found"), std::string::npos);
}

}  // namespace
}  // namespace gpumod::config::test
