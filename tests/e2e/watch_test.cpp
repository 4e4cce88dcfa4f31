// `watch: true` on a real daemon: an edited preset is picked up without a signal and without
// restarting what runs; a broken file is kept out (the running config stays, and /status, the
// event stream and the reload metric say why) until it is fixed.
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "tests/e2e/daemon_fixture.hpp"
#include "tests/support/stream_client.hpp"

namespace gpumod::e2e {
namespace {

using gpumod::testing::Frame;
using gpumod::testing::StreamClient;

std::string read(const fs::path& p) {
  std::ifstream in(p);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

json service_of(const Daemon& d, const std::string& id) {
  return d.get("/services/" + id).obj();
}

TEST(WatchE2e, EditsAreReloadedAndABrokenFileIsKeptOut) {
  TempDir dir;
  GeneratedConfig cfg;
  cfg.presets = {engine_preset("chat", "vllm", free_port(), 2000, 100)};
  const fs::path config = dir.path() / "config";
  write_config(config, cfg);
  write_file(config / "gpumod.yaml", read(config / "gpumod.yaml") + "watch: true\n");
  Daemon d(config, dir.path() / "state");
  ASSERT_TRUE(d.started());
  ASSERT_EQ(d.post("/request", R"({"model":"chat"})").status, 200);
  const int pid = service_of(d, "chat").value("pid", 0);
  ASSERT_GT(pid, 0);
  StreamClient stream(d.port(), "/events");
  ASSERT_EQ(stream.head().status, 200);

  // A priority change: reloaded, and the running service is not restarted for it.
  const fs::path preset = config / "presets" / "chat.yaml";
  std::string text = read(preset);
  const auto at = text.find("priority: 50");
  ASSERT_NE(at, std::string::npos) << text;
  text.replace(at, 12, "priority: 77");
  write_file(preset, text);
  EXPECT_TRUE(eventually([&] { return service_of(d, "chat").value("priority", 0) == 77; })) << d.log();
  EXPECT_EQ(service_of(d, "chat").value("pid", 0), pid);
  EXPECT_EQ(service_of(d, "chat").value("state", ""), "ready");

  // A broken file: refused, the running config kept, the reason shown.
  write_file(config / "presets" / "broken.yaml", "id: [unclosed\n");
  EXPECT_TRUE(eventually([&] { return d.get("/status").obj().value("reload_error", json()).is_string(); }))
      << d.log();
  const std::string why = d.get("/status").obj().value("reload_error", "");
  EXPECT_NE(why.find("broken.yaml"), std::string::npos) << why;
  EXPECT_NE(why.find("the running config is kept"), std::string::npos) << why;
  EXPECT_EQ(service_of(d, "chat").value("pid", 0), pid);
  EXPECT_NE(d.get("/metrics").body.find("gpumod_config_reloads_total{result=\"failure\"} 1"),
            std::string::npos);
  std::vector<Frame> frames;
  bool refused_event = false;
  while (!refused_event && stream.frames(frames.size() + 1, frames)) {
    refused_event = frames.back().event == "reload" && frames.back().data.value("ok", true) == false;
  }
  EXPECT_TRUE(refused_event);

  // An editor temporary beside it is ignored; removing the broken file clears the error.
  write_file(config / "presets" / "chat.yaml.swp", "garbage");
  fs::remove(config / "presets" / "broken.yaml");
  EXPECT_TRUE(eventually([&] { return d.get("/status").obj().value("reload_error", json("x")).is_null(); }))
      << d.log();
  EXPECT_EQ(service_of(d, "chat").value("pid", 0), pid);
}

}  // namespace
}  // namespace gpumod::e2e
