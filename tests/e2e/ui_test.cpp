// The web page at /ui in real headless Chromium (Debian's, driven by playwright-core from npm:
// tests/e2e/clients/ui_check.mjs) against a real daemon with test engines: it shows the GPUs and
// services, a mode switch from its button changes the states it shows (learnt from the event
// stream, with no polling), a service's log opens, and behind a token it asks for the token
// first. The screenshots stay in <build>/ui-screenshots/ for a person to look at.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "tests/e2e/daemon_fixture.hpp"
#include "tests/support/run_command.hpp"

namespace gpumod::e2e {
namespace {

const fs::path kClients = fs::path(GPUMOD_SOURCE_DIR) / "tests" / "e2e" / "clients";

bool is_png(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  char magic[8] = {};
  in.read(magic, sizeof magic);
  return in && std::string(magic, 8) == "\x89PNG\r\n\x1a\n" && fs::file_size(p) > 10000;
}

// Runs the page check; the parsed RESULT object (a test failure and {} when it did not run).
json check_page(const Daemon& d, const std::string& mode, const std::string& service, const fs::path& shots,
                const std::string& token = "") {
  fs::create_directories(shots);
  const auto run = gpumod::testing::run_command("node " + (kClients / "ui_check.mjs").string() + " " +
                                                d.url() + " " + mode + " " + service + " " + shots.string() +
                                                (token.empty() ? "" : " " + token));
  EXPECT_EQ(run.exit_code, 0) << run.output;
  const auto at = run.output.find("RESULT ");
  if (at == std::string::npos) {
    ADD_FAILURE() << run.output;
    return json::object();
  }
  json r = json::parse(run.output.substr(at + 7, run.output.find('\n', at) - at - 7), nullptr, false);
  EXPECT_FALSE(r.contains("failure")) << r.value("failure", "");
  return r;
}

class Ui : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(kClients / "node_modules" / "playwright-core"))
        << "playwright-core is not installed: run `npm ci` in " << kClients << " (scripts/test-all.sh does)";
    ASSERT_TRUE(fs::exists("/usr/bin/chromium"))
        << "Debian's chromium is not installed (scripts/install-deps.sh)";
    cfg_.presets = {engine_preset("chat", "vllm", free_port(), 8000, 300, "l1"),
                    engine_preset("embed", "vllm", free_port(), 2000, 100),
                    engine_preset("big", "vllm", free_port(), 20000, 100)};
    cfg_.modes = {{"pair", {"chat", "embed"}}, {"solo", {"big"}}};
  }
  TempDir dir_;
  GeneratedConfig cfg_;
};

TEST_F(Ui, AModeSwitchFromThePageShowsTheNewStatesLive) {
  write_config(dir_.path() / "config", cfg_);
  Daemon d(dir_.path() / "config", dir_.path() / "state");
  ASSERT_TRUE(d.started());
  const fs::path shots = fs::path(GPUMOD_BINARY_DIR) / "ui-screenshots";
  fs::remove(shots / "ui-before.png");
  fs::remove(shots / "ui-after.png");
  const json r = check_page(d, "pair", "chat", shots);
  ASSERT_TRUE(r.contains("after")) << r.dump();

  EXPECT_EQ(r.at("gpu_bars"), 1);
  EXPECT_EQ(r.at("services").size(), 3u);
  for (const auto& s : r.at("services")) EXPECT_EQ(s.at("state"), "stopped") << s.dump();
  // After the click the page shows what the daemon did, and the daemon agrees.
  for (const auto& s : r.at("after")) {
    const std::string want = s.at("id") == "big" ? "stopped" : "ready";
    EXPECT_EQ(s.at("state"), want) << s.dump();
  }
  EXPECT_EQ(d.get("/modes").obj().value("current", ""), "pair");
  const auto& events = r.at("events");
  EXPECT_NE(std::find(events.begin(), events.end(), "mode.end"), events.end()) << events.dump();
  EXPECT_NE(std::find(events.begin(), events.end(), "service.ready"), events.end()) << events.dump();
  // The GPU bar has one segment per service on the card.
  EXPECT_EQ(r.at("service_segments").size(), 2u) << r.at("service_segments").dump();
  EXPECT_NE(r.at("log").get<std::string>().find("gpumod-test-engine: vllm chat"), std::string::npos)
      << r.at("log");
  // Live through the event stream: an idle page asks the daemon for nothing.
  EXPECT_TRUE(r.at("requests_while_idle").empty()) << r.at("requests_while_idle").dump();
  EXPECT_TRUE(r.at("page_errors").empty()) << r.at("page_errors").dump();
  EXPECT_TRUE(is_png(shots / "ui-before.png"));
  EXPECT_TRUE(is_png(shots / "ui-after.png"));
}

TEST_F(Ui, BehindATokenThePageAsksForItAndTheDataNeedsIt) {
  cfg_.api_token = "ui-test-token";
  write_config(dir_.path() / "config", cfg_);
  Daemon d(dir_.path() / "config", dir_.path() / "state");
  d.use_token("ui-test-token");
  ASSERT_TRUE(d.started());
  {
    httplib::Client anonymous("127.0.0.1", d.port());
    auto page = anonymous.Get("/ui");
    ASSERT_TRUE(page);
    EXPECT_EQ(page->status, 200);  // the page holds no data
    auto status = anonymous.Get("/status");
    ASSERT_TRUE(status);
    EXPECT_EQ(status->status, 401);
    auto events = anonymous.Get("/events");
    ASSERT_TRUE(events);
    EXPECT_EQ(events->status, 401);
  }
  const json r = check_page(d, "solo", "big", dir_.path() / "shots", "ui-test-token");
  EXPECT_EQ(r.value("asked_for_token", false), true) << r.dump();
  ASSERT_TRUE(r.contains("after")) << r.dump();
  for (const auto& s : r.at("after")) {
    if (s.at("id") == "big") {
      EXPECT_EQ(s.at("state"), "ready") << s.dump();
    }
  }
}

}  // namespace
}  // namespace gpumod::e2e
