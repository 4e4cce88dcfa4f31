// `gpumod serve` as a Type=notify unit under a real (private) `systemd --user` manager: it must
// reach active (running) only once it answers, take a reload through ExecReload (SIGHUP), and
// stop cleanly.
#include <gtest/gtest.h>

#include <sstream>

#include "tests/e2e/daemon_fixture.hpp"
#include "tests/support/systemd_user_manager.hpp"

namespace gpumod::e2e {
namespace {

std::string unit_property(const gpumod::testing::SystemdUserManager& m, const std::string& unit,
                          const std::string& prop) {
  auto r = m.systemctl({"show", "-p", prop, "--value", unit});
  std::string v = r.output;
  while (!v.empty() && (v.back() == '\n' || v.back() == ' ')) v.pop_back();
  return v;
}

TEST(SystemdNotify, ServeReachesActiveRunningAndReloads) {
  gpumod::testing::SystemdUserManager manager;
  if (!manager.ok()) GTEST_SKIP() << "no systemd --user manager here: " << manager.error();
  TempDir dir;
  GeneratedConfig cfg;
  cfg.presets = {engine_preset("alpha", "vllm", free_port(), 1000)};
  write_config(dir.path() / "config", cfg);
  const int port = free_port();
  std::ostringstream unit;
  unit << "[Unit]\nDescription=gpumod under test\n\n[Service]\nType=notify\nNotifyAccess=main\n"
       << "ExecStart=" << kGpumodBin << " serve --config " << (dir.path() / "config").string()
       << " --listen 127.0.0.1:" << port << " --state-dir " << (dir.path() / "state").string()
       << " --stop-services-on-exit\nExecReload=/bin/kill -HUP $MAINPID\nWatchdogSec=10s\n"
       << "KillMode=process\nTimeoutStartSec=60s\n";
  write_file(manager.unit_dir() / "gpumod-e2e.service", unit.str());
  ASSERT_EQ(manager.systemctl({"daemon-reload"}).status, 0);
  auto start = manager.systemctl({"start", "gpumod-e2e.service"});
  ASSERT_EQ(start.status, 0) << start.output << manager.systemctl({"status", "gpumod-e2e.service"}).output;

  // `systemctl start` of a Type=notify unit returns only after READY=1.
  EXPECT_EQ(unit_property(manager, "gpumod-e2e.service", "ActiveState"), "active");
  EXPECT_EQ(unit_property(manager, "gpumod-e2e.service", "SubState"), "running");
  EXPECT_NE(unit_property(manager, "gpumod-e2e.service", "StatusText"), "");
  httplib::Client client("127.0.0.1", port);
  auto health = client.Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);

  auto reload = manager.systemctl({"reload", "gpumod-e2e.service"});
  EXPECT_EQ(reload.status, 0) << reload.output;
  EXPECT_TRUE(
      eventually([&] { return unit_property(manager, "gpumod-e2e.service", "SubState") == "running"; }));
  auto metrics = client.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("gpumod_config_reloads_total{result=\"success\"} 1"), std::string::npos)
      << metrics->body.substr(0, 2000);

  auto stop = manager.systemctl({"stop", "gpumod-e2e.service"});
  EXPECT_EQ(stop.status, 0) << stop.output;
  EXPECT_EQ(unit_property(manager, "gpumod-e2e.service", "ActiveState"), "inactive");
}

}  // namespace
}  // namespace gpumod::e2e
