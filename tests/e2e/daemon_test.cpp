// The daemon as a user meets it: it answers, exports lint-clean metrics, checks configs,
// survives its own SIGKILL by adopting what runs, and serves many clients at once without ever
// charging more VRAM than the GPU has.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <thread>

#include "tests/e2e/daemon_fixture.hpp"
#include "tests/e2e/e2e_helpers.hpp"

namespace gpumod::e2e {
namespace {

GeneratedConfig two_service_config() {
  GeneratedConfig cfg;
  cfg.gpu_mb = 8192;
  cfg.presets = {engine_preset("alpha", "vllm", free_port(), 3000, 100, "l1"),
                 engine_preset("beta", "llamacpp", free_port(), 3000, 100)};
  cfg.modes = {{"both", {"alpha", "beta"}}};
  return cfg;
}

TEST(Daemon, AnswersHealthzStatusAndLintCleanMetrics) {
  TempDir dir;
  write_config(dir.path() / "config", two_service_config());
  Daemon d(dir.path() / "config", dir.path() / "state");
  ASSERT_TRUE(d.started());
  EXPECT_EQ(d.get("/healthz").status, 200);
  auto status = d.get("/status").js();
  ASSERT_TRUE(status.is_object());
  EXPECT_EQ(status["services"].size(), 2U);
  EXPECT_EQ(status["gpus"].size(), 1U);
  // Do real work first so the histograms and counters are not all empty.
  ASSERT_EQ(d.post("/request", R"({"model":"alpha"})").status, 200);
  ASSERT_EQ(d.post("/services/alpha/sleep").status, 200);
  ASSERT_EQ(d.post("/request", R"({"model":"alpha"})").status, 200);
  auto metrics = d.get("/metrics");
  ASSERT_EQ(metrics.status, 200);
  EXPECT_NE(metrics.body.find("gpumod_build_info"), std::string::npos);
  EXPECT_NE(metrics.body.find("gpumod_config_reloads_total"), std::string::npos);
  write_file(dir.path() / "metrics.txt", metrics.body);
  auto lint = run_command("promtool check metrics < " + (dir.path() / "metrics.txt").string());
  EXPECT_EQ(lint.exit_code, 0) << lint.output;
  EXPECT_EQ(lint.output, "") << "promtool warnings";
}

TEST(Daemon, ConfigCheckAcceptsExamplesAndNamesTheBrokenKey) {
  auto good = run_command(std::string(kGpumodBin) + " config check " GPUMOD_SOURCE_DIR "/examples");
  EXPECT_EQ(good.exit_code, 0) << good.output;
  TempDir dir;
  write_file(dir.path() / "presets" / "bad.yaml", "id: bad\ndriver: vllm\nport: 8000\nvram_mb: lots\n");
  auto bad = run_command(std::string(kGpumodBin) + " config check " + dir.path().string());
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.output.find("bad.yaml:4"), std::string::npos) << bad.output;
  EXPECT_NE(bad.output.find("vram_mb"), std::string::npos) << bad.output;
}

// A fastapi preset's unit_vars.working_dir is where its process runs (as in the unit file gpumod
// renders for it), not the daemon's state directory.
TEST(Daemon, AFastapiServiceRunsInItsWorkingDir) {
  TempDir dir;
  const fs::path work = dir.path() / "app";
  fs::create_directories(work);
  const int port = free_port();
  write_file(
      dir.path() / "config" / "gpumod.yaml",
      "gpus:\n  probe: sim\n  sim:\n    - name: e2e-gpu\n      memory_mb: 24576\npolicy:\n  headroom_mb: 0\n"
      "  stop_grace: 3s\n");
  write_file(
      dir.path() / "config" / "presets" / "api.yaml",
      "id: api\ndriver: fastapi\nport: " + std::to_string(port) +
          "\nvram_mb: 100\nstartup_timeout: 30\nhealth_endpoint: /health\nunit_vars:\n  working_dir: " +
          work.string() + "\ncmd:\n  - " + kEngineBin + "\n  - --port\n  - \"" + std::to_string(port) +
          "\"\n  - --protocol\n  - generic\n  - --model\n  - api\n  - --vram-mb\n  - \"100\"\n");
  Daemon d(dir.path() / "config", dir.path() / "state");
  ASSERT_TRUE(d.started());
  const auto r = d.post("/services/api/start");
  ASSERT_EQ(r.status, 200) << r.body;
  const int pid = service_status(d, "api").value("pid", 0);
  ASSERT_GT(pid, 0);
  std::error_code ec;
  const fs::path cwd = fs::read_symlink("/proc/" + std::to_string(pid) + "/cwd", ec);
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_EQ(cwd, fs::canonical(work));
  EXPECT_EQ(d.post("/services/api/stop").status, 200);
}

TEST(Daemon, RestartAfterSigkillAdoptsRunningServices) {
  TempDir dir;
  write_config(dir.path() / "config", two_service_config());
  const fs::path sim_dir = dir.path() / "state" / "sim";
  int pid_before = 0;
  {
    Daemon first(dir.path() / "config", dir.path() / "state");
    ASSERT_TRUE(first.started());
    ASSERT_EQ(first.post("/modes/both/switch", "{}").status, 200);
    pid_before = service_status(first, "alpha").value("pid", 0);
    ASSERT_GT(pid_before, 0);
    first.kill_hard();
  }
  ASSERT_EQ(processes_using_sim_dir(sim_dir).size(), 2U) << "services must outlive the daemon";
  Daemon second(dir.path() / "config", dir.path() / "state");
  ASSERT_TRUE(second.started());
  EXPECT_TRUE(eventually([&] { return service_state(second, "alpha") == "ready"; })) << second.log();
  EXPECT_EQ(service_status(second, "alpha").value("pid", 0), pid_before) << "adopted, not restarted";
  // Each adopted service is "starting" until its own first health check answers: beta's may
  // come a moment after alpha's.
  EXPECT_TRUE(eventually([&] { return service_state(second, "beta") == "ready"; })) << second.log();
  auto r = second.post("/request", R"({"model":"beta"})");
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(processes_using_sim_dir(sim_dir).size(), 2U) << "nothing started twice";
}

TEST(Daemon, FiveHundredClientsFiveModelsTwoFit) {
  TempDir dir;
  GeneratedConfig cfg;
  cfg.gpu_mb = 24576;
  cfg.release_lag_ms = 50;
  cfg.vram_release_timeout = "10s";
  for (int i = 0; i < 5; ++i) {
    cfg.presets.push_back(
        engine_preset("m" + std::to_string(i), "vllm", free_port(), 10000, 60, i % 2 == 0 ? "l1" : "none"));
  }
  write_config(dir.path() / "config", cfg);
  const fs::path sim_dir = dir.path() / "state" / "sim";
  Daemon d(dir.path() / "config", dir.path() / "state");
  ASSERT_TRUE(d.started());

  std::atomic<bool> done{false};
  std::atomic<std::int64_t> peak{0};
  std::thread sampler([&] {
    while (!done) {
      const std::int64_t now = sim_charged_bytes(sim_dir);
      std::int64_t prev = peak.load();
      while (now > prev && !peak.compare_exchange_weak(prev, now)) {
      }
      ::usleep(2000);
    }
  });
  constexpr int kClients = 500;
  std::vector<int> codes(kClients, 0);
  std::vector<std::thread> clients;
  clients.reserve(kClients);
  for (int i = 0; i < kClients; ++i) {
    clients.emplace_back([&, i] {
      const std::string body = R"({"model":"m)" + std::to_string(i % 5) + R"(","timeout_s":30})";
      codes[i] = d.post("/request", body, std::chrono::seconds(120)).status;
    });
  }
  for (auto& t : clients) t.join();
  done = true;
  sampler.join();
  int ok = 0;
  for (int i = 0; i < kClients; ++i) {
    EXPECT_TRUE(codes[i] == 200 || codes[i] == 503 || codes[i] == 504)
        << "client " << i << " got " << codes[i];
    ok += codes[i] == 200;
  }
  EXPECT_GT(ok, 0);
  EXPECT_LE(peak.load(), std::int64_t{24576} * kMiB) << "charged more VRAM than the GPU has";
  EXPECT_EQ(d.get("/healthz").status, 200);
}

}  // namespace
}  // namespace gpumod::e2e
