// The predecessor's QA sequence, run against a real daemon driving real test-engine processes
// on a simulated 24 GiB GPU: blank → code → rag → code → nemotron → blank, five rapid
// code ⇄ nemotron switches, a backend killed while loading, and a recovery switch to blank.
#include <gtest/gtest.h>
#include <signal.h>

#include <set>
#include <thread>

#include "tests/e2e/daemon_fixture.hpp"
#include "tests/e2e/e2e_helpers.hpp"

namespace gpumod::e2e {
namespace {

class QaSequence : public ::testing::Test {
 protected:
  void SetUp() override {
    const int router_port = free_port();
    cfg_.gpu_mb = 24576;
    cfg_.release_lag_ms = 150;  // the driver frees memory a little after the process exits
    cfg_.presets = {
        engine_preset("vllm-embedding-code", "vllm", free_port(), 2500, 150),
        engine_preset("qwen3-coder", "router", router_port, 20000, 250, "router"),
        engine_preset("vllm-embedding", "vllm", free_port(), 5000, 150),
        engine_preset("nemotron-3-nano", "router", router_port, 20000, 250, "router"),
        engine_preset("devstral-small-2", "vllm", free_port(), 15000, 150, "l1"),
        // Loads slowly so a test can kill it mid-load.
        engine_preset("slow-loader", "vllm", free_port(), 4000, 30000),
    };
    cfg_.modes = {{"blank", {"vllm-embedding-code"}},
                  {"code", {"vllm-embedding-code", "qwen3-coder"}},
                  {"rag", {"vllm-embedding-code", "vllm-embedding"}},
                  {"nemotron", {"vllm-embedding-code", "nemotron-3-nano"}},
                  {"slow", {"slow-loader"}}};
    write_config(dir_.path() / "config", cfg_);
  }

  // Switches and checks the result, the states and the simulated VRAM afterwards.
  void switch_to(Daemon& d, const std::string& mode, std::int64_t expect_mb) {
    SCOPED_TRACE("switch to " + mode);
    auto r = d.post("/modes/" + mode + "/switch", "{}", std::chrono::seconds(90));
    ASSERT_EQ(r.status, 200) << r.body << "\n" << d.log();
    auto body = r.js();
    EXPECT_TRUE(body.value("errors", json::array()).empty()) << r.body;
    std::set<std::string> in_mode(cfg_.modes[mode].begin(), cfg_.modes[mode].end());
    for (const auto& p : cfg_.presets) {
      const std::string want = in_mode.count(p.id) ? "ready" : "stopped";
      EXPECT_EQ(service_state(d, p.id), want) << p.id;
    }
    // The sim GPU shows exactly what the mode's services charge, once the release lag passed.
    EXPECT_TRUE(eventually([&] { return sim_charged_bytes(sim_dir()) == expect_mb * kMiB; }))
        << "charged " << sim_charged_bytes(sim_dir()) / kMiB << " MiB, want " << expect_mb;
    EXPECT_EQ(processes_using_sim_dir(sim_dir()).size(), in_mode.size())
        << "orphan or missing service process";
  }

  fs::path sim_dir() const { return dir_.path() / "state" / "sim"; }

  TempDir dir_;
  GeneratedConfig cfg_;
};

TEST_F(QaSequence, PredecessorSequenceEndsClean) {
  Daemon d(dir_.path() / "config", dir_.path() / "state");
  ASSERT_TRUE(d.started());
  switch_to(d, "blank", 2500);
  switch_to(d, "code", 22500);
  switch_to(d, "rag", 7500);
  switch_to(d, "code", 22500);
  switch_to(d, "nemotron", 22500);
  switch_to(d, "blank", 2500);
  d.stop_all_services();
  EXPECT_TRUE(eventually([&] { return sim_charged_bytes(sim_dir()) == 0; }));
  EXPECT_TRUE(eventually([&] { return processes_using_sim_dir(sim_dir()).empty(); }));
}

TEST_F(QaSequence, RapidCodeNemotronSwitchesLeaveOneRouter) {
  Daemon d(dir_.path() / "config", dir_.path() / "state");
  ASSERT_TRUE(d.started());
  for (int i = 0; i < 5; ++i) {
    auto a = d.post("/modes/code/switch", "{}", std::chrono::seconds(90));
    auto b = d.post("/modes/nemotron/switch", "{}", std::chrono::seconds(90));
    ASSERT_EQ(a.status, 200) << a.body;
    ASSERT_EQ(b.status, 200) << b.body;
  }
  EXPECT_EQ(d.get("/healthz").status, 200);
  EXPECT_EQ(service_state(d, "nemotron-3-nano"), "ready");
  EXPECT_EQ(service_state(d, "qwen3-coder"), "stopped");
  EXPECT_TRUE(eventually([&] { return sim_charged_bytes(sim_dir()) == 22500 * kMiB; }));
  EXPECT_EQ(processes_using_sim_dir(sim_dir()).size(), 2U);
}

TEST_F(QaSequence, BackendKilledWhileLoadingThenBlankRecovers) {
  Daemon d(dir_.path() / "config", dir_.path() / "state");
  ASSERT_TRUE(d.started());
  Response slow;
  std::thread switcher([&] { slow = d.post("/modes/slow/switch", "{}", std::chrono::seconds(90)); });
  int pid = 0;
  ASSERT_TRUE(eventually([&] {
    auto s = service_status(d, "slow-loader");
    pid = s.is_object() ? s.value("pid", 0) : 0;
    return s.is_object() && s.value("state", "") == "starting" && pid > 0;
  })) << d.log();
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  switcher.join();
  EXPECT_NE(slow.status, 200) << "a switch whose service died while loading must not report success: "
                              << slow.body;
  EXPECT_FALSE(slow.js().value("errors", json::array()).empty()) << slow.body;
  EXPECT_EQ(service_state(d, "slow-loader"), "failed");
  switch_to(d, "blank", 2500);
}

}  // namespace
}  // namespace gpumod::e2e
