// The systemd runner against a real, private `systemd --user` manager per test.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "backends/command.hpp"
#include "backends/runner.hpp"
#include "tests/support/eventually.hpp"
#include "tests/support/systemd_user_manager.hpp"
#include "tests/support/temp_dir.hpp"

namespace gpumod::backends {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using gpumod::testing::eventually;
using gpumod::testing::SystemdUserManager;
using gpumod::testing::TempDir;
using ::testing::HasSubstr;

std::string read_file(const fs::path& p) {
  std::ifstream in(p);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

bool process_exists(int pid) {
  std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
  auto close = stat.rfind(')');
  return close != std::string::npos && close + 2 < stat.size() && stat[close + 2] != 'Z';
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

class SystemdRunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    manager = std::make_unique<SystemdUserManager>();
    if (!manager->ok()) GTEST_SKIP() << "no private systemd --user manager here: " << manager->error();
    auto r = make_systemd_runner(dir.path(), true);
    ASSERT_TRUE(r.ok()) << r.error();
    runner = std::move(r.value());
  }
  void TearDown() override {
    runner.reset();
    manager.reset();  // stops every unit it still runs
  }

  LaunchSpec sh(const std::string& id, const std::string& script) {
    LaunchSpec s;
    s.service_id = id;
    s.argv = {"/bin/sh", "-c", script};
    s.log_path = dir.path() / "logs" / (id + ".log");
    return s;
  }
  std::string unit_property(const std::string& unit, const std::string& prop) {
    return trim(manager->systemctl({"show", "-p", prop, "--value", unit}).output);
  }

  TempDir dir{"gpumod-systemd-runner"};
  std::unique_ptr<SystemdUserManager> manager;
  std::unique_ptr<Runner> runner;
};

TEST_F(SystemdRunnerTest, TransientUnitStartsAndStopsWithItsWholeCgroup) {
  EXPECT_STREQ(runner->kind(), "systemd");
  auto spec = sh("svc", "echo \"hello $GREETING\"; pwd; sleep 300 & exec sleep 300");
  spec.env["GREETING"] = "from a unit";
  spec.working_dir = dir.path();
  auto info = runner->start(spec);
  ASSERT_TRUE(info.ok()) << info.error();
  EXPECT_EQ(info->unit, "gpumod-svc.service");
  EXPECT_GT(info->pid, 0);
  EXPECT_TRUE(process_exists(info->pid));
  EXPECT_TRUE(runner->running("svc"));
  EXPECT_EQ(unit_property("gpumod-svc.service", "ActiveState"), "active");
  EXPECT_EQ(unit_property("gpumod-svc.service", "KillMode"), "control-group");
  EXPECT_EQ(unit_property("gpumod-svc.service", "MainPID"), std::to_string(info->pid));

  std::vector<int> pids;
  ASSERT_TRUE(eventually([&] { return (pids = runner->pids("svc")).size() >= 2; }))
      << "the unit's cgroup holds the shell's exec'd sleep and the background sleep";
  EXPECT_THAT(pids, ::testing::Contains(info->pid));
  EXPECT_TRUE(eventually([&] {
    std::string log = read_file(spec.log_path);
    return log.find("hello from a unit") != std::string::npos &&
           log.find(dir.path().string()) != std::string::npos;
  })) << read_file(spec.log_path);
  EXPECT_TRUE(fs::exists(dir.path() / "runners" / "svc.unit.json"));

  ASSERT_TRUE(runner->stop("svc", 5s).ok());
  EXPECT_FALSE(runner->running("svc"));
  for (int pid : pids) EXPECT_FALSE(process_exists(pid)) << "pid " << pid << " survived the stop";
  EXPECT_FALSE(fs::exists(dir.path() / "runners" / "svc.unit.json"));
  EXPECT_FALSE(runner->poll_exit("svc").has_value());
}

TEST_F(SystemdRunnerTest, FailingExecStartIsAnErrorWithResultAndState) {
  LaunchSpec spec;
  spec.service_id = "broken";
  spec.argv = {"/nonexistent/gpumod-no-such-server", "--port", "1"};
  auto r = runner->start(spec);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error(), HasSubstr("unit gpumod-broken.service failed to start"));
  EXPECT_THAT(r.error(), HasSubstr("job result failed"));
  EXPECT_THAT(r.error(), HasSubstr("state failed/failed"));
  EXPECT_THAT(r.error(), HasSubstr("service result exit-code, main process exited with status 203"))
      << "203 is systemd's EXIT_EXEC";
  EXPECT_THAT(r.error(), HasSubstr("journal"));
  EXPECT_FALSE(runner->running("broken"));

  // The failed transient unit was reset: the name can be used again.
  auto ok = runner->start(sh("broken", "exec sleep 300"));
  ASSERT_TRUE(ok.ok()) << ok.error();
  EXPECT_TRUE(runner->stop("broken", 5s).ok());
}

TEST_F(SystemdRunnerTest, CommandNotInPathIsReportedBeforeSystemd) {
  LaunchSpec spec;
  spec.service_id = "nopath";
  spec.argv = {"gpumod-no-such-server-in-path"};
  auto r = runner->start(spec);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error(), HasSubstr("cannot exec 'gpumod-no-such-server-in-path': No such file or directory"));
}

TEST_F(SystemdRunnerTest, CrashIsReportedByPollExitWithStatusAndLog) {
  auto spec = sh("crash", "sleep 0.5; echo 'fatal: model file corrupt'; exit 4");
  auto info = runner->start(spec);
  ASSERT_TRUE(info.ok()) << info.error();
  std::optional<ExitInfo> exit;
  ASSERT_TRUE(eventually([&] { return (exit = runner->poll_exit("crash")).has_value(); }));
  EXPECT_EQ(exit->exit_code, 4);
  EXPECT_EQ(exit->signal, 0);
  EXPECT_THAT(exit->message, HasSubstr("gpumod-crash.service is failed/failed (result exit-code)"));
  EXPECT_THAT(exit->message, HasSubstr("exited with status 4"));
  EXPECT_THAT(exit->message, HasSubstr("fatal: model file corrupt"));
  EXPECT_FALSE(runner->poll_exit("crash").has_value()) << "reported once";
  EXPECT_FALSE(runner->running("crash"));
}

TEST_F(SystemdRunnerTest, SigtermIgnoredLeadsToKillAfterGrace) {
  auto spec = sh("stubborn", "trap '' TERM; echo ready; while :; do sleep 1; done");
  auto info = runner->start(spec);
  ASSERT_TRUE(info.ok()) << info.error();
  ASSERT_TRUE(eventually([&] { return read_file(spec.log_path).find("ready") != std::string::npos; }));
  auto pids = runner->pids("stubborn");
  ASSERT_TRUE(runner->stop("stubborn", 300ms).ok());
  EXPECT_FALSE(runner->running("stubborn"));
  for (int pid : pids) EXPECT_FALSE(process_exists(pid)) << "pid " << pid;
}

TEST_F(SystemdRunnerTest, NamedUnitFileInstalledReloadedAndStarted) {
  // The unit file gpumod renders for a preset, installed where the user manager looks. The
  // service writes the argv and env it received: systemd must have parsed the quoting back
  // to exactly what the preset said.
  const fs::path out = dir.path() / "seen.txt";
  config::Preset p;
  p.id = "quoting";
  p.driver = config::Driver::generic;
  p.port = 9000;
  p.cmd = {"/bin/sh",
           "-c",
           "printf '[%s]' \"$@\" > \"$0\"; printf '{%s}' \"$X\" >> \"$0\"; exec sleep 300",
           out.string(),
           "two words",
           "it's",
           "$HOME",
           "50%",
           "back\\slash",
           "\"dq\""};
  p.env = {{"X", "a b $c 10%"}};
  auto unit_text = render_unit_file(p, 0, 5s);
  ASSERT_TRUE(unit_text.ok()) << unit_text.error();
  std::ofstream(manager->unit_dir() / "gpumod-quoting.service") << unit_text.value();
  ASSERT_TRUE(systemd_daemon_reload(true).ok());

  LaunchSpec spec;
  spec.service_id = "quoting";
  spec.unit = "gpumod-quoting";  // ".service" is implied
  auto info = runner->start(spec);
  ASSERT_TRUE(info.ok()) << info.error() << "\nunit file:\n" << unit_text.value();
  EXPECT_EQ(info->unit, "gpumod-quoting.service");
  EXPECT_TRUE(runner->running("quoting"));
  ASSERT_TRUE(eventually([&] { return read_file(out).find('{') != std::string::npos; }));
  EXPECT_TRUE(eventually([&] {
    return read_file(out) == "[two words][it's][$HOME][50%][back\\slash][\"dq\"]{a b $c 10%}";
  })) << read_file(out)
      << "\nunit file:\n"
      << unit_text.value();
  EXPECT_EQ(unit_property("gpumod-quoting.service", "Restart"), "no");
  EXPECT_EQ(unit_property("gpumod-quoting.service", "Environment").find("CUDA_VISIBLE_DEVICES=0") !=
                std::string::npos,
            true);

  ASSERT_TRUE(runner->stop("quoting", 5s).ok());
  EXPECT_FALSE(runner->running("quoting"));
  EXPECT_EQ(unit_property("gpumod-quoting.service", "ActiveState"), "inactive");
}

TEST_F(SystemdRunnerTest, NewRunnerAdoptsRunningUnitAndForgetsDeadOnes) {
  int pid = 0;
  {
    auto first = make_systemd_runner(dir.path(), true);
    ASSERT_TRUE(first.ok()) << first.error();
    auto a = first.value()->start(sh("alive", "exec sleep 300"));
    ASSERT_TRUE(a.ok()) << a.error();
    pid = a->pid;
    auto b = first.value()->start(sh("doomed", "exec sleep 300"));
    ASSERT_TRUE(b.ok()) << b.error();
    // "doomed" ends while no daemon watches it.
    manager->systemctl({"stop", "gpumod-doomed.service"});
  }
  auto second = make_systemd_runner(dir.path(), true);
  ASSERT_TRUE(second.ok()) << second.error();
  auto adopted = second.value()->adopt();
  ASSERT_EQ(adopted.size(), 1u);
  EXPECT_EQ(adopted[0].service_id, "alive");
  EXPECT_EQ(adopted[0].unit, "gpumod-alive.service");
  EXPECT_EQ(adopted[0].pid, pid);
  EXPECT_TRUE(second.value()->running("alive"));
  EXPECT_FALSE(second.value()->running("doomed"));
  EXPECT_FALSE(fs::exists(dir.path() / "runners" / "doomed.unit.json"));

  EXPECT_FALSE(second.value()->start(sh("alive", "exec sleep 300")).ok()) << "not started twice";
  EXPECT_EQ(unit_property("gpumod-alive.service", "MainPID"), std::to_string(pid));

  ASSERT_TRUE(second.value()->stop("alive", 5s).ok());
  EXPECT_FALSE(process_exists(pid));
  EXPECT_FALSE(fs::exists(dir.path() / "runners" / "alive.unit.json"));
}

TEST(SystemdUserManagerFixture, ExposesEnvironmentForSystemctl) {
  SystemdUserManager m;
  if (!m.ok()) GTEST_SKIP() << m.error();
  auto env = m.env();
  EXPECT_EQ(env.at("XDG_RUNTIME_DIR"), m.runtime_dir().string());
  EXPECT_EQ(fs::status(m.runtime_dir()).permissions() & fs::perms::all, fs::perms::owner_all);
  auto r = m.systemctl({"show", "-p", "Version", "--value"});
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_FALSE(trim(r.output).empty());
  EXPECT_TRUE(process_exists(m.manager_pid()));
}

}  // namespace
}  // namespace gpumod::backends
