// The CLI (run_cli) in-process against an ApiServer over a FakeControl: what a user sees on
// stdout/stderr and the exit codes a script relies on.
#include <gtest/gtest.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <nlohmann/json.hpp>

#include "app/cli.hpp"
#include "tests/api/test_server.hpp"
#include "tests/support/temp_dir.hpp"

namespace gpumod::app {
namespace {

using api::ServerOptions;
using api::testing::TestServer;
using gpumod::testing::TempDir;

struct CliRun {
  int code = -1;
  std::string out;
  std::string err;
};

CliRun cli(std::vector<std::string> args) {
  CliRun r;
  ::testing::internal::CaptureStdout();
  ::testing::internal::CaptureStderr();
  r.code = run_cli(args);
  std::cout.flush();
  std::cerr.flush();
  r.out = ::testing::internal::GetCapturedStdout();
  r.err = ::testing::internal::GetCapturedStderr();
  return r;
}

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

class Cli : public ::testing::Test {
 protected:
  void SetUp() override {
    spdlog::set_level(spdlog::level::off);  // the in-process server must not write into captured output
    ::unsetenv("GPUMOD_URL");
    ::unsetenv("GPUMOD_TOKEN");
  }
  void TearDown() override {
    spdlog::set_level(spdlog::level::info);
    ::unsetenv("GPUMOD_TOKEN");
  }
};

int unused_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
  ::close(fd);
  return ok ? ntohs(addr.sin_port) : 1;
}

TEST_F(Cli, HelpAndUsageErrors) {
  auto help = cli({"--help"});
  EXPECT_EQ(help.code, 0);
  EXPECT_TRUE(has(help.out, "usage: gpumod"));
  EXPECT_TRUE(has(help.out, "Exit codes"));
  EXPECT_EQ(cli({}).code, 2);
  auto unknown = cli({"frobnicate"});
  EXPECT_EQ(unknown.code, 2);
  EXPECT_TRUE(has(unknown.err, "unknown command 'frobnicate'"));
  EXPECT_EQ(cli({"request", "m", "--priority", "high"}).code, 2);
  EXPECT_EQ(cli({"request", "m", "--priority", "500"}).code, 2);
  EXPECT_EQ(cli({"request"}).code, 2);
  EXPECT_EQ(cli({"service", "explode", "x"}).code, 2);
  EXPECT_EQ(cli({"--url", "ftp://x", "status"}).code, 2);
  EXPECT_EQ(cli({"status", "--bogus"}).code, 2);
}

TEST_F(Cli, UnreachableDaemonIsExitCode3) {
  auto r = cli({"--url", "http://127.0.0.1:" + std::to_string(unused_port()), "status"});
  EXPECT_EQ(r.code, 3);
  EXPECT_TRUE(has(r.err, "cannot reach the daemon")) << r.err;
}

TEST_F(Cli, StatusIsAReadableTable) {
  TestServer server;
  auto r = cli({"--url", server.url(), "status"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(has(r.out, "mode: code")) << r.out;
  EXPECT_TRUE(has(r.out, "probe: sim (up)")) << r.out;
  EXPECT_TRUE(has(r.out, "24.0 GiB")) << r.out;
  EXPECT_TRUE(has(r.out, "SERVICE")) << r.out;
  EXPECT_TRUE(has(r.out, "qwen3-coder")) << r.out;
  EXPECT_TRUE(has(r.out, "sleeping")) << r.out;
  EXPECT_TRUE(has(r.out, "queue: empty")) << r.out;
}

TEST_F(Cli, StatusJsonIsTheApiAnswerAndTheUrlCanComeFromTheEnvironment) {
  TestServer server;
  ::setenv("GPUMOD_URL", server.url().c_str(), 1);
  auto r = cli({"status", "--json"});
  ::unsetenv("GPUMOD_URL");
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["mode"], "code");
  EXPECT_EQ(j["services"].size(), 2U);
}

TEST_F(Cli, RequestForAReadyModelPrintsWhereItIs) {
  TestServer server;
  auto r = cli({"--url", server.url(), "request", "coder", "--priority", "80", "--timeout", "30"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(has(r.out, "coder is ready: service qwen3-coder at http://127.0.0.1:1 on GPU 0")) << r.out;
  auto spec = server.control().submitted().at(0);
  EXPECT_EQ(spec.priority, 80);
  EXPECT_EQ(spec.timeout, std::chrono::milliseconds(30000));
}

TEST_F(Cli, RequestShowsProgressUntilTheModelIsReady) {
  TestServer server;
  server.control().hold_outcomes = true;
  auto done = std::async(std::launch::async, [&server] {
    // Decide the request once the CLI has submitted it and seen it queued at least once.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (server.control().submitted().empty() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (server.control().submitted().empty()) return;
    const auto id = server.control().submitted()[0].request_id;
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    scheduler::RequestOutcome o;
    o.request_id = id;
    o.status = scheduler::RequestStatus::ready;
    o.service = "vllm-embedding";
    o.endpoint = "http://127.0.0.1:8200";
    o.gpu = 0;
    o.waited_seconds = 0.3;
    server.control().decide(id, o);
    server.control().fulfil(id, o);
  });
  auto r = cli({"--url", server.url(), "request", "embed"});
  done.get();
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(has(r.out, "embed: queued (")) << r.out;  // progress, one line per state when not a TTY
  EXPECT_TRUE(has(r.out, "embed is ready: service vllm-embedding")) << r.out;
}

TEST_F(Cli, RequestNoWaitPrintsTheRequestId) {
  TestServer server;
  server.control().hold_outcomes = true;
  auto r = cli({"--url", server.url(), "request", "embed", "--no-wait"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(has(r.out, "queued: request req-")) << r.out;
  const auto id = server.control().submitted().at(0).request_id;
  server.control().fulfil(id, scheduler::RequestOutcome{});
}

TEST_F(Cli, ARefusedRequestIsExitCode1WithTheDaemonsMessage) {
  TestServer server;
  server.control().on_submit = [](const scheduler::RequestSpec&) {
    scheduler::RequestOutcome o;
    o.status = scheduler::RequestStatus::rejected;
    o.refusal = scheduler::Refusal::never_fits;
    o.message = "qwen3-coder needs 40 GiB; the largest GPU has 24 GiB";
    return o;
  };
  auto r = cli({"--url", server.url(), "request", "coder"});
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(has(r.err, "needs 40 GiB; the largest GPU has 24 GiB (HTTP 422)")) << r.err;
}

TEST_F(Cli, ServiceCommands) {
  TestServer server;
  auto list = cli({"--url", server.url(), "service", "list"});
  ASSERT_EQ(list.code, 0) << list.err;
  EXPECT_TRUE(has(list.out, "vllm-embedding")) << list.out;
  auto sleep = cli({"--url", server.url(), "service", "sleep", "qwen3-coder"});
  EXPECT_EQ(sleep.code, 0) << sleep.err;
  EXPECT_TRUE(has(sleep.out, "sleep qwen3-coder: ok")) << sleep.out;
  auto unit = cli({"--url", server.url(), "service", "unit", "qwen3-coder"});
  EXPECT_EQ(unit.code, 0);
  EXPECT_EQ(unit.out, "[Unit]\nDescription=gpumod qwen3-coder\n");
  auto ghost = cli({"--url", server.url(), "service", "start", "ghost"});
  EXPECT_EQ(ghost.code, 1);
  EXPECT_TRUE(has(ghost.err, "unknown service 'ghost'")) << ghost.err;
  server.control().action_result =
      scheduler::ActionResult{false, scheduler::Refusal::conflict, "qwen3-coder is busy"};
  auto busy = cli({"--url", server.url(), "service", "stop", "qwen3-coder"});
  EXPECT_EQ(busy.code, 1);
  EXPECT_TRUE(has(busy.err, "qwen3-coder is busy (HTTP 409)")) << busy.err;
}

TEST_F(Cli, ServiceLogsPrintsTheTailAndRefusalsSayWhy) {
  TestServer server;
  TempDir dir;
  server.control().set_log_dir(dir.path());
  std::ofstream(dir.path() / "qwen3-coder.log") << "a\nb\nc\n";
  auto logs = cli({"--url", server.url(), "service", "logs", "qwen3-coder", "--tail", "2"});
  EXPECT_EQ(logs.code, 0) << logs.err;
  EXPECT_EQ(logs.out, "b\nc\n");
  auto none = cli({"--url", server.url(), "service", "logs", "vllm-embedding"});
  EXPECT_EQ(none.code, 1);
  EXPECT_TRUE(has(none.err, "no log for vllm-embedding yet")) << none.err;
  auto bad = cli({"--url", server.url(), "service", "logs", "qwen3-coder", "--tail", "x"});
  EXPECT_EQ(bad.code, 2);
}

TEST_F(Cli, EventsPrintsEachDecisionAsALineOrAsJson) {
  TestServer server;
  scheduler::SchedEvent e;
  e.kind = "service.evicting";
  e.service = "qwen3-coder";
  e.message = "evicting qwen3-coder (sleep) on GPU 0 for vllm-embedding";
  scheduler::SchedEvent r = e;
  r.kind = "service.ready";
  r.service = "vllm-embedding";
  r.message = "vllm-embedding is ready on GPU 0 after 1.50 s";
  server.control().events().append({e, r});
  auto lines = cli({"--url", server.url(), "events", "--tail", "2", "--count", "2"});
  ASSERT_EQ(lines.code, 0) << lines.err;
  EXPECT_TRUE(
      has(lines.out, "  service.evicting  evicting qwen3-coder (sleep) on GPU 0 for vllm-embedding\n"))
      << lines.out;
  EXPECT_TRUE(has(lines.out, "  service.ready  vllm-embedding is ready")) << lines.out;
  auto js = cli({"--url", server.url(), "events", "--tail", "1", "--count", "1", "--json"});
  ASSERT_EQ(js.code, 0) << js.err;
  const auto j = nlohmann::json::parse(js.out);
  EXPECT_EQ(j.at("kind"), "service.ready");
  EXPECT_EQ(j.at("seq"), 2);
}

TEST_F(Cli, ModeCommands) {
  TestServer server;
  auto list = cli({"--url", server.url(), "mode", "list"});
  ASSERT_EQ(list.code, 0) << list.err;
  EXPECT_TRUE(has(list.out, "*  code")) << list.out;
  auto status = cli({"--url", server.url(), "mode", "status"});
  ASSERT_EQ(status.code, 0) << status.err;
  EXPECT_TRUE(has(status.out, "current mode: code")) << status.out;
  EXPECT_TRUE(has(status.out, "qwen3-coder")) << status.out;

  server.control().mode_result.ok = true;
  server.control().mode_result.stopped = {"qwen3-coder"};
  server.control().mode_result.started = {"vllm-embedding"};
  auto sw = cli({"--url", server.url(), "mode", "switch", "rag"});
  EXPECT_EQ(sw.code, 0) << sw.err;
  EXPECT_TRUE(has(sw.out, "mode rag: ok")) << sw.out;
  EXPECT_TRUE(has(sw.out, "stopped: qwen3-coder")) << sw.out;
  EXPECT_TRUE(has(sw.out, "started: vllm-embedding")) << sw.out;

  server.control().mode_result.ok = false;
  server.control().mode_result.refusal = scheduler::Refusal::unavailable;
  server.control().mode_result.errors = {"GPU 0 did not release 20 GiB"};
  auto failed = cli({"--url", server.url(), "mode", "switch", "rag"});
  EXPECT_EQ(failed.code, 1);
  EXPECT_TRUE(has(failed.out, "errors: GPU 0 did not release 20 GiB")) << failed.out;
}

TEST_F(Cli, ReloadAndPlan) {
  TestServer server;
  server.control().reload_result = scheduler::ReloadResult{true, "1 service added", {"new-svc"}, {}, {}};
  auto reload = cli({"--url", server.url(), "reload"});
  EXPECT_EQ(reload.code, 0) << reload.err;
  EXPECT_TRUE(has(reload.out, "added: new-svc")) << reload.out;
  auto plan = cli({"--url", server.url(), "plan", "embed"});
  ASSERT_EQ(plan.code, 0) << plan.err;
  EXPECT_TRUE(has(plan.out, "plan for embed (service vllm-embedding): plan on GPU 0")) << plan.out;
  EXPECT_TRUE(has(plan.out, "1. sleep qwen3-coder on GPU 0")) << plan.out;
  EXPECT_TRUE(has(plan.out, "why: fits after sleeping qwen3-coder")) << plan.out;
  EXPECT_EQ(cli({"--url", server.url(), "plan", "ghost"}).code, 1);
}

TEST_F(Cli, TokenComesFromTheEnvironment) {
  ServerOptions opts;
  opts.api_token = "cli-token";
  TestServer server(opts);
  auto denied = cli({"--url", server.url(), "status"});
  EXPECT_EQ(denied.code, 1);
  EXPECT_TRUE(has(denied.err, "GPUMOD_TOKEN")) << denied.err;
  ::setenv("GPUMOD_TOKEN", "cli-token", 1);
  EXPECT_EQ(cli({"--url", server.url(), "status"}).code, 0);
}

TEST_F(Cli, ConfigCheckReportsFileAndLineAndExits1OnErrors) {
  char tmpl[] = "/tmp/gpumod-cli-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::filesystem::path dir(tmpl);
  {
    std::ofstream f(dir / "gpumod.yaml");
    f << "listen: \"127.0.0.1:7979\"\nno_such_key: 1\n";
  }
  auto bad = cli({"config", "check", (dir / "gpumod.yaml").string()});
  EXPECT_EQ(bad.code, 1) << bad.out;
  EXPECT_TRUE(has(bad.out, "gpumod.yaml:2")) << bad.out;
  EXPECT_TRUE(has(bad.out, "no_such_key")) << bad.out;
  std::filesystem::remove_all(dir);

  auto demo = cli({"config", "check", GPUMOD_SOURCE_DIR "/examples/demo"});
  EXPECT_EQ(demo.code, 0) << demo.out;
  EXPECT_TRUE(has(demo.out, ": ok (")) << demo.out;
  EXPECT_EQ(cli({"config", "check"}).code, 0);  // the embedded default
  EXPECT_EQ(cli({"config"}).code, 2);
}

}  // namespace
}  // namespace gpumod::app
