// `gpumod mcp` end to end, driven by the official MCP SDK client from npm
// (tests/e2e/clients/mcp_client.mjs) against a real daemon with test engines: the handshake,
// every tool a coding agent uses, progress while a model loads, errors with the daemon's
// message, and the status resource.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "tests/e2e/daemon_fixture.hpp"
#include "tests/support/run_command.hpp"

namespace gpumod::e2e {
namespace {

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(Mcp, TheOfficialSdkClientDrivesEveryToolAgainstARealDaemon) {
  const fs::path clients = fs::path(GPUMOD_SOURCE_DIR) / "tests" / "e2e" / "clients";
  ASSERT_TRUE(fs::exists(clients / "node_modules" / "@modelcontextprotocol" / "sdk"))
      << "the MCP SDK is not installed: run `npm ci` in " << clients << " (scripts/test-all.sh does)";
  TempDir dir;
  GeneratedConfig cfg;
  cfg.presets = {engine_preset("chat", "vllm", free_port(), 8000, 600, "l1"),
                 engine_preset("embed", "vllm", free_port(), 2000, 100),
                 engine_preset("big", "vllm", free_port(), 20000, 100)};
  cfg.modes = {{"pair", {"chat", "embed"}}, {"solo", {"big"}}};
  write_config(dir.path() / "config", cfg);
  Daemon d(dir.path() / "config", dir.path() / "state");
  ASSERT_TRUE(d.started());

  const auto run = gpumod::testing::run_command("node " + (clients / "mcp_client.mjs").string() + " " +
                                                kGpumodBin + " " + d.url());
  ASSERT_EQ(run.exit_code, 0) << run.output;
  const auto at = run.output.find("RESULT ");
  ASSERT_NE(at, std::string::npos) << run.output;
  const json r = json::parse(run.output.substr(at + 7, run.output.find('\n', at) - at - 7));
  ASSERT_FALSE(r.contains("failure")) << r.value("failure", "");

  EXPECT_EQ(r.at("server").at("name"), "gpumod");
  for (const char* tool : {"status", "list_services", "get_service", "list_modes", "switch_mode",
                           "start_service", "stop_service", "sleep_service", "wake_service", "request_model",
                           "plan", "service_logs", "recent_events", "reload"}) {
    EXPECT_NE(std::find(r.at("tools").begin(), r.at("tools").end(), tool), r.at("tools").end()) << tool;
  }
  EXPECT_FALSE(r.at("status").at("isError"));
  EXPECT_EQ(r.at("status").at("structured").at("gpus").size(), 1u);
  EXPECT_TRUE(has(r.at("modes").at("text"), "\"pair\""));

  // A model that loads: answered once it serves, with progress notifications meanwhile.
  const json& req = r.at("request");
  EXPECT_FALSE(req.at("isError")) << req.at("text");
  EXPECT_TRUE(has(req.at("text"), "chat is ready: call http://127.0.0.1:")) << req.at("text");
  EXPECT_EQ(req.at("structured").at("service"), "chat");
  ASSERT_FALSE(r.at("progress").empty()) << "no progress notification while chat loaded";
  EXPECT_TRUE(has(r.at("progress").back().at("message"), "chat: ")) << r.at("progress").dump();

  // A mode switch answers with what it did.
  const json& sw = r.at("switch");
  EXPECT_FALSE(sw.at("isError")) << sw.at("text");
  EXPECT_EQ(sw.at("structured").at("started"), json::array({"embed"}));
  EXPECT_TRUE(has(sw.at("text"), "mode pair: ok; started: [\"embed\"]")) << sw.at("text");

  for (const char* step : {"sleep", "wake", "stop", "start"})
    EXPECT_FALSE(r.at(step).at("isError")) << r.at(step).dump();
  EXPECT_TRUE(has(r.at("sleep").at("text"), "sleep chat: ok"));
  EXPECT_TRUE(has(r.at("plan").at("text"), "\"service\": \"big\"")) << r.at("plan").at("text");
  EXPECT_TRUE(has(r.at("logs").at("text"), "gpumod-test-engine")) << r.at("logs").at("text");
  EXPECT_TRUE(has(r.at("events").at("text"), "service.ready")) << r.at("events").at("text");
  EXPECT_FALSE(r.at("reload").at("isError")) << r.at("reload").at("text");

  // Errors come back as tool errors with the daemon's own message.
  EXPECT_TRUE(r.at("bad_mode").at("isError"));
  EXPECT_TRUE(has(r.at("bad_mode").at("text"), "unknown mode 'no-such-mode'")) << r.at("bad_mode").at("text");
  EXPECT_TRUE(r.at("missing_arg").at("isError"));
  EXPECT_TRUE(has(r.at("missing_arg").at("text"), "missing argument 'id'")) << r.at("missing_arg").at("text");
  EXPECT_TRUE(has(r.at("unknown_tool"), "unknown tool 'no_such_tool'")) << r.at("unknown_tool");

  EXPECT_EQ(r.at("resources"), json::array({"gpumod://modes", "gpumod://services", "gpumod://status"}));
  EXPECT_EQ(r.at("status_resource").at("mode"), "pair");
}

}  // namespace
}  // namespace gpumod::e2e
